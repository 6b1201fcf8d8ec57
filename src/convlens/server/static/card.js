// Model card: stages table, training curves, test accuracy, per-class scores, confusion matrix.
// Everything comes from the checkpoint's metadata and the inspect module, via GET /api/runs/ID.

import { el, fmt, percent } from "./draw.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

// A line chart of per-epoch series; `series` = [{name, values, colour}], values may be null.
function lineChart(title, epochs, series, { min = null, max = null, asPercent = false } = {}) {
  const width = 420, height = 220, left = 48, right = 12, top = 24, bottom = 32;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const low = min ?? Math.min(...all);
  const high = max ?? Math.max(...all);
  const x = (i) => left + (epochs.length > 1 ? (i / (epochs.length - 1)) * (width - left - right) : 0);
  const y = (v) => top + (1 - (v - low) / (high - low || 1)) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  chart.append(svg("text", { x: left, y: 16, class: "chart-title" }, title));
  for (const tick of [low, (low + high) / 2, high]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" },
      asPercent ? `${(100 * tick).toFixed(0)}%` : fmt(tick, 2)));
  }
  epochs.forEach((epoch, i) => chart.append(svg("text", { x: x(i), y: height - 12, class: "tick", "text-anchor": "middle" }, String(epoch))));
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => (v === null || v === undefined ? null : `${x(i)},${y(v)}`)).filter(Boolean);
    chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: s.colour, "stroke-width": 2 }));
    chart.append(svg("text", { x: width - right - 110, y: top + 14 + 14 * k, fill: s.colour, class: "legend" }, s.name));
  });
  return chart;
}

function validationSeries(history, key) {
  if (!history.some((r) => r[key] !== undefined)) return [];
  return [{ name: "validation", values: history.map((r) => r[key] ?? null), colour: "#20a060" }];
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
      this.stagesTable(card.stages),
    ];
    if (history.length) {
      parts.push(el("div", { class: "charts" },
        lineChart("accuracy per epoch", epochs, [
          { name: "train", values: history.map((r) => r.train_accuracy), colour: "#e07020" },
          ...validationSeries(history, "val_accuracy"),
          { name: "test", values: history.map((r) => r.test_accuracy), colour: "#2060c0" },
        ], { asPercent: true }),
        lineChart("loss per epoch", epochs, [
          { name: "train", values: history.map((r) => r.train_loss), colour: "#e07020" },
          ...validationSeries(history, "val_loss"),
          { name: "test", values: history.map((r) => r.test_loss), colour: "#2060c0" },
        ], { min: 0 })));
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

  stagesTable(stages) {
    const head = ["stage", "layer", "output shape", "parameters", "receptive field"];
    return el("table", { class: "plain stages", id: "card-stages" },
      el("caption", { text: "stages (receptive field: input pixels one output cell sees)" }),
      el("tr", {}, ...head.map((t) => el("th", { text: t }))),
      ...stages.map((s) => el("tr", {}, el("td", { text: s.name }), el("td", { text: s.kind }),
        el("td", { text: s.shape.join("×") }), el("td", { text: s.parameters.toLocaleString() }),
        el("td", { text: s.receptive_field ? s.receptive_field.join("×") : "whole image" }))));
  }

  confusion(matrix, names) {
    const largest = Math.max(...matrix.flat());
    return el("table", { class: "plain confusion", id: "card-confusion" },
      el("caption", { text: "confusion matrix (rows: true class, columns: predicted)" }),
      el("tr", {}, el("th"), ...names.map((n) => el("th", { text: n }))),
      ...matrix.map((row, r) => el("tr", {}, el("th", { text: names[r] }), ...row.map((v, c) => {
        const shade = Math.round(255 - 180 * Math.sqrt(v / (largest || 1)));
        const colour = r === c ? `rgb(${shade},${255},${shade})` : `rgb(255,${shade},${shade})`;
        return el("td", { text: v ? String(v) : "·", style: `background:${v ? colour : "white"}` });
      }))));
  }

  perClass(rows) {
    return el("table", { class: "plain" },
      el("caption", { text: "per class (held-out split)" }),
      el("tr", {}, ...["class", "precision", "recall", "images"].map((t) => el("th", { text: t }))),
      ...rows.map((r) => el("tr", {}, el("td", { text: r.class }), el("td", { text: percent(r.precision) }),
        el("td", { text: percent(r.recall) }), el("td", { text: String(r.support) }))));
  }
}
