// Workers, queues and schedules.

import { api, apiMaybe } from "./api.js";
import { empty, facts, fmtAgo, fmtNum, fmtTime, h, mono, route, routeWith } from "./dom.js";
import { refresh } from "./ui.js";

function table(id, headings, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table", id },
      h("thead", null, h("tr", null, headings.map((t) => h("th", { scope: "col", class: t.endsWith(" ") ? "num" : null }, t.trim())))),
      h("tbody", null, rows)
    )
  );
}

function meter(used, of) {
  const m = h("meter", { min: "0", max: String(Math.max(1, of)), value: String(used), "aria-label": `${used} of ${of}` });
  return h("span", { class: "load" }, m, ` ${fmtNum(used)} / ${fmtNum(of)}`);
}

export async function workersPage(ctx) {
  ctx.title("Workers");
  const { workers = [] } = await api("/v1/workers");
  const timer = setInterval(() => {
    if (ctx.live() && !document.hidden) refresh();
  }, 10000);
  ctx.onLeave(() => clearInterval(timer));
  const live = workers.filter((w) => w.live).length;
  const head = h("div", { class: "page-head" }, h("h1", null, "Workers"), h("p", { class: "subtitle" }, workers.length ? `${live} live of ${workers.length} known` : ""));
  if (!workers.length) {
    return h(
      "section",
      null,
      head,
      empty(
        "No remote workers",
        "This server runs work on its own local worker unless started with --no-local-worker. Remote workers join with gust worker --server URL --worker-token T and are listed here."
      )
    );
  }
  const rows = workers.map((w) =>
    h(
      "tr",
      { dataset: { worker: w.id } },
      h("td", null, mono(w.id)),
      h("td", null, h("span", { class: ["badge", w.live ? "badge-ok" : "badge-bad"] }, w.live ? "live" : "lost")),
      h("td", null, (w.runtimes || []).join(", ")),
      h("td", null, meter(w.running, w.capacity)),
      h("td", { class: "num" }, fmtNum(w.warm_environments)),
      h("td", { class: "num" }, fmtNum(w.snapshot_version)),
      h("td", { title: fmtTime(w.last_heartbeat) }, fmtAgo(w.last_heartbeat))
    )
  );
  return h("section", null, head, table("workers-table", ["Worker", "Liveness", "Runtimes", "Running / capacity", "Warm environments ", "Snapshot ", "Last heartbeat"], rows));
}

export async function queuesPage(ctx) {
  ctx.title("Queues");
  const got = await apiMaybe("/v1/queues");
  const head = h("div", { class: "page-head" }, h("h1", null, "Queues"));
  if (!got) return h("section", null, head, empty("Queues are not available on this server", "It does not answer GET /v1/queues."));
  const queues = got.queues || [];
  if (!queues.length) {
    return h("section", null, head, empty("No queues", "Create one with POST /v1/queues or the SQS API (CreateQueue)."));
  }
  // Message counts for the first screenful, read in parallel.
  const shown = queues.slice(0, 100);
  const details = await Promise.all(shown.map((q) => apiMaybe(`/v1/queues/${encodeURIComponent(q.name)}`).catch(() => null)));
  const attr = (d, k) => (d && d.attributes && d.attributes[k] !== undefined ? fmtNum(Number(d.attributes[k])) : "—");
  const rows = shown.map((q, i) =>
    h(
      "tr",
      null,
      h("td", null, h("a", { href: route("queues", q.name), class: "strong" }, q.name)),
      h("td", { class: "num" }, attr(details[i], "ApproximateNumberOfMessages")),
      h("td", { class: "num" }, attr(details[i], "ApproximateNumberOfMessagesNotVisible")),
      h("td", { class: "num" }, attr(details[i], "ApproximateNumberOfMessagesDelayed")),
      h("td", null, mono(q.url))
    )
  );
  return h(
    "section",
    null,
    head,
    table("queues-table", ["Queue", "Visible ", "In flight ", "Delayed ", "URL"], rows),
    queues.length > shown.length ? h("p", { class: "muted" }, `${queues.length - shown.length} more queues are not shown.`) : null
  );
}

export async function queuePage(ctx) {
  const name = ctx.params.name;
  ctx.title(`Queue ${name}`);
  const q = await api(`/v1/queues/${encodeURIComponent(name)}`);
  const attrs = Object.entries(q.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  return h(
    "section",
    null,
    h("div", { class: "page-head" }, h("p", { class: "crumbs" }, h("a", { href: route("queues") }, "Queues"), " / "), h("h1", null, q.name), h("p", { class: "subtitle" }, mono(q.url))),
    h("section", { class: "card" }, h("h2", null, "Attributes"), facts(attrs.map(([k, v]) => [k, /Timestamp$/.test(k) ? fmtTime(Number(v) * 1000) : String(v)])))
  );
}

export async function schedulesPage(ctx) {
  ctx.title("Schedules");
  const after = ctx.query.get("after") || "";
  const got = await apiMaybe(`/v1/schedules?limit=100${after ? "&after=" + encodeURIComponent(after) : ""}`);
  const head = h("div", { class: "page-head" }, h("h1", null, "Schedules"));
  if (!got) return h("section", null, head, empty("Schedules are not available on this server", "It does not answer GET /v1/schedules."));
  const list = got.schedules || [];
  if (!list.length && !after) {
    return h("section", null, head, empty("No schedules", "Create one with PUT /v1/schedules/NAME (a cron, rate or at expression and a function or queue target)."));
  }
  const rows = list.map((sc) =>
    h(
      "tr",
      null,
      h("td", null, h("span", { class: "muted" }, sc.group + " / "), h("strong", null, sc.name)),
      h("td", null, mono(sc.expression)),
      h("td", null, sc.timezone || "UTC"),
      h(
        "td",
        null,
        sc.function
          ? h("a", { href: route("functions", sc.function.split(":")[0]) }, sc.function)
          : sc.queue
            ? h("a", { href: route("queues", sc.queue) }, "queue " + sc.queue)
            : mono(sc.target_arn || "—")
      ),
      h("td", null, h("span", { class: ["badge", sc.enabled ? "badge-ok" : "badge-neutral"] }, sc.enabled ? "enabled" : "disabled")),
      h("td", { title: fmtTime(sc.next_fire_at) }, sc.next_fire_at ? fmtAgo(sc.next_fire_at) : "—")
    )
  );
  return h(
    "section",
    null,
    head,
    table("schedules-table", ["Schedule", "Expression", "Time zone", "Target", "State", "Next firing"], rows),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      after ? h("a", { href: route("schedules"), class: "button subtle" }, "← First page") : null,
      got.next ? h("a", { href: routeWith({ after: got.next }, "schedules"), class: "button", rel: "next" }, "Next page →") : null
    )
  );
}
