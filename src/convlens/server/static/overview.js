// Network overview (after CNN Explainer): one column per stage and one row per channel index, all
// in one scroll box, so channel k of every stage sits on the same line; then the class
// probabilities. Clicking a cell opens its arithmetic, outlines the cells it reads in the stages
// before (network-links.js) and offers to animate its window (animate.js). Colours use the
// server's robust limits (convlens.views.maps), one range per stage or one per channel.

import { getJSON, postImage, unpack } from "./api.js";
import { colourFor, colourLegend, el, message, paintPlane, percent, probabilityBars } from "./draw.js";
import { showArithmetic } from "./arithmetic.js";
import { stageExplanation } from "./explain-text.js";
import { drawLinks } from "./network-links.js";
import { BranchLanes, branchEdges, inputsByStage, readsText } from "./network-branches.js";
import { KernelAnimation } from "./animate.js";
import { hasNeuronPanel, neuronLink } from "./neuron-link.js";

const MAP_PIXELS = 44; // on-screen size of the largest side of every feature map, as in CNN Explainer
const FIRST_ROWS = 10; // channels shown until "show all" (CNN Explainer shows 10 per layer)
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export class Overview {
  constructor({ inputPanel }) {
    this.inputPanel = inputPanel;
    this.network = document.getElementById("network");
    this.network.classList.add("network-grid");
    this.probabilities = document.getElementById("probabilities");
    this.prediction = document.getElementById("prediction");
    this.panel = document.getElementById("arithmetic");
    this.selected = null; // {stage, channel, row, col}
    this.allRows = false;
    this.links = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    this.links.classList.add("network-links");
    this.animation = new KernelAnimation(el("div", { id: "animation" }));
    this.panel.before(this.animation.box);
    this.scale = el("select", { id: "colour-scale" }, new Option("one range per stage", "stage"),
      new Option("one range per channel", "channel"));
    this.scale.addEventListener("change", () => {
      this.redraw();
      this.offerAnimation(); // its maps in the new colours
    });
    this.count = el("span", { class: "network-count", id: "network-count" });
    this.showAll = el("button", { id: "show-all-channels" });
    this.showAll.addEventListener("click", () => {
      this.allRows = !this.allRows;
      this.redraw();
    });
    this.network.parentElement.before(el("div", { class: "network-controls" },
      el("label", {}, "colours: ", this.scale), this.count, this.showAll));
    window.addEventListener("resize", () => this.relink());
    // a pixel clicked on the Segment view: its output cell, so its windows are marked on every stage
    document.addEventListener("show-cell", (event) => {
      this.selected = event.detail;
      if (this.body) this.select(event.detail);
    });
  }

  // the receptive-field box on the input belongs to a cell of this view: shown with it only
  shown() {
    this.inputPanel.showOutline(true);
    this.lanes?.place(this.network); // laid out while hidden, the heads had no positions
  }

  hidden() {
    this.inputPanel.showOutline(false);
  }

  runChanged() {
    this.selected = null;
    this.wiring = null;
    this.lanes = null;
    this.body = null;
    this.panel.replaceChildren();
    this.animation.clear();
    this.network.replaceChildren();
  }

  // Nothing of the previous input stays beside the error: not its prediction, bars, arithmetic or
  // links. The selected cell is kept: the next input that works explains it again.
  fail(error) {
    this.body = null;
    this.prediction.replaceChildren();
    delete this.prediction.dataset.class;
    delete this.prediction.dataset.probability;
    this.probabilities.replaceChildren();
    this.panel.replaceChildren();
    this.animation.clear();
    delete this.network.dataset.source;
    this.count.textContent = "";
    delete this.count.dataset.hidden;
    message(this.network, error.message, "error");
  }

  async update(state) {
    const base = `/api/runs/${encodeURIComponent(state.run.id)}`;
    this.wiring ??= await getJSON(`${base}/network`); // fixed per run: which cells each cell reads
    const body = await postImage(`${base}/activations`, state.input);
    this.state = state;
    this.body = body;
    this.inputPanel.showSeen(body.input);
    this.redraw();
    this.network.dataset.source = body.source; // which input these maps belong to
    probabilityBars(this.probabilities, body.probabilities, state.card.class_names);
    this.probabilities.querySelectorAll(".bar-row").forEach((row, index) => {
      row.title = "click: how softmax turns the logits into this probability";
      row.dataset.index = index;
      row.addEventListener("click", () => this.select({ stage: "softmax", channel: index, row: 0, col: 0 }));
    });
    this.markBar();
    const best = body.top[0];
    if (!best) { // a segmentation run: a class per pixel, not one for the image
      this.prediction.replaceChildren(el("span", { class: "note", text: "a class per pixel: see the Segment tab" }));
      delete this.prediction.dataset.class;
      delete this.prediction.dataset.probability;
      if (this.selected) await this.select(this.selected);
      return;
    }
    this.prediction.replaceChildren(
      el("span", { class: "predicted-class", text: best.class }),
      el("span", { class: "predicted-probability", text: percent(best.probability) })
    );
    this.prediction.dataset.class = best.class;
    this.prediction.dataset.probability = best.probability;
    if (this.selected) await this.select(this.selected);
  }

  // The colour limits a map is drawn with: its stage's, or its own channel's.
  limitsOf(stage, channel) {
    return this.scale.value === "channel" && stage.channel_limits ? stage.channel_limits[channel] : stage.limits;
  }

  redraw() {
    if (!this.body) return;
    const top = this.network.scrollTop;
    const stages = this.body.stages.filter((stage) => stage.name !== "softmax");
    const most = Math.max(...stages.map((stage) => (stage.shape.length === 3 ? stage.shape[0] : 1)));
    const rows = this.allRows ? most : Math.min(FIRST_ROWS, most);
    // a graph's branches and merges get a lane row above the heads; a chain has none (headRow 1)
    this.inputs = inputsByStage(this.wiring);
    const names = stages.map((stage) => stage.name);
    const edges = branchEdges(names, this.inputs);
    const lanes = edges.length ? new BranchLanes(edges) : null;
    this.lanes = lanes;
    this.headRow = lanes ? 2 : 1;
    this.network.style.gridTemplateColumns = `auto repeat(${stages.length}, auto)`;
    const labels = [...Array(rows).keys()].map((channel) =>
      el("div", { class: "channel-label", style: `grid-column: 1; grid-row: ${channel + this.headRow + 1}`, text: `ch ${channel}` }));
    const columns = stages.map((stage, i) => this.column(stage, i + 2, rows, names[i - 1]));
    this.network.replaceChildren(...(lanes ? [lanes.box] : []),
      el("div", { class: "channel-label corner", style: `grid-column: 1; grid-row: ${this.headRow}` }),
      ...labels, ...columns, this.links);
    this.network.dataset.rows = rows;
    this.network.style.setProperty("--lanes-height", lanes ? `${lanes.height}px` : "0px");
    const head = this.network.querySelector(".stage-head").offsetHeight + (lanes ? lanes.height : 0);
    for (const cell of this.network.querySelectorAll(".flat-cell")) cell.style.top = `${head}px`;
    lanes?.place(this.network);
    this.network.scrollTop = top;
    this.countHidden(stages, rows, most);
    this.mark();
  }

  countHidden(stages, rows, most) {
    const hidden = stages.filter((stage) => stage.shape.length === 3 && stage.shape[0] > rows);
    const maps = hidden.reduce((sum, stage) => sum + stage.shape[0] - rows, 0);
    this.count.dataset.hidden = maps;
    this.count.textContent = maps
      ? `showing channels 0–${rows - 1}: ${plural(maps, "map")} hidden (${hidden.map((s) => `${s.name} ${rows} of ${s.shape[0]}`).join(", ")})`
      : `all channels shown (${most} rows, one per channel index; scroll them together)`;
    this.showAll.hidden = most <= FIRST_ROWS;
    this.showAll.textContent = this.allRows ? `show the first ${FIRST_ROWS} channels` : `show all ${most} channels`;
  }

  stageHead(stage, gridColumn, rows, previous) {
    // what a graph's stage reads, in words too: the edges are not the only carrier
    const reads = readsText(stage.name, previous, this.inputs);
    const explained = stageExplanation(stage, this.state.card);
    const head = el("div", { class: reads ? "stage-head reads-branch" : "stage-head",
      style: `grid-column: ${gridColumn}; grid-row: ${this.headRow}`,
      title: reads ? `${explained} It ${reads}.`.trim() : explained },
      el("strong", { text: stage.name }), el("br"), el("span", { text: `${stage.kind} ${stage.shape.join("×")}` }));
    if (reads) {
      head.dataset.reads = this.inputs.get(stage.name).join(" ");
      head.append(el("span", { class: "stage-reads", text: reads }));
    }
    if (stage.shape.length === 3) {
      const total = stage.shape[0];
      const shown = Math.min(rows, total);
      head.append(el("span", { class: shown < total ? "stage-count hidden-maps" : "stage-count",
        "data-shown": shown, "data-total": total, text: shown < total ? `${shown} of ${total} maps` : plural(total, "map") }));
    }
    head.append(this.legend(stage, 0));
    return head;
  }

  // The colour bar of a stage; with one range per channel, that of the channel under the pointer.
  legend(stage, channel) {
    const perChannel = this.scale.value === "channel" && stage.channel_limits;
    return colourLegend(this.limitsOf(stage, channel), perChannel ? `ch ${channel}` : "");
  }

  column(stage, gridColumn, rows, previous) {
    const values = unpack(stage.output);
    const head = this.stageHead(stage, gridColumn, rows, previous);
    const column = el("div", { class: "stage", "data-stage": stage.name }, head);
    if (stage.shape.length === 3) {
      const [channels, height, width] = stage.shape;
      const zoom = MAP_PIXELS / Math.max(height, width);
      for (let c = 0; c < Math.min(rows, channels); c++) {
        const limits = this.limitsOf(stage, c);
        const canvas = paintPlane(el("canvas", { class: "fmap", title: `${stage.name} channel ${c}` }),
          values.data, c * height * width, height, width, colourFor(limits));
        canvas.style.width = `${Math.round(width * zoom)}px`;
        canvas.style.height = `${Math.round(height * zoom)}px`;
        canvas.dataset.channel = c;
        canvas.addEventListener("click", (e) => {
          const box = canvas.getBoundingClientRect();
          const row = Math.min(height - 1, Math.floor(((e.clientY - box.top) / box.height) * height));
          const col = Math.min(width - 1, Math.floor(((e.clientX - box.left) / box.width) * width));
          this.select({ stage: stage.name, channel: c, row, col });
        });
        if (stage.channel_limits) {
          canvas.addEventListener("mouseenter", () => head.querySelector(".colour-bar").replaceWith(this.legend(stage, c)));
        }
        column.append(el("div", { class: "map-cell", style: `grid-column: ${gridColumn}; grid-row: ${c + this.headRow + 1}` }, canvas));
      }
    } else {
      column.append(this.flatCell(stage, values, gridColumn, rows));
    }
    return column;
  }

  // A flat stage (flatten, linear): a strip of cells, one per unit, beside every row.
  flatCell(stage, values, gridColumn, rows) {
    const units = stage.shape[0];
    const perRow = units > 64 ? 28 : units > 16 ? 8 : 1;
    const lines = Math.ceil(units / perRow);
    const padded = new Float32Array(lines * perRow).fill(0);
    padded.set(values.data);
    const canvas = paintPlane(el("canvas", { class: "fmap flat", title: `${stage.name}: ${units} values` }),
      padded, 0, lines, perRow, colourFor(stage.limits));
    const zoom = perRow === 1 ? 14 : Math.max(2, Math.floor(84 / perRow));
    canvas.style.width = `${perRow * zoom}px`;
    canvas.style.height = `${lines * zoom}px`;
    canvas.addEventListener("click", (e) => {
      const box = canvas.getBoundingClientRect();
      const r = Math.floor(((e.clientY - box.top) / box.height) * lines);
      const c = Math.floor(((e.clientX - box.left) / box.width) * perRow);
      this.select({ stage: stage.name, channel: Math.min(units - 1, r * perRow + c), row: 0, col: 0 });
    });
    return el("div", { class: "map-cell flat-cell", style: `grid-column: ${gridColumn}; grid-row: ${this.headRow + 1} / span ${rows}` },
      canvas, perRow === 1 ? this.unitLabels(stage, zoom) : null);
  }

  // The logits (the last stage before softmax, one unit per class) carry their class names, one
  // beside each unit: which score is whose is the point of that column. Other stages: none.
  unitLabels(stage, zoom) {
    const names = this.state.card.class_names;
    const last = this.body.stages.filter((s) => s.name !== "softmax").at(-1);
    if (stage !== last || stage.shape[0] !== names.length) return null;
    return el("div", { class: "unit-labels" }, ...names.map((name, i) => el("span", { class: "unit-label",
      "data-unit": i, title: `${stage.name} unit ${i}: the score (logit) of class ${name}`, text: name,
      style: `height: ${zoom}px; line-height: ${zoom}px` })));
  }

  // Marks the selected cell's map and redraws the lines to the cells it reads.
  mark() {
    for (const node of this.network.querySelectorAll(".fmap.selected")) node.classList.remove("selected");
    const cell = this.selected;
    if (cell) {
      const maps = this.network.querySelectorAll(`.stage[data-stage="${cell.stage}"] canvas.fmap`);
      const chosen = [...maps].find((canvas) => canvas.dataset.channel === String(cell.channel)) ??
        (maps.length === 1 && maps[0].classList.contains("flat") ? maps[0] : null);
      chosen?.classList.add("selected");
    }
    this.markBar();
    this.relink();
  }

  // A softmax cell is a probability bar (beside the network, not in it): that bar is marked.
  markBar() {
    const cell = this.selected;
    for (const row of this.probabilities.querySelectorAll(".bar-row")) {
      row.classList.toggle("selected", cell?.stage === "softmax" && row.dataset.index === String(cell.channel));
    }
  }

  relink() {
    this.lanes?.place(this.network);
    drawLinks(this.network, this.links, this.wiring, this.selected);
  }

  async select(cell) {
    this.selected = cell;
    this.mark();
    this.offerAnimation();
    await this.explain(cell);
  }

  offerAnimation() {
    if (this.body && this.selected) {
      this.animation.offer(this.selected, this.body, this.wiring, (stage, channel) => this.limitsOf(stage, channel));
    }
  }

  async explain(cell) {
    try {
      const body = await postImage(`/api/runs/${encodeURIComponent(this.state.run.id)}/arithmetic`,
        this.state.input, cell);
      this.inputPanel.showSeen(body.input, body.receptive_field.whole_image ? null : body.receptive_field);
      showArithmetic(this.panel, body, this.state.card.class_names);
      if (hasNeuronPanel(this.state.card, cell.stage)) this.panel.prepend(neuronLink(cell.stage, cell.channel,
        `${cell.stage} channel ${cell.channel}: its kernel, top patches and what zeroing it changes ›`));
    } catch (error) {
      message(this.panel, error.message, "error");
    }
  }
}

export default Overview; // the view main.js constructs (convlens.server.views)
