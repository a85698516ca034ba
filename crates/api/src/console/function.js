// One function: its configuration, charts, an invoke form, versions and aliases (with a
// weight editor) and its invocations, one tab each (#/functions/NAME/TAB).

import { api, apiMaybe, ApiError, fpath, invoke } from "./api.js";
import { chart } from "./chart.js";
import { empty, facts, fill, fmtAgo, fmtBytes, fmtMs, fmtNum, fmtTime, h, mono, pre, route, routeWith } from "./dom.js";
import { invocationsTab, waitForRecord } from "./invocations.js";
import { changeError, notify, openDialog, refresh } from "./ui.js";

const TABS = [
  ["", "Overview"],
  ["metrics", "Metrics"],
  ["invoke", "Invoke"],
  ["aliases", "Versions & aliases"],
  ["invocations", "Invocations"],
];

export async function functionPage(ctx) {
  const name = ctx.params.name;
  const tab = ctx.params.tab || "";
  const label = TABS.find(([t]) => t === tab);
  if (!label) throw new ApiError(404, "NotFound", `This function page has no “${tab}” tab.`);
  const f = await api(fpath(name));
  ctx.title(tab ? `${label[1]} · ${name}` : name);

  const head = h(
    "div",
    { class: "page-head" },
    h("p", { class: "crumbs" }, h("a", { href: route("functions") }, "Functions"), " / "),
    h("h1", { class: "fn-name" }, f.name),
    h("p", { class: "subtitle" }, h("span", { class: "tag" }, String(f.runtime)), " ", f.description || h("span", { class: "muted" }, "No description"))
  );
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Function sections" },
    TABS.map(([t, text]) =>
      h("a", { href: t ? route("functions", name, t) : route("functions", name), "aria-current": t === tab ? "page" : null }, text)
    )
  );
  let body;
  switch (tab) {
    case "":
      body = await overview(ctx, f);
      break;
    case "metrics":
      body = await metrics(ctx, f);
      break;
    case "invoke":
      body = await invokeTab(ctx, f);
      break;
    case "aliases":
      body = await aliasesTab(ctx, f);
      break;
    case "invocations":
      body = await invocationsTab(ctx, f);
      break;
  }
  return h("section", null, head, tabs, h("div", { class: "tab-body" }, body));
}

function card(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), children);
}

// ---- overview ----

function value(v) {
  if (v === null || v === undefined) return "—";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

async function overview(ctx, f) {
  const urls = (await apiMaybe(fpath(f.name, "urls"))) || { urls: [] };
  const retry = f.retry || {};
  const config = card(
    "Configuration",
    facts([
      ["Runtime", String(f.runtime)],
      f.handler ? ["Handler", mono(f.handler)] : null,
      ["Memory", `${fmtNum(f.memory_mb)} MB`],
      ["Timeout", fmtMs(f.timeout_ms)],
      ["Ephemeral storage", `${fmtNum(f.ephemeral_storage_mb)} MB`],
      ["Retries (async)", `${value(retry.max_retries)} after a ${fmtMs(retry.base_delay_ms)} first delay; events kept ${value(retry.max_event_age_s)} s`],
      retry.on_success ? ["On success", h("a", { href: route("functions", retry.on_success) }, retry.on_success)] : null,
      retry.on_failure ? ["On failure", h("a", { href: route("functions", retry.on_failure) }, retry.on_failure)] : null,
      retry.dead_letter_queue ? ["Dead-letter queue", h("a", { href: route("queues", retry.dead_letter_queue) }, retry.dead_letter_queue)] : null,
      f.role ? ["Role", mono(f.role)] : null,
      f.allowed_outbound_hosts && f.allowed_outbound_hosts.length ? ["Outbound hosts", f.allowed_outbound_hosts.join(", ")] : null,
      ["Description", f.description || ""],
      ["Revision", String(f.revision)],
      ["Created", fmtTime(f.created_at)],
      ["Updated", `${fmtTime(f.updated_at)} (${fmtAgo(f.updated_at)})`],
    ])
  );
  const code = card(
    "Code",
    f.code_sha256
      ? facts([
          ["SHA-256", mono(f.code_sha256)],
          ["Size", f.code_size !== undefined ? `${fmtBytes(f.code_size)} (${fmtNum(f.code_size)} bytes)` : "—"],
        ])
      : empty("No code uploaded", "Upload it with gust deploy or PUT /v1/functions/NAME/code.")
  );
  // Names only: values may be secrets and are never shown.
  const envNames = Object.keys(f.env || {});
  const env = card(
    "Environment",
    envNames.length
      ? [h("ul", { class: "chips", id: "env-names" }, envNames.map((n) => h("li", null, mono(n)))), h("p", { class: "muted" }, "Values are not shown.")]
      : h("p", { class: "muted" }, "No environment variables.")
  );
  const concurrency = card(
    "Reserved concurrency",
    h(
      "p",
      { id: "reserved-concurrency" },
      f.reserved_concurrency === null || f.reserved_concurrency === undefined
        ? "Unreserved: shares the server's unreserved pool."
        : f.reserved_concurrency === 0
          ? "0: every invocation is throttled."
          : `${fmtNum(f.reserved_concurrency)} at most at once (all versions).`
    ),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", id: "set-concurrency", onclick: () => concurrencyDialog(f) }, "Set…"),
      f.reserved_concurrency !== null && f.reserved_concurrency !== undefined
        ? h(
            "button",
            {
              type: "button",
              class: "subtle",
              onclick: async () => {
                try {
                  await api(fpath(f.name, "concurrency"), { method: "DELETE", ifMatch: f.revision });
                  notify("Reserved concurrency removed.");
                  refresh();
                } catch (e) {
                  notify(changeError(e), "error");
                }
              },
            },
            "Remove reservation"
          )
        : null
    )
  );
  const urlList = urls.urls || [];
  const urlCard = card(
    "Function URLs",
    urlList.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "table" },
            h("thead", null, h("tr", null, ["Qualifier", "URL", "Auth", "Mode"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              null,
              urlList.map((u) => h("tr", null, h("td", null, u.qualifier || "$LATEST"), h("td", null, mono(u.function_url)), h("td", null, value(u.auth_type)), h("td", null, value(u.invoke_mode))))
            )
          )
        )
      : h("p", { class: "muted" }, "No URLs. Create one with POST /v1/functions/NAME/url.")
  );
  return h("div", { class: "grid-2" }, config, h("div", { class: "stack" }, code, concurrency, env, urlCard));
}

function concurrencyDialog(f) {
  const input = h("input", { type: "number", id: "concurrency-value", min: "0", step: "1", required: true, value: f.reserved_concurrency ?? 10 });
  const error = h("p", { class: "form-error", role: "alert" });
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": "conc-title" },
    h(
      "form",
      {
        onsubmit: async (ev) => {
          ev.preventDefault();
          const n = Number(input.value);
          if (!Number.isInteger(n) || n < 0) {
            error.textContent = "Enter a whole number, 0 or more.";
            return;
          }
          try {
            await api(fpath(f.name, "concurrency"), { method: "PUT", json: { reserved_concurrency: n }, ifMatch: f.revision });
            dialog.close();
            notify(`Reserved concurrency set to ${n}.`);
            refresh();
          } catch (e) {
            error.textContent = changeError(e);
          }
        },
      },
      h("h2", { id: "conc-title" }, "Reserved concurrency"),
      h("label", { for: "concurrency-value" }, "Most invocations of this function running at once (0 throttles all)"),
      input,
      error,
      h("div", { class: "actions" }, h("button", { type: "button", class: "subtle", onclick: () => dialog.close() }, "Cancel"), h("button", { type: "submit", class: "primary" }, "Save"))
    )
  );
  openDialog(dialog);
  input.focus();
}

// ---- metrics ----

const WINDOWS = [
  ["15m", "15 min", "15s"],
  ["1h", "1 hour", "60s"],
  ["6h", "6 hours", "6m"],
  ["24h", "24 hours", "24m"],
];

async function metrics(ctx, f) {
  const chosen = WINDOWS.find(([w]) => w === ctx.query.get("window")) || WINDOWS[1];
  const [w, wLabel, step] = chosen;
  const picker = h(
    "nav",
    { class: "segmented", "aria-label": "Time window" },
    WINDOWS.map(([key, text]) =>
      h("a", { href: routeWith({ window: key === "1h" ? "" : key }, "functions", f.name, "metrics"), "aria-current": key === w ? "true" : null }, text)
    )
  );
  const stats = await apiMaybe(`${fpath(f.name, "stats")}?window=${w}&step=${step}`);
  const toolbar = h(
    "div",
    { class: "toolbar" },
    picker,
    h("button", { type: "button", class: "subtle", id: "refresh-charts", onclick: () => refresh() }, "Refresh")
  );
  if (!stats) {
    return [
      toolbar,
      empty(
        "Charts are not available on this server",
        "It does not answer GET /v1/functions/{name}/stats (an older gust). Invocations are still listed under Invocations."
      ),
    ];
  }
  // Fresh figures while the page is open.
  const timer = setInterval(() => {
    if (ctx.live() && !document.hidden && !document.querySelector("dialog[open]")) refresh();
  }, 30000);
  ctx.onLeave(() => clearInterval(timer));

  const b = stats.buckets || [];
  const sum = (k) => b.reduce((a, x) => a + (x[k] || 0), 0);
  const invocations = sum("invocations");
  const errors = sum("errors");
  const throttles = sum("throttles");
  const p99 = b.reduce((m, x) => (x.p99_ms !== null && x.p99_ms > m ? x.p99_ms : m), 0);
  const summary = h(
    "dl",
    { class: "stat-row" },
    [
      ["Invocations", fmtNum(invocations)],
      ["Errors", `${fmtNum(errors)}${invocations ? ` (${((errors / invocations) * 100).toFixed(1)}%)` : ""}`],
      ["Throttles", fmtNum(throttles)],
      ["Worst p99", invocations ? fmtMs(p99) : "—"],
      ["Cold starts", fmtNum(sum("cold_starts"))],
    ].map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v)))
  );
  const note = stats.sampled ? h("p", { class: "notice" }, "More invocations ended in this window than one answer reads: the oldest were left out of these figures.") : null;
  if (invocations === 0 && throttles === 0) {
    return [
      toolbar,
      empty(`No invocations ended in the last ${wLabel}`, "Invoke the function and its figures appear here.", h("a", { href: route("functions", f.name, "invoke"), class: "button" }, "Invoke it")),
    ];
  }
  const ms = (v) => fmtMs(v);
  const charts = h(
    "div",
    { class: "charts", id: "charts" },
    chart({ title: "Invocations", stats, series: [{ key: "invocations", label: "ended", cls: "c1" }], integer: true }),
    chart({ title: "Errors", stats, series: [{ key: "errors", label: "failed or expired", cls: "c-bad" }], integer: true }),
    chart({ title: "Throttles", stats, series: [{ key: "throttles", label: "throttled", cls: "c-warn" }], integer: true }),
    chart({
      title: "Duration",
      stats,
      format: ms,
      series: [
        { key: "p50_ms", label: "p50", cls: "c1" },
        { key: "p99_ms", label: "p99", cls: "c2", area: false },
      ],
    }),
    chart({ title: "Concurrency", stats, series: [{ key: "concurrency", label: "average running", cls: "c3" }] }),
    chart({ title: "Cold starts", stats, series: [{ key: "cold_starts", label: "cold starts", cls: "c4" }], integer: true })
  );
  return [toolbar, summary, note, charts, h("p", { class: "muted" }, `Buckets of ${fmtMs(stats.step_ms)}, ${fmtTime(stats.from)} to ${fmtTime(stats.to)}. Throttles are this server's own count.`)];
}

// ---- invoke ----

async function versionsOf(name) {
  const page = await api(`${fpath(name, "versions")}?limit=1000`);
  return page.versions || [];
}

async function invokeTab(ctx, f) {
  const versions = await versionsOf(f.name);
  const qualifier = h(
    "select",
    { id: "invoke-qualifier" },
    h("option", { value: "" }, "$LATEST (unqualified)"),
    (f.aliases || []).length ? h("optgroup", { label: "Aliases" }, f.aliases.map((a) => h("option", { value: a.name }, `${a.name} → ${a.version}`))) : null,
    versions.length ? h("optgroup", { label: "Versions" }, versions.slice().reverse().map((v) => h("option", { value: String(v.version) }, `version ${v.version}`))) : null
  );
  const payload = h("textarea", { id: "payload", rows: "8", spellcheck: "false", class: "code-input", "aria-describedby": "payload-help" }, "{}");
  const button = h("button", { type: "submit", class: "primary", id: "invoke-button" }, "Invoke");
  const out = h("div", { id: "invoke-result", class: "invoke-result", "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "card invoke-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        button.disabled = true;
        fill(out, h("p", { class: "loading" }, "Invoking…"));
        try {
          const r = await invoke(f.name, payload.value, qualifier.value);
          fill(out, ...invokeResult(r));
          if (r.invocationId) showRecord(ctx, r.invocationId, out);
        } catch (e) {
          fill(out, h("div", { class: "result-bad", id: "invoke-error", role: "alert" }, h("strong", null, e.code || "Error"), ": ", e.message || String(e)));
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h2", null, "Invoke synchronously"),
    h("label", { for: "invoke-qualifier" }, "Version or alias"),
    qualifier,
    h("label", { for: "payload" }, "Payload"),
    payload,
    h("p", { class: "muted", id: "payload-help" }, "Sent as the event (JSON is sent as application/json). Ctrl+Enter invokes."),
    h("div", { class: "actions" }, button)
  );
  payload.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  out.append(h("p", { class: "muted" }, "The result, error and log appear here."));
  return h("div", { class: "grid-2" }, form, h("section", { class: "card" }, h("h2", null, "Result"), out));
}

function prettyIfJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function invokeResult(r) {
  const failed = !!r.functionError;
  const status = h(
    "p",
    { class: "result-status", id: "invoke-status" },
    h("span", { class: ["badge", failed ? "badge-bad" : "badge-ok"] }, failed ? "Function error" : "Succeeded"),
    " ",
    failed ? h("code", null, r.functionError) : null,
    ` · version ${r.executedVersion || "?"} · ${fmtMs(r.elapsedMs)} round trip`,
    r.invocationId ? [" · ", h("a", { href: route("invocations", r.invocationId), id: "invoke-record-link" }, "invocation")] : null
  );
  const parts = [status];
  if (failed) {
    let err = null;
    try {
      err = JSON.parse(r.text);
    } catch {
      // Not JSON: shown as it is.
    }
    if (err && err.errorMessage !== undefined) parts.push(h("p", { class: "result-bad", id: "invoke-error" }, h("strong", null, String(err.errorType || r.functionError)), ": ", String(err.errorMessage)));
    parts.push(h("h3", null, "Error body"), pre(prettyIfJson(r.text), "result-text"));
  } else {
    parts.push(h("h3", null, "Result"), pre(prettyIfJson(r.text), "result-text"));
  }
  return parts;
}

/** The record is written just behind the answer: its log and REPORT line follow shortly. */
async function showRecord(ctx, id, out) {
  const slot = h("div", { class: "record" }, h("p", { class: "loading" }, "Fetching the log…"));
  out.append(slot);
  const rec = await waitForRecord(id, 10000).catch(() => null);
  if (!ctx.live()) return;
  if (!rec) {
    fill(slot, h("p", { class: "muted" }, "The record has not been written yet. ", h("a", { href: route("invocations", id) }, "Open the invocation"), " to see its log later."));
    return;
  }
  fill(slot, 
    h("h3", null, "Log"),
    rec.log ? pre(rec.log, "log") : h("p", { class: "muted" }, "Nothing was logged."),
    rec.report_line ? [h("h3", null, "Report"), pre(rec.report_line, "report")] : null
  );
  const log = slot.querySelector("pre.log");
  if (log) log.id = "invoke-log";
  const report = slot.querySelector("pre.report");
  if (report) report.id = "invoke-report";
}

// ---- versions and aliases ----

function routingText(a) {
  const extra = Object.entries(a.weights || {});
  if (!extra.length) return `version ${a.version}: 100%`;
  const rest = extra.reduce((s, [, w]) => s + w, 0);
  return [`version ${a.version}: ${pct(1 - rest)}`, ...extra.map(([v, w]) => `version ${v}: ${pct(w)}`)].join(" · ");
}

function pct(x) {
  const p = Math.round(x * 1000) / 10;
  return `${p}%`;
}

function splitBar(primaryShare) {
  const a = h("span", { class: "split-a" });
  const b = h("span", { class: "split-b" });
  // Widths through the CSSOM (allowed by the style-src policy, unlike style attributes).
  a.style.width = `${Math.max(0, Math.min(100, primaryShare * 100))}%`;
  b.style.width = `${Math.max(0, Math.min(100, (1 - primaryShare) * 100))}%`;
  return h("span", { class: "split", "aria-hidden": "true" }, a, b);
}

async function aliasesTab(ctx, f) {
  const [versions, aliasesResp] = await Promise.all([versionsOf(f.name), api(fpath(f.name, "aliases"))]);
  const aliases = aliasesResp.aliases || [];
  const publish = h(
    "button",
    {
      type: "button",
      id: "publish",
      onclick: async () => {
        try {
          const v = await api(fpath(f.name, "versions"), { method: "POST", ifMatch: f.revision });
          notify(`Published version ${v.version}.`);
          refresh();
        } catch (e) {
          notify(changeError(e), "error");
        }
      },
    },
    "Publish $LATEST as a version"
  );
  const versionsCard = card(
    "Versions",
    versions.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "table", id: "versions-table" },
            h("thead", null, h("tr", null, ["Version", "Code", "Runtime", "Memory", "Timeout", "From revision", "Published"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              null,
              versions
                .slice()
                .reverse()
                .map((v) =>
                  h(
                    "tr",
                    null,
                    h("td", { class: "strong" }, String(v.version)),
                    h("td", null, mono((v.code_sha256 || "").slice(0, 12))),
                    h("td", null, String(v.runtime)),
                    h("td", null, `${fmtNum(v.memory_mb)} MB`),
                    h("td", null, fmtMs(v.timeout_ms)),
                    h("td", null, String(v.from_revision)),
                    h("td", null, fmtTime(v.created_at))
                  )
                )
            )
          )
        )
      : empty("No versions published", "A version freezes $LATEST's code and configuration; aliases route to versions."),
    h("div", { class: "actions" }, publish)
  );
  const newAlias = h("button", { type: "button", id: "new-alias", disabled: versions.length === 0, onclick: () => aliasDialog(f, versions, null) }, "New alias…");
  const aliasesCard = card(
    "Aliases",
    aliases.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "table", id: "aliases-table" },
            h("thead", null, h("tr", null, ["Alias", "Routing", "Description", "Updated", ""].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              null,
              aliases.map((a) => {
                const extra = Object.values(a.weights || {}).reduce((s, w) => s + w, 0);
                return h(
                  "tr",
                  { dataset: { alias: a.name } },
                  h("td", { class: "strong" }, a.name),
                  h("td", null, splitBar(1 - extra), h("span", { class: "routing-text" }, routingText(a))),
                  h("td", { class: "clip" }, a.description || ""),
                  h("td", null, fmtAgo(a.updated_at)),
                  h("td", null, h("button", { type: "button", class: "subtle edit-alias", "aria-label": `Edit the weights of alias ${a.name}`, onclick: () => aliasDialog(f, versions, a) }, "Edit weights…"))
                );
              })
            )
          )
        )
      : empty("No aliases", versions.length ? "An alias names a version (and can send a share of traffic to a second one)." : "Publish a version first: aliases route to versions."),
    h("div", { class: "actions" }, newAlias)
  );
  return h("div", { class: "stack" }, aliasesCard, versionsCard);
}

/** The weight editor: a primary version, optionally a second one and its share. */
function aliasDialog(f, versions, alias) {
  const numbers = versions.map((v) => v.version).sort((a, b) => b - a);
  const extra = alias ? Object.entries(alias.weights || {})[0] : null;
  const nameInput = alias ? null : h("input", { id: "alias-name", required: true, pattern: "[A-Za-z0-9_-]+", maxlength: "128", autocomplete: "off", spellcheck: "false" });
  const primary = h("select", { id: "alias-primary" }, numbers.map((n) => h("option", { value: String(n), selected: alias ? alias.version === n : n === numbers[0] }, `version ${n}`)));
  const secondary = h("select", { id: "alias-secondary" });
  const share = h("input", { type: "range", id: "alias-share", min: "0", max: "100", step: "1", value: extra ? String(Math.round(extra[1] * 100)) : "10", "aria-describedby": "alias-preview" });
  const shareNum = h("input", { type: "number", id: "alias-share-number", min: "0", max: "100", step: "0.1", value: extra ? String(Math.round(extra[1] * 1000) / 10) : "10", "aria-label": "Share to the second version, percent" });
  const description = h("input", { id: "alias-description", maxlength: "256", value: alias ? alias.description || "" : "" });
  const preview = h("p", { id: "alias-preview", class: "preview" });
  const error = h("p", { class: "form-error", role: "alert", id: "alias-error" });

  const fillSecondary = (keep) => {
    const p = Number(primary.value);
    fill(secondary, 
      h("option", { value: "" }, "None: all traffic to the primary"),
      numbers.filter((n) => n !== p).map((n) => h("option", { value: String(n), selected: String(n) === keep }, `version ${n}`))
    );
  };
  fillSecondary(extra ? extra[0] : "");
  const update = () => {
    const two = secondary.value !== "";
    share.disabled = !two;
    shareNum.disabled = !two;
    const s = two ? Number(shareNum.value) / 100 : 0;
    fill(preview, splitBar(1 - s), two ? `version ${primary.value}: ${pct(1 - s)} · version ${secondary.value}: ${pct(s)}` : `version ${primary.value}: 100%`);
  };
  primary.addEventListener("change", () => {
    fillSecondary(secondary.value === primary.value ? "" : secondary.value);
    update();
  });
  secondary.addEventListener("change", update);
  share.addEventListener("input", () => {
    shareNum.value = share.value;
    update();
  });
  shareNum.addEventListener("input", () => {
    share.value = String(Math.round(Number(shareNum.value)));
    update();
  });
  update();

  const title = alias ? `Routing of alias ${alias.name}` : "New alias";
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": "alias-title", id: "alias-dialog" },
    h(
      "form",
      {
        onsubmit: async (ev) => {
          ev.preventDefault();
          const name = alias ? alias.name : nameInput.value.trim();
          const pctValue = Number(shareNum.value);
          if (secondary.value !== "" && !(pctValue >= 0 && pctValue <= 100)) {
            error.textContent = "The share is a percentage from 0 to 100.";
            return;
          }
          const weights = {};
          if (secondary.value !== "" && pctValue > 0) weights[secondary.value] = Math.round(pctValue * 10) / 1000;
          try {
            await api(fpath(f.name, "aliases", name), {
              method: "PUT",
              json: { version: Number(primary.value), weights, description: description.value },
              ifMatch: alias ? alias.revision : undefined,
            });
            dialog.close();
            notify(`Saved the routing of alias ${name}.`);
            refresh();
          } catch (e) {
            error.textContent = changeError(e);
          }
        },
      },
      h("h2", { id: "alias-title" }, title),
      nameInput ? [h("label", { for: "alias-name" }, "Alias name"), nameInput] : null,
      h("label", { for: "alias-primary" }, "Primary version"),
      primary,
      h("label", { for: "alias-secondary" }, "Second version (weighted)"),
      secondary,
      h("label", { for: "alias-share" }, "Share of traffic to the second version"),
      h("div", { class: "share" }, share, shareNum, h("span", null, "%")),
      preview,
      h("label", { for: "alias-description" }, "Description"),
      description,
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "subtle", onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "submit", class: "primary", id: "alias-save" }, "Save")
      )
    )
  );
  openDialog(dialog);
  (nameInput || primary).focus();
}
