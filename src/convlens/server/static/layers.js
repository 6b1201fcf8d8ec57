// What each layer learned: the kernels of a conv stage at a readable size (each weight on hover),
// one feature-visualization image per channel — for a stage linear in the pixels (conv1), what
// one unit of it responds to instead: its receptive field's exact optimum, the kernel's sign
// pattern — and (on click) the test images that excite that channel most. A stage without filters
// (ReLU, pooling, BatchNorm, flatten) shows what it does: the maps it receives next to the maps it
// makes, for the current input.

import { getJSON, postImage, unpack } from "./api.js";
import { colourFor, colourLegend, el, fmt, message, paintImage, paintPlane } from "./draw.js";
import { stageExplanation } from "./explain-text.js";
import { hasNeuronPanel, neuronLink } from "./neuron-link.js";

const SHOWN_INPUTS = 16;
const UNIT_PIXELS = 64; // on-screen size of the longest side of a unit optimum, pixelated // input channels of a filter drawn in its row
const OPERATION_CHANNELS = 8; // channels shown in input → output pairs
const PAIR_PIXELS = 84; // on-screen size of the largest side of an input map in a pair
const WITH_FILTERS = ["convolution", "block"]; // roles (convlens.inspect.layer_facts) that have kernels
const MOVES_VALUES = ["max_pool", "avg_pool", "global_pool", "flatten", "upsample"]; // only pick, average, blend or move values

// Shows the value under the pointer in `readout`: `describe(row, col)` names the cell and its value.
function hoverValues(canvas, readout, describe) {
  canvas.addEventListener("mousemove", (e) => {
    const box = canvas.getBoundingClientRect();
    const row = Math.min(canvas.height - 1, Math.floor(((e.clientY - box.top) / box.height) * canvas.height));
    const col = Math.min(canvas.width - 1, Math.floor(((e.clientX - box.left) / box.width) * canvas.width));
    readout.textContent = describe(row, col);
    canvas.title = readout.textContent;
  });
}

export class LayersView {
  constructor() {
    this.stage = document.getElementById("layers-stage");
    this.title = document.getElementById("layers-filters-title");
    this.filters = document.getElementById("layers-filters");
    this.features = document.getElementById("layers-features");
    this.top = document.getElementById("layers-top");
    this.stage.addEventListener("change", () => this.show());
  }

  runChanged(state) {
    this.state = state;
    this.run = state.run;
    const stages = state.card.stages.filter((s) => (s.shape.length === 3 || s.layer.role === "flatten") && s.layer.role !== "normalize");
    this.stage.replaceChildren(...stages.map((s) => new Option(
      `${s.name} (${s.kind}, ${s.shape.length === 3 ? `${s.shape[0]} channels` : `${s.shape[0]} values`})`, s.name)));
    this.loaded = null;
    this.inputs = null; // a graph's stage → the stages it reads (GET /network), fetched when needed
    if (!this.filters.closest("section").hidden) this.show();
  }

  // The stage a stage without filters is shown next to: its first input in a graph (a merge
  // names the others in its note), the stage before it in a chain.
  async before(base, stages, at) {
    this.inputs ??= await getJSON(`${base}/network`).then((wiring) =>
      new Map(wiring.stages.filter((s) => s.inputs).map((s) => [s.name, s.inputs]))).catch(() => new Map());
    const reads = this.inputs.get(stages[at].name);
    const first = reads && stages.find((s) => s.name === reads[0]);
    return { previous: first ?? stages[at - 1], others: reads?.slice(1) ?? [] };
  }

  shown(state) {
    this.state = state;
    const token = `${this.run?.id}/${this.stage.value}`;
    // a stage without filters shows maps of the input: redrawn when the input changed meanwhile
    if (this.loaded !== token || (this.operationInput && this.operationInput !== state.input)) this.show();
  }

  async show() {
    if (!this.run || !this.stage.value) return;
    const base = `/api/runs/${encodeURIComponent(this.run.id)}`;
    const stage = this.stage.value;
    const token = `${this.run.id}/${stage}`;
    this.loaded = token;
    const current = () => this.loaded === token; // a newer choice wins over a slower answer
    this.top.replaceChildren();
    document.getElementById("layers-features-note").textContent = "";
    document.getElementById("layers-features-title").textContent = "Feature visualization";
    const stages = this.state.card.stages;
    const at = stages.findIndex((s) => s.name === stage);
    const hasFilters = WITH_FILTERS.includes(stages[at].layer.role);
    this.operationInput = null;
    this.title.textContent = hasFilters ? "Filters" : `What ${stage} does`;
    try {
      if (hasFilters) {
        const body = await getJSON(`${base}/filters?stage=${encodeURIComponent(stage)}`);
        if (current()) this.drawFilters(body);
      } else {
        const { previous, others } = await this.before(base, stages, at);
        await this.drawOperation(base, stages[at], previous, current, others);
      }
    } catch (error) {
      if (current()) message(this.filters, error.message, "error");
    }
    if (stages[at].shape.length !== 3) {
      message(this.features, "a flat stage has no channels to visualize; see the stage before it");
      return;
    }
    message(this.features, "optimizing an input image for every channel…");
    try {
      const body = await getJSON(`${base}/features?stage=${encodeURIComponent(stage)}`);
      if (current()) this.drawFeatures(body, base);
    } catch (error) {
      if (current()) message(this.features, error.message, "error");
    }
  }

  drawFilters(body) {
    const readout = el("p", { class: "kernel-readout", id: "kernel-readout", text: "point at a weight to read it" });
    const parts = [];
    for (const conv of body.convolutions) {
      const weight = unpack(conv.weight);
      const [outC, inC, kh, kw] = weight.shape;
      const grid = el("div", { class: inC === 1 ? "filter-grid wrap" : "filter-grid" });
      const shownIn = Math.min(inC, SHOWN_INPUTS);
      const colour = colourFor(conv.limits); // weights are signed: centred on 0
      for (let o = 0; o < outC; o++) {
        const row = el("div", { class: "filter-row", title: `output channel ${o}${conv.bias ? `, bias ${fmt(conv.bias[o], 3)}` : ""}` },
          el("span", { class: "filter-index", text: String(o) }));
        for (let i = 0; i < shownIn; i++) {
          const offset = (o * inC + i) * kh * kw;
          const canvas = paintPlane(el("canvas", { class: "kernel readable", "data-out": o, "data-in": i }),
            weight.data, offset, kh, kw, colour);
          hoverValues(canvas, readout, (r, c) => `${conv.name} filter ${o}, input channel ${i}, row ${r} col ${c}: ` +
            `weight ${fmt(weight.data[offset + r * kw + c], 4)}`);
          row.append(canvas);
        }
        grid.append(row);
      }
      parts.push(el("h4", { text: `${conv.name}: ${outC} filters of ${inC}×${kh}×${kw}` +
        (inC > shownIn ? ` (first ${shownIn} input channels shown)` : "") }), colourLegend(conv.limits, "weight"), grid);
    }
    this.filters.replaceChildren(readout, ...parts);
  }

  // What a stage without kernels does (in words, explain-text.js), and the maps it receives next to
  // the maps it makes, for the page's current input.
  async drawOperation(base, stage, previous, current, others = []) {
    const input = this.state.input;
    this.operationInput = input;
    const text = el("p", { class: "operation-text", id: "operation-text", text: stageExplanation(stage, this.state.card) });
    if (!input) {
      this.filters.replaceChildren(text);
      return;
    }
    const body = await postImage(`${base}/activations`, input);
    if (!current()) return;
    const before = body.stages.find((s) => s.name === previous.name);
    const after = body.stages.find((s) => s.name === stage.name);
    const sameColours = MOVES_VALUES.includes(stage.layer?.role);
    const readout = el("p", { class: "kernel-readout", id: "operation-readout", text: "point at a cell to read its value" });
    const channels = Math.min(OPERATION_CHANNELS, before.shape.length === 3 ? before.shape[0] : 1);
    const cell = before.shape.length === 3 ? Math.max(2, Math.floor(PAIR_PIXELS / Math.max(...before.shape.slice(1)))) : 6;
    // pooling and flatten only pick or move values: one range, so a kept value keeps its colour
    const inputLimits = sameColours ? after.limits : before.limits;
    const pairs = [];
    for (let c = 0; c < channels; c++) {
      const parts = [this.plane(before, c, cell, readout, inputLimits)];
      if (after.shape.length === 3) {
        parts.push(el("span", { class: "arrow", text: "→" }), this.plane(after, c, cell, readout, after.limits));
      }
      pairs.push(el("figure", { class: "operation-pair", "data-channel": c }, ...parts,
        el("figcaption", { text: `ch ${c}` })));
    }
    const flat = after.shape.length === 1 ? [el("h4", { text: `${after.name}: all ${after.shape[0]} values in one row, wrapped` }),
      this.strip(after, readout)] : [];
    this.filters.replaceChildren(
      text,
      el("p", { class: "note", text: `${before.name} (left) → ${after.name} (right), for the current input (${body.source}); ` +
        `the first ${channels} channels${others.length ? `; ${after.name} also reads ${others.join(" and ")}` : ""}` }),
      el("div", {}, ...(sameColours ? [colourLegend(after.limits, `${before.name} and ${after.name}`)]
        : [colourLegend(before.limits, before.name), " ", colourLegend(after.limits, after.name)])),
      readout, el("div", { class: "operation-pairs" }, ...pairs), ...flat);
  }

  // One channel of a stage's output, `cell` pixels per value, its values on hover.
  plane(stage, channel, cell, readout, limits) {
    const [, height, width] = stage.shape;
    const values = unpack(stage.output);
    const offset = channel * height * width;
    const canvas = paintPlane(el("canvas", { "data-stage": stage.name }), values.data, offset, height, width, colourFor(limits));
    canvas.style.width = `${width * cell}px`;
    canvas.style.height = `${height * cell}px`;
    hoverValues(canvas, readout, (r, c) => `${stage.name} ch ${channel}, row ${r} col ${c}: ${fmt(values.data[offset + r * width + c], 4)}`);
    return canvas;
  }

  strip(stage, readout) {
    const units = stage.shape[0];
    const perRow = Math.min(units, 32);
    const rows = Math.ceil(units / perRow);
    const values = unpack(stage.output);
    const padded = new Float32Array(rows * perRow).fill(NaN);
    padded.set(values.data);
    const canvas = paintPlane(el("canvas", { "data-stage": stage.name }), padded, 0, rows, perRow, colourFor(stage.limits));
    canvas.style.width = `${perRow * 12}px`;
    canvas.style.height = `${rows * 12}px`;
    canvas.classList.add("flat-strip");
    hoverValues(canvas, readout, (r, c) => (r * perRow + c < units
      ? `${stage.name} unit ${r * perRow + c}: ${fmt(values.data[r * perRow + c], 4)}` : ""));
    return canvas;
  }

  drawFeatures(body, base) {
    if (body.units) {
      this.drawUnits(body, base);
      return;
    }
    const images = unpack(body.images);
    const [count, channels, height, width] = images.shape;
    const size = channels * height * width;
    const tiles = body.channels.map((channel, k) => {
      const one = { shape: [channels, height, width], data: images.data.subarray(k * size, (k + 1) * size) };
      const canvas = paintImage(el("canvas", { class: "feature" }), one);
      const tile = el("figure", { class: "feature-tile", "data-channel": channel,
        title: `channel ${channel}: mean activation ${fmt(body.activation[k], 3)}` }, canvas,
      el("figcaption", { text: `#${channel}` }));
      tile.addEventListener("click", () => this.showTop(base, body.stage, channel, tile));
      return tile;
    });
    this.features.replaceChildren(...tiles);
    document.getElementById("layers-features-note").textContent = `${count} channels, each image optimized for ` +
      `${body.steps} steps to excite its channel; click one for the test images that excite it most`;
  }

  // A stage affine in the pixels: its whole-image optimum is a nearly flat square, so each tile shows
  // what one unit responds to — its receptive field's pixels, enlarged (the server's crop).
  drawUnits(body, base) {
    const tiles = body.units.map((unit) => {
      const crop = unpack(unit.crop);
      const [channels, height, width] = crop.shape;
      const zoom = Math.max(1, Math.floor(UNIT_PIXELS / Math.max(height, width)));
      const canvas = paintImage(el("canvas", { class: "feature unit-optimum" }), crop);
      canvas.style.width = `${width * zoom}px`;
      canvas.style.height = `${height * zoom}px`;
      const [top, left, bottom, right] = unit.window;
      const tile = el("figure", { class: "feature-tile unit-tile", "data-channel": unit.channel,
        "data-window": unit.window.join(","), "data-activation": unit.activation, "data-input-channels": channels,
        title: `channel ${unit.channel}: the unit at (${unit.cell.join(", ")}) sees input rows ${top}..${bottom - 1}, ` +
          `cols ${left}..${right - 1}; this pattern drives it to ${fmt(unit.activation, 3)}, its highest` },
      canvas, el("figcaption", { text: `#${unit.channel}` }));
      tile.addEventListener("click", () => this.showTop(base, body.stage, unit.channel, tile));
      return tile;
    });
    this.features.replaceChildren(...tiles);
    const [channels, height, width] = unpack(body.units[0].crop).shape;
    const colours = channels === 3 ? "each colour full where its weight is positive, off where negative"
      : "white where the weight is positive, black where negative";
    document.getElementById("layers-features-title").textContent = `What one unit of ${body.stage} responds to`;
    document.getElementById("layers-features-note").textContent = `${body.stage} is linear in the pixels, so the ` +
      `input that excites one of its units most is the sign pattern of its kernel: ${colours}; the ` +
      `whole-image optimum would be a nearly flat square. Each tile: the ${height}×${width} pixels the ` +
      "centre unit sees, enlarged; click one for the test images that excite its channel most";
  }

  async showTop(base, stage, channel, tile) {
    for (const node of this.features.querySelectorAll(".selected")) node.classList.remove("selected");
    tile.classList.add("selected");
    try {
      const body = await getJSON(`${base}/top-images?stage=${encodeURIComponent(stage)}&channel=${channel}`);
      if (body.dead) {
        this.top.replaceChildren(el("h4", { text: `${stage} channel ${channel}` }), el("p", { class: "note", text: body.dead }));
        return;
      }
      this.top.replaceChildren(el("h4", { text: `test images that excite ${stage} channel ${channel} most` }),
        ...body.images.map((item) => el("figure", { class: "feature-tile" },
          paintImage(el("canvas", { class: "feature" }), unpack(item.pixels)),
          el("figcaption", { text: `${item.class ?? `test image ${item.index}`} (${fmt(item.score, 2)})` }))));
    } catch (error) {
      message(this.top, error.message, "error");
    }
    if (hasNeuronPanel(this.state.card, stage)) {
      this.top.prepend(neuronLink(stage, channel, `open ${stage} channel ${channel} in the neuron panel ›`));
    }
  }
}

export default LayersView; // the view main.js constructs (convlens.server.views)
