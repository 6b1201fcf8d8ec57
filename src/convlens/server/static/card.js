// Model card: stages table, training curves, test accuracy, per-class scores, confusion matrix.
// Everything comes from the checkpoint's metadata and the inspect module, via GET /api/runs/ID.

import { getJSON } from "./api.js";
import { SPLIT_COLOURS, lineChart } from "./chart.js";
import { el, fmt, percent } from "./draw.js";
import { stageExplanation } from "./explain-text.js";

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
      card.task === "segmentation" ? this.segmentationScores(card, metrics)
        : el("p", { class: "big", id: "card-accuracy", text: metrics.test_accuracy === undefined ? "no test accuracy recorded"
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
    if (metrics.confusion) parts.push(this.confusion(metrics.confusion, card.class_names, card.confusion_limits));
    if (metrics.per_class_iou) parts.push(this.perClassIou(metrics.per_class_iou));
    else if (metrics.per_class) parts.push(this.perClass(metrics.per_class));
    this.box.replaceChildren(...parts);
    this.addReads(state.run.id, card);
  }

  // A model traced to a graph (branches, merges): a "reads" column naming each stage's inputs,
  // from GET /network (the card itself does not carry them). A chain gets no column.
  async addReads(runId, card) {
    this.loading = runId;
    let wiring;
    try {
      wiring = await getJSON(`/api/runs/${encodeURIComponent(runId)}/network`);
    } catch {
      return; // the column is extra: the network view says why it cannot load
    }
    const table = this.box.querySelector("#card-stages");
    if (this.loading !== runId || !table || !wiring.stages.some((s) => s.inputs)) return;
    const inputs = new Map(wiring.stages.map((s) => [s.name, s.inputs]));
    const rows = table.querySelectorAll("tr");
    rows[0].append(el("th", { text: "reads" }));
    card.stages.forEach((stage, i) => {
      const reads = inputs.get(stage.name);
      rows[i + 1]?.append(el("td", { class: "stage-reads", text: reads ? reads.join(", ") : "",
        "data-reads": reads ? reads.join(" ") : "" }));
    });
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

  // Shaded from 0 to the server's limits (convlens.views.plots.colours.count_limits), like the report's.
  confusion(matrix, names, limits) {
    const largest = limits.high;
    return el("div", { class: "scroll-x" }, el("table", { class: "plain confusion", id: "card-confusion" },
      el("caption", { text: "confusion matrix (rows: true class, columns: predicted)" }),
      el("tr", {}, el("th"), ...names.map((n) => el("th", { text: n }))),
      ...matrix.map((row, r) => el("tr", {}, el("th", { text: names[r] }), ...row.map((v, c) => {
        const shade = Math.round(255 - 180 * Math.sqrt(v / (largest || 1)));
        const colour = r === c ? `rgb(${shade},${255},${shade})` : `rgb(255,${shade},${shade})`;
        return el("td", { text: v ? String(v) : "·", style: `background:${v ? colour : "white"}` });
      })))));
  }

  // A segmentation run is scored per pixel: mean IoU first (what training keeps the epoch by),
  // pixel accuracy and Dice beside it, all from the checkpoint's metrics.
  segmentationScores(card, metrics) {
    const found = metrics.test_mean_iou !== undefined;
    return el("p", { class: "big", id: "card-accuracy", "data-task": "segmentation",
      "data-mean-iou": found ? metrics.test_mean_iou : "",
      text: !found ? "segmentation: no test scores recorded" : `segmentation: mean IoU ${percent(metrics.test_mean_iou)} ` +
        `on ${card.dataset.test ?? "?"} held-out images (pixel accuracy ${percent(metrics.test_pixel_accuracy)}, ` +
        `Dice ${percent(metrics.test_dice)})` });
  }

  perClassIou(rows) {
    return el("table", { class: "plain", id: "card-iou" },
      el("caption", { text: "per class IoU (held-out split, pixels)" }),
      el("tr", {}, ...["class", "IoU", "Dice", "pixels", "predicted pixels"].map((t) => el("th", { text: t }))),
      ...rows.map((r) => el("tr", { "data-class": r.class, "data-iou": r.iou ?? "" }, el("td", { text: r.class }),
        el("td", { text: r.iou === null || r.iou === undefined ? "–" : percent(r.iou) }),
        el("td", { text: r.dice === null || r.dice === undefined ? "–" : percent(r.dice) }),
        el("td", { text: String(r.pixels) }), el("td", { text: String(r.predicted_pixels) }))));
  }

  perClass(rows) {
    return el("table", { class: "plain" },
      el("caption", { text: "per class (held-out split)" }),
      el("tr", {}, ...["class", "precision", "recall", "images"].map((t) => el("th", { text: t }))),
      ...rows.map((r) => el("tr", {}, el("td", { text: r.class }), el("td", { text: percent(r.precision) }),
        el("td", { text: percent(r.recall) }), el("td", { text: String(r.support) }))));
  }
}

export default ModelCard; // the view main.js constructs (convlens.server.views)
