// Line charts of per-epoch curves, shared by the model card and the Train view: round ticks
// (at most 10 whole-epoch labels), the legend above the plot, the report's split colours.

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

// The colours of the splits, the same as the report's curves (convlens.views.plots.colours.SPLIT_COLOURS).
export const SPLIT_COLOURS = { train: "#e07020", val: "#20a060", test: "#2060c0" };
const MAX_EPOCH_LABELS = 10;
const MAX_VALUE_LABELS = 6;

// Evenly spaced "round" axis positions (a step of 1, 2, 2.5 or 5 × 10^k) covering low..high, at most
// `most` of them; `whole` keeps the step at 1 or more (epochs are whole numbers).
export function niceTicks(low, high, most, whole = false) {
  if (!(high > low)) return [low];
  const power = 10 ** Math.floor(Math.log10((high - low) / Math.max(1, most - 1)));
  for (const factor of [1, 2, 2.5, 5, 10, 20]) {
    let step = Number((factor * power).toPrecision(12));
    if (whole && !Number.isInteger(step)) {
      if (step > 1) continue; // 2.5: a quarter-epoch step is no step at all for whole epochs
      step = 1;
    }
    const ticks = [];
    for (let k = Math.ceil(low / step - 1e-9); k * step <= high + step * 1e-9; k++) {
      ticks.push(Number((k * step).toPrecision(12)));
    }
    if (ticks.length <= most) return ticks;
  }
  return [low, high];
}

// A line chart of per-epoch series; `series` = [{name, values, colour, dashed?, key?}], values may
// be null. The legend sits above the plot, so it never covers a line; `kept` marks the epoch that is
// the model, `cursor` the epoch a slider shows; `lastEpoch` stretches the axis to a planned schedule
// (a live training's curve then grows across a fixed axis).
// `width`: drawn at that many CSS pixels (its text at its real size) instead of scaled from 420.
export function lineChart(title, epochs, series,
  { min = null, max = null, asPercent = false, kept = null, cursor = null, lastEpoch = null, width = null } = {}) {
  const fixed = width !== null;
  width = fixed ? Math.max(240, Math.round(width)) : 420;
  const height = 240, left = 48, right = 14, top = 52, bottom = 32;
  const all = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const low = min ?? (all.length ? Math.min(...all) : 0);
  const high = max ?? (all.length ? Math.max(...all) : 1);
  const first = epochs.length ? epochs[0] : 1;
  const last = Math.max(lastEpoch ?? 0, epochs.length ? epochs[epochs.length - 1] : 1);
  const x = (epoch) => left + (last > first ? ((epoch - first) / (last - first)) * (width - left - right) : 0);
  const y = (v) => top + (1 - (v - low) / (high - low || 1)) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title,
    ...(fixed ? { style: `width: ${width}px; height: ${height}px` } : {}) });
  chart.append(svg("text", { x: left, y: 16, class: "chart-title" }, title));
  for (const tick of niceTicks(low, high, MAX_VALUE_LABELS)) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, class: "tick value-tick", "text-anchor": "end" },
      asPercent ? `${Number((100 * tick).toPrecision(6))}%` : String(tick)));
  }
  // at most one epoch label per 36 pixels: a narrow chart gets fewer, never overlapping ones
  const epochLabels = Math.max(2, Math.min(MAX_EPOCH_LABELS, Math.floor((width - left - right) / 36)));
  for (const epoch of niceTicks(first, last, epochLabels, true)) {
    chart.append(svg("text", { x: x(epoch), y: height - 14, class: "tick epoch-tick", "text-anchor": "middle" }, String(epoch)));
  }
  chart.append(svg("text", { x: width - right, y: height - 2, class: "tick", "text-anchor": "end" }, "epoch"));
  if (kept !== null) {
    chart.append(svg("line", { x1: x(kept), x2: x(kept), y1: top, y2: height - bottom, class: "kept", stroke: "#888", "stroke-dasharray": "2 2" }));
  }
  if (cursor !== null && cursor >= first) {
    chart.append(svg("line", { x1: x(cursor), x2: x(cursor), y1: top, y2: height - bottom, class: "cursor", stroke: "#888", "stroke-dasharray": "3 3" }));
  }
  // the legend: one entry after another in the top margin, wrapping to a second row
  let legendX = left, legendY = 30;
  const legend = [...series, ...(kept !== null ? [{ name: `kept: epoch ${kept}`, colour: "#888", dashed: true }] : [])];
  for (const s of legend) {
    const entryWidth = 26 + 7 * s.name.length; // 11 px semi-bold: about 7 px a character
    if (legendX + entryWidth > width - right && legendX > left) {
      legendX = left;
      legendY += 13;
    }
    chart.append(svg("line", { x1: legendX, x2: legendX + 14, y1: legendY - 4, y2: legendY - 4, stroke: s.colour,
      "stroke-width": 2, ...(s.dashed ? { "stroke-dasharray": "3 2" } : {}) }));
    chart.append(svg("text", { x: legendX + 18, y: legendY, fill: s.colour, class: "legend" }, s.name));
    legendX += entryWidth;
  }
  series.forEach((s) => {
    const points = s.values.map((v, i) => (Number.isFinite(v) ? `${x(epochs[i])},${y(v)}` : null)).filter(Boolean);
    chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: s.colour, "stroke-width": 2,
      ...(s.dashed ? { "stroke-dasharray": "5 3" } : {}), "data-series": s.key ?? s.name, "data-points": points.length }));
  });
  return chart;
}
