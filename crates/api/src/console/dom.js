// Building pages from data, safely: every string becomes a text node or an attribute value
// set through the DOM, never markup, so a function's name, log or result shows as text.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "disabled") {
      el[key] = value;
    } else if (key === "href" && !safeHref(value)) {
      // Links are the console's own (#/...) or same-origin paths; anything else is dropped.
      continue;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function safeHref(value) {
  const s = String(value);
  return s.startsWith("#") || (s.startsWith("/") && !s.startsWith("//"));
}

/** An HTML element: h("a", {href: "#/x", class: "c"}, "text", child, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link to a console route; `parts` are encoded as path segments. */
export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

/** `route(...)` plus a query string of the defined, non-empty values of `params`. */
export function routeWith(params, ...parts) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const qs = q.toString();
  return route(...parts) + (qs ? "?" + qs : "");
}

// ---- formatting ----

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtAgo(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return "in " + fmtSpan(-s * 1000);
  if (s < 5) return "just now";
  return fmtSpan(s * 1000) + " ago";
}

export function fmtSpan(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtNum(n) {
  if (n === null || n === undefined) return "—";
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  return n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

/** A state badge (SUCCEEDED, FAILED, ...). */
export function stateBadge(state) {
  const kind =
    {
      SUCCEEDED: "ok",
      FAILED: "bad",
      EXPIRED: "bad",
      RUNNING: "run",
      PLACED: "run",
      QUEUED: "wait",
      RETRY_WAIT: "wait",
    }[state] || "neutral";
  return h("span", { class: ["badge", "badge-" + kind] }, state || "—");
}

/** A definition list from [label, value] pairs (values: text or nodes). */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", null, k), h("dd", null, v === null || v === undefined || v === "" ? "—" : v)])
  );
}

/** An empty state: a title, an explanation and optional actions. */
export function empty(title, text, ...actions) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), text ? h("p", null, text) : null, actions);
}

/** A block of preformatted text (logs, results). */
export function pre(text, cls) {
  return h("pre", { class: ["code", cls], tabindex: "0" }, text === null || text === undefined || text === "" ? "" : String(text));
}

/** A short copyable id in monospace. */
export function mono(text) {
  return h("code", { class: "mono" }, text);
}
