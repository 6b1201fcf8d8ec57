// Model card: stages table, training curves, test accuracy, per-class scores, confusion matrix.
// Everything comes from the checkpoint's metadata and the inspect module, via GET /api/runs/ID.

import { el, fmt, percent } from "./draw.js";
import { stageExplanation } from "./explain-text.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

// The colours of the splits, the same as the report's curves (convlens.views.plots.colours.SPLIT_COLOURS).
const SPLIT_COLOURS = { train: "#e07020", val: "#20a060", test: "#2060c0" };
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

// A line chart of per-epoch series; `series` = [{name, values, colour}], values may be null.
// The legend sits above the plot, so it never covers a line; `kept` marks the epoch that is the model.
function lineChart(title, epochs, series, { min = null, max = null, asPercent = false, kept = null } = {}) {
  const width = 420, height = 240, left = 48, right = 14, top = 52, bottom = 32;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const low = min ?? Math.min(...all);
  const high = max ?? Math.max(...all);
  const first = epochs[0], last = epochs[epochs.length - 1];
  const x = (epoch) => left + (last > first ? ((epoch - first) / (last - first)) * (width - left - right) : 0);
  const y = (v) => top + (1 - (v - low) / (high - low || 1)) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  chart.append(svg("text", { x: left, y: 16, class: "chart-title" }, title));
  for (const tick of niceTicks(low, high, MAX_VALUE_LABELS)) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, class: "tick value-tick", "text-anchor": "end" },
      asPercent ? `${Number((100 * tick).toPrecision(6))}%` : String(tick)));
  }
  for (const epoch of niceTicks(first, last, MAX_EPOCH_LABELS, true)) {
    chart.append(svg("text", { x: x(epoch), y: height - 14, class: "tick epoch-tick", "text-anchor": "middle" }, String(epoch)));
  }
  chart.append(svg("text", { x: width - right, y: height - 2, class: "tick", "text-anchor": "end" }, "epoch"));
  if (kept !== null) {
    chart.append(svg("line", { x1: x(kept), x2: x(kept), y1: top, y2: height - bottom, class: "kept" }));
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
      "stroke-width": 2, ...(s.dashed ? { "stroke-dasharray": "2 2" } : {}) }));
    chart.append(svg("text", { x: legendX + 18, y: legendY, fill: s.colour, class: "legend" }, s.name));
    legendX += entryWidth;
  }
  series.forEach((s) => {
    const points = s.values.map((v, i) => (v === null || v === undefined ? null : `${x(epochs[i])},${y(v)}`)).filter(Boolean);
    chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: s.colour, "stroke-width": 2 }));
  });
  return chart;
}

function splitSeries(history, key, name, colour) {
  if (!history.some((r) => r[key] !== undefined)) return [];
  return [{ name, values: history.map((r) => r[key] ?? null), colour }];
}

export class ModelCard {
  constructor() {
    this.box = document.getElementById("card");
  }

  runChanged(state) {
    const card = state.card;
    const metrics = card.metrics || {};
    const history = card.history || [];
    const epochs = history.map((row) => row.epoch);
    const parts = [
      el("h3", { text: `${card.model.name} on ${card.dataset.name || "?"}` }),
      el("p", { class: "big", id: "card-accuracy", text: metrics.test_accuracy === undefined ? "no test accuracy recorded"
        : `test accuracy ${percent(metrics.test_accuracy)} on ${card.dataset.test ?? "?"} held-out images` }),
      el("p", { class: "note", text: `${card.parameters.toLocaleString()} parameters · input ${card.input_shape.join("×")} · ` +
        `${card.class_names.length} classes · trained ${metrics.epochs ?? history.length} epochs in ${fmt(metrics.train_seconds ?? 0, 1)} s` }),
      this.stagesTable(card),
      el("details", { class: "stage-explanations", id: "card-explanations" },
        el("summary", { text: "what each stage does" }),
        el("dl", {}, ...card.stages.flatMap((s) => [el("dt", { text: s.name }), el("dd", { text: stageExplanation(s, card) })]))),
    ];
    if (history.length) {
      const kept = history.find((row) => row.selected)?.epoch ?? null;
      const curves = (what) => [
        ...splitSeries(history, `train_${what}`, "train", SPLIT_COLOURS.train),
        ...splitSeries(history, `val_${what}`, "validation (chooses)", SPLIT_COLOURS.val),
        ...splitSeries(history, `test_${what}`, "test (reported)", SPLIT_COLOURS.test),
      ];
      parts.push(el("div", { class: "charts", id: "card-charts" },
        lineChart("accuracy per epoch", epochs, curves("accuracy"), { asPercent: true, kept }),
        lineChart("loss per epoch", epochs, curves("loss"), { min: 0, kept })));
    }
    parts.push(this.training(metrics, card.validation || {}, card.diagnostics || []));
    if (metrics.confusion) parts.push(this.confusion(metrics.confusion, card.class_names));
    if (metrics.per_class) parts.push(this.perClass(metrics.per_class));
    this.box.replaceChildren(...parts);
  }

  // Which epoch is the model, on which images that was decided, and what training found wrong.
  training(metrics, validation, diagnostics) {
    const facts = [];
    if (metrics.selected_epoch) facts.push(el("p", { id: "card-selection", text: `the model is epoch ${metrics.selected_epoch}: ${metrics.selection}` }));
    if (validation.rule) {
      facts.push(el("p", { class: "note", text: `${validation.train} training images, ${validation.validation} validation images ` +
        `(${validation.rule}); the test split is only reported` }));
    }
    if (metrics.stopped) facts.push(el("p", { class: "note", text: metrics.stopped }));
    const list = diagnostics.length
      ? el("ul", { class: "diagnostics" }, ...diagnostics.map((d) => el("li", { class: d.severity, "data-kind": d.kind },
        el("strong", { text: `${d.severity}: ` }), el("span", { text: d.message }), el("span", { class: "note", text: ` → ${d.action}` }))))
      : el("p", { class: "note", text: diagnostics === null ? "" : "diagnostics: nothing unusual" });
    return el("section", { id: "card-training" }, el("h4", { text: "how training went" }), ...facts, list);
  }

  // one row per stage; hovering a row says what the stage does (explain-text.js)
  stagesTable(card) {
    const head = ["stage", "layer", "output shape", "parameters", "receptive field"];
    return el("div", { class: "scroll-x" }, el("table", { class: "plain stages", id: "card-stages" },
      el("caption", { text: "stages (receptive field: input pixels one output cell sees; hover a row for what it does)" }),
      el("tr", {}, ...head.map((t) => el("th", { text: t }))),
      ...card.stages.map((s) => el("tr", { title: stageExplanation(s, card) }, el("td", { text: s.name }), el("td", { text: s.kind }),
        el("td", { text: s.shape.join("×") }), el("td", { text: s.parameters.toLocaleString() }),
        el("td", { text: s.receptive_field ? s.receptive_field.join("×") : "whole image" })))));
  }

  confusion(matrix, names) {
    const largest = Math.max(...matrix.flat());
    return el("div", { class: "scroll-x" }, el("table", { class: "plain confusion", id: "card-confusion" },
      el("caption", { text: "confusion matrix (rows: true class, columns: predicted)" }),
      el("tr", {}, el("th"), ...names.map((n) => el("th", { text: n }))),
      ...matrix.map((row, r) => el("tr", {}, el("th", { text: names[r] }), ...row.map((v, c) => {
        const shade = Math.round(255 - 180 * Math.sqrt(v / (largest || 1)));
        const colour = r === c ? `rgb(${shade},${255},${shade})` : `rgb(255,${shade},${shade})`;
        return el("td", { text: v ? String(v) : "·", style: `background:${v ? colour : "white"}` });
      })))));
  }

  perClass(rows) {
    return el("table", { class: "plain" },
      el("caption", { text: "per class (held-out split)" }),
      el("tr", {}, ...["class", "precision", "recall", "images"].map((t) => el("th", { text: t }))),
      ...rows.map((r) => el("tr", {}, el("td", { text: r.class }), el("td", { text: percent(r.precision) }),
        el("td", { text: percent(r.recall) }), el("td", { text: String(r.support) }))));
  }
}
