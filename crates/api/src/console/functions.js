// The functions list: server-side pages (limit/after); a name filter scans pages on the
// server's order until it has a screenful of matches, so it stays quick at thousands.

import { api } from "./api.js";
import { empty, fmtAgo, fmtNum, h, route, routeWith } from "./dom.js";

const PAGE = 50;
/** Functions read per request while filtering (the API's largest page). */
const SCAN_PAGE = 1000;
/** A filter stops after this many matches and offers to go on. */
const SCAN_MATCHES = 100;

function runtimeLabel(r) {
  return typeof r === "string" ? r : JSON.stringify(r);
}

function table(functions) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table", id: "functions-table" },
      h(
        "thead",
        null,
        h("tr", null, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Runtime"), h("th", { scope: "col", class: "num" }, "Memory"), h("th", { scope: "col", class: "num" }, "Timeout"), h("th", { scope: "col" }, "Description"), h("th", { scope: "col" }, "Updated"))
      ),
      h(
        "tbody",
        null,
        functions.map((f) =>
          h(
            "tr",
            { dataset: { name: f.name } },
            h("td", null, h("a", { href: route("functions", f.name), class: "strong" }, f.name)),
            h("td", null, h("span", { class: "tag" }, runtimeLabel(f.runtime))),
            h("td", { class: "num" }, `${fmtNum(f.memory_mb)} MB`),
            h("td", { class: "num" }, `${fmtNum(f.timeout_ms / 1000)} s`),
            h("td", { class: "clip" }, f.description || ""),
            h("td", { title: new Date(f.updated_at).toISOString() }, fmtAgo(f.updated_at))
          )
        )
      )
    )
  );
}

export async function functionsPage(ctx) {
  ctx.title("Functions");
  const q = (ctx.query.get("q") || "").trim();
  const after = ctx.query.get("after") || "";

  const search = h("input", {
    type: "search",
    id: "function-filter",
    placeholder: "Filter by name  ( / )",
    value: q,
    "aria-label": "Filter functions by name",
    "data-search": "",
    autocomplete: "off",
    spellcheck: "false",
  });
  const form = h(
    "form",
    {
      class: "toolbar",
      role: "search",
      onsubmit: (ev) => {
        ev.preventDefault();
        location.hash = routeWith({ q: search.value.trim() }, "functions");
      },
    },
    search,
    h("button", { type: "submit" }, "Filter"),
    q ? h("a", { href: route("functions"), class: "button subtle" }, "Clear") : null
  );
  // Typing filters after a short pause (the URL follows, so Back works).
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const v = search.value.trim();
      if (v !== q) location.replace(routeWith({ q: v }, "functions"));
    }, 350);
  });
  ctx.onLeave(() => clearTimeout(timer));

  const header = h("div", { class: "page-head" }, h("h1", null, "Functions"));
  let body;
  if (!q) {
    const page = await api(`/v1/functions?limit=${PAGE}${after ? "&after=" + encodeURIComponent(after) : ""}`);
    const list = page.functions || [];
    if (list.length === 0 && !after) {
      body = empty(
        "No functions yet",
        "Deploy one with the CLI, e.g. gust deploy hello --code hello.wasm, or through the API (POST /v1/functions); it shows up here."
      );
    } else {
      body = [
        table(list),
        h(
          "nav",
          { class: "pager", "aria-label": "Pages" },
          after ? h("a", { href: route("functions"), class: "button subtle" }, "← First page") : null,
          h("span", { class: "muted" }, after ? `After “${after}”` : `${list.length} shown`),
          page.next ? h("a", { href: routeWith({ after: page.next }, "functions"), class: "button", rel: "next" }, "Next page →") : null
        ),
      ];
    }
  } else {
    const needle = q.toLowerCase();
    const matches = [];
    let cursor = after || null;
    let scanned = 0;
    let more = null;
    for (;;) {
      const page = await api(`/v1/functions?limit=${SCAN_PAGE}${cursor ? "&after=" + encodeURIComponent(cursor) : ""}`);
      if (!ctx.live()) return h("div");
      const list = page.functions || [];
      scanned += list.length;
      for (const f of list) {
        if (f.name.toLowerCase().includes(needle)) {
          matches.push(f);
          if (matches.length === SCAN_MATCHES) {
            more = f.name;
            break;
          }
        }
      }
      if (more || !page.next) break;
      cursor = page.next;
    }
    body = matches.length
      ? [
          table(matches),
          h(
            "nav",
            { class: "pager", "aria-label": "Pages" },
            after ? h("a", { href: routeWith({ q }, "functions"), class: "button subtle" }, "← First matches") : null,
            h("span", { class: "muted" }, `${matches.length} matching “${q}” (${fmtNum(scanned)} names read)`),
            more ? h("a", { href: routeWith({ q, after: more }, "functions"), class: "button", rel: "next" }, "More matches →") : null
          ),
        ]
      : empty(`No function name contains “${q}”`, `${fmtNum(scanned)} functions were searched.`, h("a", { href: route("functions"), class: "button" }, "Show all functions"));
  }
  return h("section", null, header, form, body);
}
