// Small time-series charts drawn as inline SVG from the stats endpoint's buckets.

import { h, s } from "./dom.js";

const W = 400;
const H = 160;
const PAD = { left: 48, right: 8, top: 10, bottom: 22 };

/**
 * The y axis: a round step (1, 2, 2.5 or 5 times a power of ten; whole for counts) and as many
 * steps (at most about 4) as reach the largest value.
 */
function scale(max, integer) {
  if (!(max > 0)) max = 1;
  const raw = max / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= raw && (!integer || Number.isInteger(c)));
  if (integer) step = Math.max(1, step ?? Math.ceil(raw));
  const n = Math.max(1, Math.ceil(max / step - 1e-9));
  return { top: n * step, step, n };
}

function clock(ms, withDate) {
  const d = new Date(ms);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  return withDate ? `${d.getMonth() + 1}/${d.getDate()} ${hm}` : hm;
}

function axisLabel(v, format) {
  if (format) return format(v);
  if (v >= 1000) return `${(v / 1000).toFixed(v % 1000 ? 1 : 0)}k`;
  if (Number.isInteger(v)) return String(v);
  // Two significant digits, however small (an average concurrency of 0.0004 is not "0.00").
  return String(Number(v.toPrecision(2)));
}

/**
 * One chart: `series` = [{key, label, cls}], drawn over `stats.buckets`; a null value leaves
 * a gap. `format` renders a value (axis and tooltip); `integer` keeps the axis on whole numbers.
 */
export function chart({ title, stats, series, format, integer = false }) {
  const buckets = stats.buckets || [];
  const step = stats.step_ms || 60000;
  const from = stats.from ?? (buckets[0] ? buckets[0].at : 0);
  const to = stats.to ?? from + step * buckets.length;
  const span = Math.max(1, to - from);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (at) => PAD.left + ((at + step / 2 - from) / span) * plotW;
  let max = 0;
  for (const b of buckets) for (const sr of series) if (b[sr.key] !== null && b[sr.key] > max) max = b[sr.key];
  const axis = scale(max, integer);
  const top = axis.top;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": `${title}: ${series.map((sr) => `${sr.label} up to ${axisLabel(maxOf(buckets, sr.key), format)}`).join(", ")}`,
  });
  // Grid and y labels.
  for (let i = 0; i <= axis.n; i++) {
    const v = axis.step * i;
    const gy = y(v);
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: gy, y2: gy, class: i ? "grid" : "axis" }));
    svg.append(s("text", { x: PAD.left - 6, y: gy + 4, class: "tick", "text-anchor": "end" }, axisLabel(v, format)));
  }
  // Time labels: start, middle, end.
  const withDate = span > 12 * 3600 * 1000;
  for (const [at, anchor] of [
    [from, "start"],
    [from + span / 2, "middle"],
    [to, "end"],
  ]) {
    const tx = PAD.left + ((at - from) / span) * plotW;
    svg.append(s("text", { x: tx, y: H - 6, class: "tick", "text-anchor": anchor }, clock(at, withDate)));
  }
  // Series: an area under the first one, a line each.
  series.forEach((sr, i) => {
    let d = "";
    let pen = false;
    for (const b of buckets) {
      const v = b[sr.key];
      if (v === null || v === undefined) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(b.at).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (!d) return;
    if (i === 0 && sr.area !== false) {
      const area = areaPath(buckets, sr.key, x, y, y(0));
      if (area) svg.append(s("path", { d: area, class: `area ${sr.cls}` }));
    }
    svg.append(s("path", { d, class: `series ${sr.cls}`, "data-series": sr.key }));
    // A value with no neighbour draws no line: mark it with a dot.
    buckets.forEach((bk, j) => {
      const v = bk[sr.key];
      const near = (k) => buckets[k] && buckets[k][sr.key] !== null && buckets[k][sr.key] !== undefined;
      if (v !== null && v !== undefined && !near(j - 1) && !near(j + 1)) {
        svg.append(s("circle", { cx: x(bk.at).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: `dot ${sr.cls}` }));
      }
    });
  });
  // One hover target per bucket, with its values as a tooltip.
  const slot = Math.max(1, plotW / Math.max(1, buckets.length));
  for (const b of buckets) {
    const text = `${clock(b.at, withDate)}  ` + series.map((sr) => `${sr.label}: ${b[sr.key] === null ? "—" : axisLabel(b[sr.key], format)}`).join(", ");
    svg.append(
      s("rect", { x: x(b.at) - slot / 2, y: PAD.top, width: slot, height: plotH, class: "hover" }, s("title", null, text))
    );
  }
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((sr) => h("li", null, h("span", { class: ["swatch", sr.cls], "aria-hidden": "true" }), sr.label))
  );
  return h("figure", { class: "chart-card" }, h("figcaption", null, h("span", { class: "chart-title" }, title), legend), svg);
}

function maxOf(buckets, key) {
  let m = 0;
  for (const b of buckets) if (b[key] !== null && b[key] > m) m = b[key];
  return m;
}

/** The area under a series, closed to the baseline at each gap. */
function areaPath(buckets, key, x, y, base) {
  let d = "";
  let run = [];
  const flush = () => {
    if (run.length) {
      d += `M${run[0][0].toFixed(1)},${base.toFixed(1)}`;
      for (const [px, py] of run) d += `L${px.toFixed(1)},${py.toFixed(1)}`;
      d += `L${run[run.length - 1][0].toFixed(1)},${base.toFixed(1)}Z`;
    }
    run = [];
  };
  for (const b of buckets) {
    const v = b[key];
    if (v === null || v === undefined) flush();
    else run.push([x(b.at), y(v)]);
  }
  flush();
  return d;
}
