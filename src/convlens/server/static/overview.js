// Network overview (after CNN Explainer): one column per stage with every channel's feature
// map, then the class probabilities. Clicking a cell opens its arithmetic.

import { postImage, unpack } from "./api.js";
import { colourFor, colourLegend, colourLimits, el, message, paintPlane, percent, probabilityBars } from "./draw.js";
import { showArithmetic } from "./arithmetic.js";

const MAP_PIXELS = 44; // on-screen size of the largest side of every feature map, as in CNN Explainer

export class Overview {
  constructor(inputPanel) {
    this.inputPanel = inputPanel;
    this.network = document.getElementById("network");
    this.probabilities = document.getElementById("probabilities");
    this.prediction = document.getElementById("prediction");
    this.panel = document.getElementById("arithmetic");
    this.selected = null; // {stage, channel, row, col}
  }

  runChanged() {
    this.selected = null;
    this.panel.replaceChildren();
    this.network.replaceChildren();
  }

  fail(error) {
    message(this.network, error.message, "error");
  }

  async update(state) {
    const body = await postImage(`/api/runs/${encodeURIComponent(state.run.id)}/activations`, state.input);
    this.state = state;
    this.inputPanel.showSeen(body.input);
    this.draw(body, state);
    this.network.dataset.source = body.source; // which input these maps belong to
    probabilityBars(this.probabilities, body.probabilities, state.card.class_names);
    this.probabilities.querySelectorAll(".bar-row").forEach((row, index) => {
      row.title = "click: how softmax turns the logits into this probability";
      row.addEventListener("click", () => this.select({ stage: "softmax", channel: index, row: 0, col: 0 }, null));
    });
    const best = body.top[0];
    this.prediction.replaceChildren(
      el("span", { class: "predicted-class", text: best.class }),
      el("span", { class: "predicted-probability", text: percent(best.probability) })
    );
    this.prediction.dataset.class = best.class;
    this.prediction.dataset.probability = best.probability;
    if (this.selected) await this.explain(this.selected);
  }

  draw(body, state) {
    const columns = body.stages.filter((stage) => stage.name !== "softmax").map((stage) => this.column(stage));
    this.network.replaceChildren(...columns);
  }

  column(stage) {
    const values = unpack(stage.output);
    // one scale per stage: diverging around 0 when it has negative values, sequential otherwise (ReLU, pooling)
    const limits = colourLimits(values.data);
    const colour = colourFor(limits);
    const header = el("div", { class: "stage-head" },
      el("strong", { text: stage.name }), el("br"), el("span", { text: `${stage.kind} ${stage.shape.join("×")}` }));
    const column = el("div", { class: "stage", "data-stage": stage.name }, header, colourLegend(limits));
    const maps = el("div", { class: "maps" });
    if (stage.shape.length === 3) {
      const [channels, height, width] = stage.shape;
      const zoom = MAP_PIXELS / Math.max(height, width);
      for (let c = 0; c < channels; c++) {
        const canvas = paintPlane(el("canvas", { class: "fmap", title: `${stage.name} channel ${c}` }),
          values.data, c * height * width, height, width, colour);
        canvas.style.width = `${Math.round(width * zoom)}px`;
        canvas.style.height = `${Math.round(height * zoom)}px`;
        canvas.dataset.channel = c;
        canvas.addEventListener("click", (e) => {
          const box = canvas.getBoundingClientRect();
          const row = Math.min(height - 1, Math.floor(((e.clientY - box.top) / box.height) * height));
          const col = Math.min(width - 1, Math.floor(((e.clientX - box.left) / box.width) * width));
          this.select({ stage: stage.name, channel: c, row, col }, canvas);
        });
        maps.append(canvas);
      }
    } else {
      // a flat stage (flatten, linear): a strip of cells, 8 per row, one per unit
      const units = stage.shape[0];
      const perRow = units > 64 ? 28 : units > 16 ? 8 : 1;
      const rows = Math.ceil(units / perRow);
      const padded = new Float32Array(rows * perRow).fill(0);
      padded.set(values.data);
      const canvas = paintPlane(el("canvas", { class: "fmap flat", title: `${stage.name}: ${units} values` }),
        padded, 0, rows, perRow, colour);
      const zoom = perRow === 1 ? 14 : Math.max(2, Math.floor(84 / perRow));
      canvas.style.width = `${perRow * zoom}px`;
      canvas.style.height = `${rows * zoom}px`;
      canvas.addEventListener("click", (e) => {
        const box = canvas.getBoundingClientRect();
        const r = Math.floor(((e.clientY - box.top) / box.height) * rows);
        const c = Math.floor(((e.clientX - box.left) / box.width) * perRow);
        const unit = Math.min(units - 1, r * perRow + c);
        this.select({ stage: stage.name, channel: unit, row: 0, col: 0 }, canvas);
      });
      maps.append(canvas);
    }
    column.append(maps);
    return column;
  }

  async select(cell, canvas) {
    this.selected = cell;
    for (const node of this.network.querySelectorAll(".fmap.selected")) node.classList.remove("selected");
    canvas?.classList.add("selected");
    await this.explain(cell);
  }

  async explain(cell) {
    try {
      const body = await postImage(`/api/runs/${encodeURIComponent(this.state.run.id)}/arithmetic`,
        this.state.input, cell);
      this.inputPanel.showSeen(body.input, body.receptive_field.whole_image ? null : body.receptive_field);
      showArithmetic(this.panel, body, this.state.card.class_names);
    } catch (error) {
      message(this.panel, error.message, "error");
    }
  }
}
