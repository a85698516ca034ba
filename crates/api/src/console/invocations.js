// Invocations: a function's list (filtered by state and time on the server, paged by id
// cursor) and one invocation's page with its lifecycle timeline and log.

import { api, apiMaybe, ApiError, fpath } from "./api.js";
import { empty, facts, fmtAgo, fmtMs, fmtSpan, fmtTime, h, mono, pre, route, routeWith, stateBadge } from "./dom.js";
import { refresh } from "./ui.js";

const STATES = ["QUEUED", "PLACED", "RUNNING", "RETRY_WAIT", "SUCCEEDED", "FAILED", "EXPIRED"];
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "EXPIRED"]);
const PAGE = 50;

/** Waits for a record written behind its answer: 404 until it lands. */
export async function waitForRecord(id, timeoutMs) {
  const until = Date.now() + timeoutMs;
  let delay = 100;
  for (;;) {
    const rec = await apiMaybe(`/v1/invocations/${encodeURIComponent(id)}`);
    if (rec) return rec;
    if (Date.now() > until) return null;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 1.5, 1000);
  }
}

/** `YYYY-MM-DDTHH:MM` in local time, as datetime-local inputs take it. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function durationOf(inv) {
  if (inv.report && inv.report.duration_us !== undefined) return fmtMs(inv.report.duration_us / 1000);
  return "—";
}

export async function invocationsTab(ctx, f) {
  const state = STATES.includes(ctx.query.get("state")) ? ctx.query.get("state") : "";
  const receivedBefore = /^\d+$/.test(ctx.query.get("received_before") || "") ? ctx.query.get("received_before") : "";
  const before = ctx.query.get("before") || "";
  const qs = new URLSearchParams({ limit: String(PAGE) });
  if (state) qs.set("state", state);
  if (receivedBefore) qs.set("received_before", receivedBefore);
  if (before) qs.set("before", before);
  const page = await api(`${fpath(f.name, "invocations")}?${qs}`);
  const list = page.invocations || [];

  const stateSelect = h(
    "select",
    { id: "filter-state" },
    h("option", { value: "" }, "Any state"),
    STATES.map((s) => h("option", { value: s, selected: s === state }, s))
  );
  const timeInput = h("input", { type: "datetime-local", id: "filter-before", step: "1", value: receivedBefore ? localInput(Number(receivedBefore)) : "" });
  const apply = (ev) => {
    ev.preventDefault();
    const t = timeInput.value ? new Date(timeInput.value).getTime() : "";
    location.hash = routeWith({ state: stateSelect.value, received_before: Number.isFinite(t) ? t : "" }, "functions", f.name, "invocations");
  };
  // A state picked applies at once; a time applies with the button (typing a date is several keys).
  stateSelect.addEventListener("change", apply);
  const filters = h(
    "form",
    { class: "toolbar filters", onsubmit: apply, "aria-label": "Filter invocations" },
    h("label", { for: "filter-state" }, "State"),
    stateSelect,
    h("label", { for: "filter-before" }, "Received before"),
    timeInput,
    h("button", { type: "submit", id: "apply-filters" }, "Apply"),
    state || receivedBefore ? h("a", { href: route("functions", f.name, "invocations"), class: "button subtle" }, "Clear") : null,
    h("button", { type: "button", class: "subtle", onclick: () => refresh() }, "Refresh")
  );
  let body;
  if (list.length === 0) {
    body = before
      ? empty("No older invocations", null, h("a", { href: routeWith({ state, received_before: receivedBefore }, "functions", f.name, "invocations"), class: "button" }, "Back to the newest"))
      : state || receivedBefore
        ? empty("No invocation matches these filters", "Records of ended invocations are kept for a while (see --retain-invocations).")
        : empty("No invocations yet", "Invoke the function and its invocations are listed here, newest first.", h("a", { href: route("functions", f.name, "invoke"), class: "button" }, "Invoke it"));
  } else {
    body = [
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "table", id: "invocations-table" },
          h("thead", null, h("tr", null, ["Invocation", "State", "Mode", "Version", "Attempts", "Received", "Duration", "Error"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            null,
            list.map((inv) =>
              h(
                "tr",
                { dataset: { state: inv.state } },
                h("td", null, h("a", { href: route("invocations", inv.invocation_id), class: "mono" }, inv.invocation_id)),
                h("td", null, stateBadge(inv.state)),
                h("td", null, String(inv.mode)),
                h("td", null, inv.executed_version || "—"),
                h("td", { class: "num" }, String(inv.attempts)),
                h("td", { title: fmtTime(inv.received_at) }, fmtAgo(inv.received_at)),
                h("td", { class: "num" }, durationOf(inv)),
                h("td", { class: "clip" }, inv.error ? `${inv.error.errorType}: ${inv.error.errorMessage}` : "")
              )
            )
          )
        )
      ),
      h(
        "nav",
        { class: "pager", "aria-label": "Pages" },
        before ? h("a", { href: routeWith({ state, received_before: receivedBefore }, "functions", f.name, "invocations"), class: "button subtle" }, "← Newest") : null,
        h("span", { class: "muted" }, `${list.length} shown, newest first`),
        page.next ? h("a", { href: routeWith({ state, received_before: receivedBefore, before: page.next }, "functions", f.name, "invocations"), class: "button", rel: "next" }, "Older →") : null
      ),
    ];
  }
  return [filters, body];
}

// ---- one invocation ----

const EVENT_TEXT = {
  received: "Received",
  placed: "Placed on a worker",
  started: "Attempt started",
  completed: "Attempt completed",
  "lease expired": "Lease expired",
  "retry due": "Retry due",
  expired: "Expired",
  cancelled: "Cancelled",
  "placement timed out": "Placement timed out",
};

function eventKind(e) {
  if (e.event === "completed") return e.state === "SUCCEEDED" ? "ok" : e.state === "RETRY_WAIT" ? "warn" : "bad";
  if (["lease expired", "expired", "cancelled", "placement timed out"].includes(e.event)) return "bad";
  if (e.event === "retry due") return "warn";
  return "neutral";
}

function timeline(rec) {
  const events = rec.timeline || [];
  if (!events.length) return h("p", { class: "muted" }, "No lifecycle events recorded.");
  const t0 = events[0].at;
  return h(
    "ol",
    { class: "timeline", id: "timeline" },
    events.map((e) => {
      const details = [];
      if (e.epoch !== undefined) details.push(`attempt ${e.epoch}`);
      if (e.worker) details.push(["worker ", mono(e.worker)]);
      if (e.outcome) details.push(`outcome ${e.outcome}`);
      if (e.state) details.push(["→ ", stateBadge(e.state)]);
      if (e.retry_at) details.push(`retry at ${fmtTime(e.retry_at)} (+${fmtSpan(e.retry_at - e.at)})`);
      if (e.mode) details.push(String(e.mode));
      return h(
        "li",
        { class: ["tl-item", "tl-" + eventKind(e)], dataset: { event: e.event, epoch: e.epoch !== undefined ? String(e.epoch) : "" } },
        h("span", { class: "tl-dot", "aria-hidden": "true" }),
        h(
          "div",
          { class: "tl-body" },
          h("p", { class: "tl-title" }, h("strong", null, EVENT_TEXT[e.event] || String(e.event)), details.length ? h("span", { class: "tl-details" }, details.map((d, i) => [i ? " · " : " ", d])) : null),
          h("p", { class: "tl-time muted" }, h("time", { datetime: new Date(e.at).toISOString() }, fmtTime(e.at)), e.at !== t0 ? ` (+${fmtSpan(e.at - t0)})` : "")
        )
      );
    })
  );
}

export async function invocationPage(ctx) {
  const id = ctx.params.id;
  const rec = await waitForRecord(id, 3000);
  if (!rec) throw new ApiError(404, "NotFound", `No invocation ${id} (its record may not be written yet, or it was deleted by retention).`);
  ctx.title(`Invocation ${id.slice(0, 8)}…`);
  if (!TERMINAL.has(rec.state)) {
    // Follow it until it ends.
    const timer = setInterval(() => {
      if (ctx.live() && !document.hidden) refresh();
    }, 1500);
    ctx.onLeave(() => clearInterval(timer));
  }
  const rep = rec.report;
  const endToEnd = rec.finished_at ? rec.finished_at - rec.received_at : null;
  const head = h(
    "div",
    { class: "page-head" },
    h("p", { class: "crumbs" }, h("a", { href: route("functions") }, "Functions"), " / ", h("a", { href: route("functions", rec.function) }, rec.function), " / ", h("a", { href: route("functions", rec.function, "invocations") }, "Invocations"), " /"),
    h("h1", null, "Invocation ", h("span", { class: "mono id" }, rec.invocation_id)),
    h("p", { class: "subtitle" }, stateBadge(rec.state), " ", `${rec.mode} · received ${fmtAgo(rec.received_at)}`)
  );
  const summary = h(
    "section",
    { class: "card" },
    h("h2", null, "Summary"),
    facts([
      ["State", stateBadge(rec.state)],
      ["Function", h("a", { href: route("functions", rec.function) }, rec.function)],
      ["Qualifier", rec.qualifier || "unqualified"],
      ["Executed version", rec.executed_version],
      ["Mode", String(rec.mode)],
      ["Attempts", String(rec.attempts)],
      ["Function errors", String(rec.function_errors)],
      rec.lost_attempts ? ["Lost attempts", String(rec.lost_attempts)] : null,
      rec.worker ? ["Worker", mono(rec.worker)] : null,
      ["Received", fmtTime(rec.received_at)],
      ["Finished", fmtTime(rec.finished_at)],
      ["End to end", endToEnd === null ? "—" : fmtMs(endToEnd)],
      ["Run duration", rep ? fmtMs(rep.duration_us / 1000) : "—"],
      rep && rep.init_us !== undefined ? ["Init duration", fmtMs(rep.init_us / 1000)] : null,
      rep ? ["Memory", `${rep.memory_mb} MB${rep.max_memory_mb !== undefined ? `, ${rep.max_memory_mb} MB used at most` : ""}`] : null,
      rec.not_before ? ["Next attempt not before", fmtTime(rec.not_before)] : null,
      rec.lease_expires_at ? ["Lease expires", fmtTime(rec.lease_expires_at)] : null,
      ["Trace id", rec.trace_id ? mono(rec.trace_id) : "—"],
      rec.idempotency_key ? ["Idempotency key", mono(rec.idempotency_key)] : null,
    ])
  );
  const errorBox = rec.error
    ? h("div", { class: "result-bad", id: "invocation-error", role: "note" }, h("strong", null, String(rec.error.errorType)), ": ", String(rec.error.errorMessage))
    : null;
  const result =
    rec.result !== null && rec.result !== undefined
      ? pre(rec.result, "result-text")
      : rec.result_base64
        ? h("p", { class: "muted" }, `Binary result (${rec.result_base64.length} base64 characters).`)
        : h("p", { class: "muted" }, "No result.");
  const payload =
    rec.payload !== null && rec.payload !== undefined
      ? pre(rec.payload, "payload")
      : rec.payload_base64
        ? h("p", { class: "muted" }, "Binary payload.")
        : h("p", { class: "muted" }, "Empty.");
  const logCard = h(
    "section",
    { class: "card" },
    h("h2", null, "Log"),
    rec.log ? pre(rec.log, "log") : h("p", { class: "muted" }, "Nothing was logged."),
    rec.report_line ? [h("h3", null, "Report"), pre(rec.report_line, "report")] : null
  );
  const log = logCard.querySelector("pre.log");
  if (log) log.id = "invocation-log";
  const report = logCard.querySelector("pre.report");
  if (report) report.id = "invocation-report";
  return h(
    "section",
    null,
    head,
    errorBox,
    h("div", { class: "grid-2" }, h("div", { class: "stack" }, summary), h("section", { class: "card" }, h("h2", null, "Lifecycle"), timeline(rec))),
    logCard,
    h("div", { class: "grid-2" }, h("section", { class: "card" }, h("h2", null, "Result"), result), h("section", { class: "card" }, h("h2", null, "Payload"), payload))
  );
}
