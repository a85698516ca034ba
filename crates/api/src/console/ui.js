// Shared pieces of the console's pages: error views, notices and dialogs.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

export function errorView(e) {
  const notFound = e instanceof ApiError && e.status === 404;
  return h(
    "div",
    { class: "empty" },
    h("h1", { class: "empty-title" }, notFound ? "Not found" : "Something went wrong"),
    h("p", null, e.message || String(e)),
    e.code ? h("p", { class: "muted" }, "Error code: ", h("code", null, e.code)) : null,
    h("p", null, h("a", { href: "#/functions" }, "Back to functions"))
  );
}

/** A short notice in the corner (role=status: screen readers announce it). */
export function notify(text, kind = "ok") {
  const box = document.getElementById("toast");
  const item = h("div", { class: ["toast", "toast-" + kind] }, text);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** Shows a modal <dialog> and removes it once closed (Esc closes it). */
export function openDialog(dialog) {
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
  return dialog;
}


/** Renders the current page again (after a change it made). */
export function refresh() {
  window.dispatchEvent(new Event("gust:refresh"));
}

/** A message for a failed change: a revision conflict says what to do. */
export function changeError(e) {
  if (e instanceof ApiError && e.status === 412) {
    return "It was changed by someone else since this page was loaded: reload the page and try again.";
  }
  return e.message || String(e);
}
