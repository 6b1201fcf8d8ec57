// The learning playground's network diagram: columns of tiles (the features, each hidden layer,
// the output), one line per weight behind them, and a small square per neuron for its bias.
// Hover a line or a square to read the number; click it to type a new one, which the server
// sets in its own network (the page then redraws from the server's answer, as after a step).

import { unpack } from "./api.js";
import { colourFor, diverging, el, fmt } from "./draw.js";
import { outputColour, paint } from "./playground2d-output.js";

const SVG = "http://www.w3.org/2000/svg";
// Weights on an absolute scale (as the TF Playground): a line's colour saturates at |w| = 1 and
// its width grows up to |w| = 2; zero is a hairline of the neutral white. A scale relative to the
// largest weight would draw a dead network (every weight near 0) as boldly as a live one.
const WEIGHT_COLOUR_FULL = 1;
const WEIGHT_WIDTH_FULL = 2;
const BIAS_COLOUR_FULL = 1; // biases on the same absolute scale as the weights

const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

export class NetworkDiagram {
  // `actions`: change(settings) starts a new network; edit(kind, body) sets a weight or a bias.
  constructor(box, section, actions) {
    this.box = box;
    this.actions = actions;
    this.tiles = []; // per layer (0: the chosen features), the canvases of its neurons
    this.lines = []; // per weight matrix, per [neuron][source], {line, hit}
    this.biasMarks = []; // per layer of neurons (0: the first hidden layer), its bias squares
    this.names = []; // per layer, a readable name of each of its neurons
    this.tooltip = el("div", { class: "pg2-tooltip", role: "status", hidden: "" });
    this.editor = el("input", { class: "pg2-editor", type: "number", step: "any", hidden: "",
      "aria-label": "new value" });
    this.editor.addEventListener("keydown", (event) => this.editorKey(event));
    this.editor.addEventListener("blur", () => { this.editor.hidden = true; });
    section.append(this.tooltip, this.editor);
  }

  // Rebuild the columns for `settings` (features chosen, hidden widths) and `start` (all the
  // feature maps): called after every new network.
  build(settings, options, start) {
    const { features: chosen, hidden } = settings;
    const change = this.actions.change;
    const size = start.feature_maps.shape[1];
    const featureValues = unpack(start.feature_maps).data;
    const svg = document.createElementNS(SVG, "svg");
    svg.classList.add("pg2-lines");
    const featureColumn = el("div", { class: "pg2-column" }, el("h3", { text: "Features" }));
    const featureTiles = [];
    const featureNames = [];
    Object.entries(options.features).forEach(([id, label], index) => {
      const values = featureValues.subarray(index * size * size, (index + 1) * size * size);
      const canvas = el("canvas", { class: "pg2-tile", "data-feature": id });
      paint(canvas, values, size, colourFor(start.feature_limits[index]));
      const used = chosen.includes(id);
      featureColumn.append(el("div", { class: used ? "pg2-feature used" : "pg2-feature",
        title: used ? "click to drop this input" : "click to feed this input",
        onclick: () => change({ features: used ? chosen.filter((f) => f !== id) : [...chosen, id] }) },
      canvas, el("span", { text: label })));
      if (used) { featureTiles.push(canvas); featureNames.push(label); }
    });
    this.tiles = [featureTiles];
    this.names = [featureNames];
    this.biasMarks = [];
    const columns = [featureColumn];
    const layerButtons = el("div", { class: "pg2-layer-buttons" },
      el("button", { text: "+", title: "add a hidden layer", id: "pg2-add-layer",
        onclick: () => change({ hidden: [...hidden, 2] }) }),
      el("button", { text: "−", title: "remove the last hidden layer", id: "pg2-remove-layer",
        onclick: () => change({ hidden: hidden.slice(0, -1) }) }),
      el("span", { text: plural(hidden.length, "hidden layer") }));
    hidden.forEach((width, layer) => {
      const widen = (delta) => change({ hidden: hidden.map((w, i) => (i === layer ? w + delta : w)) });
      const column = el("div", { class: "pg2-column", "data-layer": layer + 1 },
        el("div", { class: "pg2-neuron-buttons" },
          el("button", { text: "+", title: "add a neuron", onclick: () => widen(1) }),
          el("button", { text: "−", title: "remove a neuron", onclick: () => widen(-1) })),
        el("h3", { text: plural(width, "neuron") }));
      column.append(...this.neurons(layer, width, layer + 1, (n) => `neuron ${n + 1} of layer ${layer + 1}`));
      columns.push(column);
    });
    columns.push(el("div", { class: "pg2-column" }, el("h3", { text: "Output" }),
      ...this.neurons(hidden.length, 1, "output", () => "the output")));
    const row = el("div", { class: "pg2-columns" }, ...columns);
    this.box.replaceChildren(layerButtons, el("div", { class: "pg2-stage" }, svg, row));
    this.svg = svg;
    this.lines = this.tiles.slice(1).map((targets, layer) => targets.map((_, neuron) => this.tiles[layer].map((__, source) => {
      const line = document.createElementNS(SVG, "line");
      line.classList.add("pg2-weight");
      const hit = document.createElementNS(SVG, "line"); // wide and clear: a hairline is easy to hover
      hit.classList.add("pg2-weight-hit");
      Object.assign(hit.dataset, { layer, neuron, source });
      const name = () => `weight ${this.names[layer][source]} → ${this.names[layer + 1][neuron]}`;
      this.editable(hit, name, () => Number(line.dataset.weight), (value) => ({ layer, neuron, source, value }), "weight");
      svg.append(line, hit);
      return { line, hit };
    })));
    this.layout();
  }

  // One layer's neuron tiles, each with its bias square at the bottom left (as the TF Playground).
  neurons(layer, width, label, name) {
    const canvases = [];
    const marks = [];
    const boxes = Array.from({ length: width }, (_, n) => {
      const canvas = el("canvas", { class: "pg2-tile pg2-neuron", "data-layer": label, "data-neuron": n });
      const mark = el("div", { class: "pg2-bias", "data-layer": layer, "data-neuron": n });
      this.editable(mark, () => `bias of ${name(n)}`, () => Number(mark.dataset.bias),
        (value) => ({ layer, neuron: n, value }), "bias");
      canvases.push(canvas);
      marks.push(mark);
      return el("div", { class: "pg2-neuron-box" }, canvas, mark);
    });
    this.tiles.push(canvases);
    this.names.push(Array.from({ length: width }, (_, n) => name(n)));
    this.biasMarks.push(marks);
    return boxes;
  }

  // Hover: the number in a small box by the pointer; click: an input there, Enter sets it.
  editable(node, name, value, body, kind) {
    node.addEventListener("mouseenter", (event) => this.hover(event, `${name()}: ${fmt(value(), 3)}`));
    node.addEventListener("mousemove", (event) => this.place(this.tooltip, event));
    node.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });
    node.addEventListener("click", (event) => {
      this.tooltip.hidden = true;
      this.editing = { kind, body, name: name() };
      this.editor.value = String(Number(value().toPrecision(4)));
      this.editor.title = `${name()}: type a new value, Enter sets it, Escape cancels`;
      this.editor.dataset.kind = kind;
      this.place(this.editor, event);
      this.editor.hidden = false;
      this.editor.focus();
      this.editor.select();
    });
  }

  hover(event, text) {
    this.tooltip.textContent = text;
    this.tooltip.hidden = false;
    this.place(this.tooltip, event);
  }

  place(node, event) {
    node.style.left = `${event.clientX + 12}px`;
    node.style.top = `${event.clientY + 12}px`;
  }

  editorKey(event) {
    if (event.key === "Escape") this.editor.blur();
    if (event.key !== "Enter" || !this.editing) return;
    const value = Number(this.editor.value);
    const { kind, body } = this.editing;
    this.editing = null;
    this.editor.blur();
    if (this.editor.value.trim() !== "" && Number.isFinite(value)) this.actions.edit(kind, body(value));
  }

  // Where the lines go: from the right edge of each tile to the left edge of the next layer's.
  layout() {
    if (!this.svg) return;
    const origin = this.svg.getBoundingClientRect();
    const anchor = (canvas, side) => {
      const box = canvas.getBoundingClientRect();
      return [(side === "right" ? box.right : box.left) - origin.left, box.top + box.height / 2 - origin.top];
    };
    this.lines.forEach((targets, layer) => targets.forEach((sources, neuron) => sources.forEach(({ line, hit }, source) => {
      const [x1, y1] = anchor(this.tiles[layer][source], "right");
      const [x2, y2] = anchor(this.tiles[layer + 1][neuron], "left");
      for (const drawn of [line, hit]) {
        drawn.setAttribute("x1", x1); drawn.setAttribute("y1", y1);
        drawn.setAttribute("x2", x2); drawn.setAttribute("y2", y2);
      }
    })));
  }

  // Every neuron's map (the server's colour limits; the output on its own scale), the weights'
  // lines and the biases' squares.
  draw(snapshot, discretize) {
    const outputLayer = snapshot.layers.length - 1;
    snapshot.layers.forEach((packed, layer) => {
      const { shape, data } = unpack(packed);
      const plane = shape[1] * shape[2];
      for (let n = 0; n < shape[0]; n++) {
        const colour = layer === outputLayer ? outputColour(snapshot.task, discretize)
          : colourFor(snapshot.neuron_limits[layer][n]);
        paint(this.tiles[layer + 1][n], data.subarray(n * plane, (n + 1) * plane), shape[1], colour);
      }
    });
    snapshot.weights.forEach((matrix, layer) => matrix.forEach((row, neuron) => row.forEach((weight, source) => {
      const line = this.lines[layer]?.[neuron]?.[source]?.line;
      if (!line) return;
      const size = Math.min(1, Math.abs(weight) / WEIGHT_WIDTH_FULL);
      line.setAttribute("stroke", `rgb(${diverging(Math.max(-1, Math.min(1, weight)), WEIGHT_COLOUR_FULL).join(",")})`);
      line.setAttribute("stroke-width", (0.25 + 4 * size).toFixed(2));
      line.dataset.weight = weight;
    })));
    snapshot.biases.forEach((biases, layer) => biases.forEach((bias, neuron) => {
      const mark = this.biasMarks[layer]?.[neuron];
      if (!mark) return;
      mark.style.background = `rgb(${diverging(Math.max(-1, Math.min(1, bias)), BIAS_COLOUR_FULL).join(",")})`;
      mark.dataset.bias = bias;
    }));
  }
}
