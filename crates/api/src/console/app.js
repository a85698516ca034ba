// The console's shell: sign-in, hash routing (#/functions/NAME, #/invocations/ID, ...), the
// header, notices and keyboard shortcuts. Pages live in their own modules.

import { ApiError, authMode, probe, signIn, signOut } from "./api.js";
import { fill, h } from "./dom.js";
import { errorView, openDialog } from "./ui.js";
import { functionsPage } from "./functions.js";
import { functionPage } from "./function.js";
import { invocationPage } from "./invocations.js";
import { queuePage, queuesPage, schedulesPage, workersPage } from "./fleet.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const signOutButton = document.getElementById("signout");

// Each route: a pattern of path segments (":x" captures) and a page.
const ROUTES = [
  [["functions"], functionsPage],
  [["functions", ":name"], functionPage],
  [["functions", ":name", ":tab"], functionPage],
  [["invocations", ":id"], invocationPage],
  [["workers"], workersPage],
  [["queues"], queuesPage],
  [["queues", ":name"], queuePage],
  [["schedules"], schedulesPage],
];

let state = "starting"; // "starting", "signin", "ready"
let wanted = null; // the route asked for before signing in
let generation = 0; // the render in progress; older ones drop their output
let leaving = []; // what the current page asked to run when it is left (timers)
let lastPath = null;

/** The current hash as {path: [...segments], query: URLSearchParams, raw}. */
function current() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const segments = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { path: segments, query: new URLSearchParams(qs || ""), raw };
}

function match(path) {
  for (const [pattern, page] of ROUTES) {
    if (pattern.length !== path.length) continue;
    const params = {};
    if (pattern.every((p, i) => (p.startsWith(":") ? ((params[p.slice(1)] = path[i]), true) : p === path[i]))) {
      return { page, params };
    }
  }
  return null;
}

function markNav(path) {
  for (const a of document.querySelectorAll("header nav a")) {
    const section = a.getAttribute("href").replace("#/", "");
    const on = path[0] === section || (section === "functions" && path[0] === "invocations");
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function runLeaving() {
  for (const f of leaving) {
    try {
      f();
    } catch {
      // A page's cleanup must not stop navigation.
    }
  }
  leaving = [];
}

async function render() {
  runLeaving();
  const mine = ++generation;
  if (state === "signin") return showSignIn();
  if (state !== "ready") return;
  const { path, query } = current();
  if (path.length === 0) {
    location.replace("#/functions");
    return;
  }
  markNav(path);
  const found = match(path);
  const pathKey = path.join("/");
  const moved = pathKey !== lastPath;
  lastPath = pathKey;
  if (!found) {
    document.title = "Not found · gust";
    fill(main, h("h1", null, "Not found"), h("p", null, "There is no such page. ", h("a", { href: "#/functions" }, "Go to functions")));
    return;
  }
  const ctx = {
    params: found.params,
    query,
    // Whether this render is still the one on screen (false once the user navigated away).
    live: () => mine === generation,
    onLeave: (f) => leaving.push(f),
    title: (t) => (document.title = `${t} · gust`),
  };
  if (moved) fill(main, h("p", { class: "loading" }, "Loading…"));
  try {
    const view = await found.page(ctx);
    if (!ctx.live()) return;
    // A re-render of the same page (a filter typed, a refresh) keeps the focus where it was.
    const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : "";
    fill(main, view);
    if (!moved && focused) {
      const again = document.getElementById(focused);
      if (again) {
        again.focus({ preventScroll: true });
        if (again instanceof HTMLInputElement && again.type === "search") again.setSelectionRange(again.value.length, again.value.length);
      }
    }
    if (moved) {
      const heading = main.querySelector("h1");
      if (heading) {
        heading.setAttribute("tabindex", "-1");
        heading.focus({ preventScroll: true });
      }
      window.scrollTo(0, 0);
    }
  } catch (e) {
    if (!ctx.live()) return;
    if (e instanceof ApiError && e.status === 401) return; // back to sign-in already
    fill(main, errorView(e));
  }
}

function showSignIn(message) {
  document.title = "Sign in · gust";
  markNav([]);
  who.textContent = "";
  signOutButton.hidden = true;
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const error = h("p", { class: "form-error", role: "alert", id: "signin-error" }, message || "");
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  // No name on the input: even a form sent without this script carries no token.
  const form = h(
    "form",
    {
      class: "signin card",
      method: "post",
      action: "/console/",
      onsubmit: async (ev) => {
        ev.preventDefault();
        error.textContent = "";
        button.disabled = true;
        try {
          await signIn(input.value.trim());
          input.value = "";
          state = "ready";
          updateWho();
          const target = wanted && !wanted.startsWith("#/signin") ? wanted : "#/functions";
          wanted = null;
          if (location.hash === target) render();
          else location.hash = target;
        } catch (e) {
          error.textContent = e.message || String(e);
          input.select();
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", null, "Sign in to gust"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { class: "muted", id: "token-help" },
      "The server's --token, or a named key's token (gust tokens create). It is kept in this tab only and cleared when you sign out or close it."
    ),
    error,
    button
  );
  fill(main, h("div", { class: "signin-wrap" }, form));
  input.focus();
}

function updateWho() {
  const mode = authMode();
  if (mode === "open") {
    who.textContent = "No token required (loopback)";
    signOutButton.hidden = true;
  } else if (mode === "token") {
    who.textContent = "Signed in";
    signOutButton.hidden = false;
  } else {
    who.textContent = "";
    signOutButton.hidden = true;
  }
}

function toSignIn(message) {
  if (state === "signin") return;
  runLeaving();
  wanted = location.hash && !location.hash.startsWith("#/signin") ? location.hash : wanted;
  state = "signin";
  updateWho();
  showSignIn(message);
}

window.addEventListener("gust:unauthorized", () =>
  toSignIn("The server refused the token (it may have been revoked or the server restarted with another): sign in again.")
);

signOutButton.addEventListener("click", () => {
  signOut();
  wanted = null;
  toSignIn("Signed out.");
});

window.addEventListener("gust:refresh", () => {
  if (state === "ready") render();
});

window.addEventListener("hashchange", () => {
  if (state === "ready") render();
  else if (state === "signin") wanted = location.hash;
});

// Keyboard: "/" focuses the page's search, "?" lists the shortcuts, "g f|w|q|s" goes to a
// section. Esc closes dialogs (the browser does it for <dialog>).
let pendingG = false;
document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || t.isContentEditable;
  if (typing) return;
  if (document.querySelector("dialog[open]")) return;
  if (ev.key === "/") {
    const search = main.querySelector("[data-search]");
    if (search) {
      ev.preventDefault();
      search.focus();
      search.select();
    }
  } else if (ev.key === "?") {
    ev.preventDefault();
    showShortcuts();
  } else if (pendingG) {
    pendingG = false;
    const to = { f: "#/functions", w: "#/workers", q: "#/queues", s: "#/schedules" }[ev.key];
    if (to) {
      ev.preventDefault();
      location.hash = to;
    }
  } else if (ev.key === "g") {
    pendingG = true;
    setTimeout(() => (pendingG = false), 1200);
  }
});

function showShortcuts() {
  const rows = [
    ["/", "Focus the search or filter"],
    ["?", "Show these shortcuts"],
    ["g f", "Go to functions"],
    ["g w", "Go to workers"],
    ["g q", "Go to queues"],
    ["g s", "Go to schedules"],
    ["Ctrl+Enter", "Invoke (in the payload box)"],
    ["Esc", "Close a dialog"],
  ];
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": "keys-title" },
    h("h2", { id: "keys-title" }, "Keyboard shortcuts"),
    h("table", { class: "table compact" }, h("tbody", null, rows.map(([k, v]) => h("tr", null, h("td", null, h("kbd", null, k)), h("td", null, v))))),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Close"))
  );
  openDialog(dialog);
}

document.getElementById("skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  const heading = main.querySelector("h1") || main;
  heading.setAttribute("tabindex", "-1");
  heading.focus();
});

async function start() {
  try {
    const how = await probe();
    if (how === "signin") {
      toSignIn();
      return;
    }
    state = "ready";
    updateWho();
    render();
  } catch (e) {
    fill(main, errorView(e));
  }
}

start();
