// Learning playground: a small fully connected network on 2-D points, trained by PyTorch in the
// server and streamed here (server-sent events read through fetch, so a 400 or 429 shows its
// message). The page only draws what arrives: every neuron's map, the weights, the losses.

import { ApiError, PAGE_ID, getJSON, postJSON, unpack } from "./api.js";
import { colourFor, diverging, el, fmt, percent } from "./draw.js";
import { drawLossChart, explainData } from "./playground2d-chart.js";

const LEARNING_RATES = [0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];
const REGULARIZATION_RATES = [0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];
const API = "/api/playground2d";
const CLASS_COLOURS = ["#2166ac", "#b2182b"]; // class 0, class 1: the ends of the diverging map
const MAX_CHART_POINTS = 600;
// Weights on an absolute scale (as the TF Playground): a line's colour saturates at |w| = 1 and
// its width grows up to |w| = 2; zero is a hairline of the neutral white. A scale relative to the
// largest weight would draw a dead network (every weight near 0) as boldly as a live one.
const WEIGHT_COLOUR_FULL = 1;
const WEIGHT_WIDTH_FULL = 2;

function paint(canvas, values, size, colour) {
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(size, size);
  for (let i = 0; i < size * size; i++) image.data.set([...colour(values[i]), 255], 4 * i);
  ctx.putImageData(image, 0, 0);
}

// P(class 1) on the diverging map: white at 0.5, the undecided line.
const probabilityColour = (p) => diverging(p - 0.5, 0.5);

export class LearningPlayground {
  constructor() {
    this.page = PAGE_ID;
    this.section = document.getElementById("tab-playground2d");
    this.networkBox = document.getElementById("pg2-network");
    this.messageBox = document.getElementById("pg2-message");
    this.boundaryCanvas = document.getElementById("pg2-boundary");
    this.options = null;
    this.settings = null; // what the next start sends
    this.start = null; // the answer of the last start: points, feature maps, config
    this.playing = false;
    this.stream = null; // the AbortController of the open stream
    this.history = [];
    this.tiles = []; // per layer (0: features), the canvases of its neurons
    this.lines = []; // per weight matrix, per [out][in], the SVG line
    this.lastSnapshot = null;
    this.ready = null;
    this.initSeed = null; // the initial weights' seed: kept while settings change, new on reset
    this.answers = 0; // pause and step answers: only the latest one asked for is drawn
    document.getElementById("pg2-play").addEventListener("click", () => (this.playing ? this.stop() : this.play()));
    document.getElementById("pg2-step").addEventListener("click", () => this.step());
    const reset = document.getElementById("pg2-reset");
    reset.title = "new initial weights on the same points";
    reset.addEventListener("click", () => {
      this.initSeed = Math.floor(Math.random() * 2 ** 31);
      this.restart();
    });
    document.getElementById("pg2-regenerate").addEventListener("click", () => {
      this.settings.seed = Math.floor(Math.random() * 100000);
      document.getElementById("pg2-seed").value = this.settings.seed;
      this.restart();
    });
    document.getElementById("pg2-show-test").addEventListener("change", () => this.drawBoundary());
    // a hidden tab trains for nobody: pause it (main.js only toggles `hidden`)
    new MutationObserver(() => { if (this.section.hidden) this.stop(); })
      .observe(this.section, { attributes: true, attributeFilter: ["hidden"] });
    window.addEventListener("pagehide", () => {
      fetch(`${API}/${this.page}`, { method: "DELETE", keepalive: true }).catch(() => {});
    });
    window.addEventListener("resize", () => this.drawLines());
  }

  shown() {
    this.ready ??= this.load().catch((error) => this.fail(error));
    return this.ready;
  }

  async load() {
    this.options = await getJSON(API);
    this.settings = { ...this.options.defaults };
    this.buildControls();
    await this.restart();
  }

  buildControls() {
    const datasets = document.getElementById("pg2-datasets");
    for (const [name, help] of Object.entries(this.options.datasets)) {
      datasets.append(el("button", { text: name, title: help, "data-dataset": name,
        onclick: () => this.change({ dataset: name }) }));
    }
    const select = (id, values, key, label = String) => {
      const box = document.getElementById(id);
      box.replaceChildren(...values.map((v) => new Option(label(v), String(v))));
      box.value = String(this.settings[key]);
      box.addEventListener("change", () => this.change({ [key]: typeof this.settings[key] === "number" ? Number(box.value) : box.value }));
    };
    select("pg2-lr", LEARNING_RATES, "lr");
    select("pg2-activation", this.options.activations, "activation");
    select("pg2-regularization", this.options.regularizations, "regularization");
    select("pg2-regularization-rate", REGULARIZATION_RATES, "regularization_rate");
    for (const [id, key, unit] of [["pg2-train-percent", "train_percent", " %"], ["pg2-noise", "noise", " %"],
      ["pg2-batch-size", "batch_size", ""]]) {
      const slider = document.getElementById(id);
      const shown = document.getElementById(`${id}-value`);
      slider.value = this.settings[key];
      shown.textContent = `${slider.value}${unit}`;
      slider.addEventListener("input", () => { shown.textContent = `${slider.value}${unit}`; });
      slider.addEventListener("change", () => this.change({ [key]: Number(slider.value) }));
    }
    const seed = document.getElementById("pg2-seed");
    seed.value = this.settings.seed;
    seed.addEventListener("change", () => this.change({ seed: Number(seed.value) }));
  }

  change(values) {
    Object.assign(this.settings, values);
    this.restart();
  }

  message(text) {
    this.messageBox.textContent = text;
  }

  fail(error) {
    this.message(error.message);
  }

  // A new network with the current settings (reset, or any setting changed): the server
  // replaces this page's network, and its stream if one was open.
  async restart() {
    const wasPlaying = this.playing;
    this.pause();
    this.answers++; // a pause or step answer still on its way is of the network this replaces
    try {
      this.start = await postJSON(`${API}/start`, { page: this.page, ...this.settings, init_seed: this.initSeed });
    } catch (error) {
      // refused (a 400 names the value): the network before the change stays, and so does playing
      this.settings = { ...(this.start?.config ?? this.options.defaults) };
      this.fail(error);
      if (wasPlaying && this.start) this.play();
      return;
    }
    this.message("");
    this.settings = { ...this.start.config };
    this.initSeed = this.start.init_seed;
    this.history = [];
    for (const button of document.querySelectorAll("#pg2-datasets button")) {
      button.classList.toggle("active", button.dataset.dataset === this.settings.dataset);
    }
    this.buildNetwork();
    this.explainData();
    this.show(this.start.snapshot);
    if (wasPlaying) this.play();
  }

  // Columns of tiles: the features (click to use or drop one), each hidden layer (+/- a neuron),
  // the output; the SVG behind them holds one line per weight.
  buildNetwork() {
    const { features: chosen, hidden } = this.settings;
    const allFeatures = Object.entries(this.options.features);
    const size = this.start.feature_maps.shape[1];
    const featureValues = unpack(this.start.feature_maps).data;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.classList.add("pg2-lines");
    const columns = [];
    const featureTiles = [];
    const featureColumn = el("div", { class: "pg2-column" }, el("h3", { text: "Features" }));
    allFeatures.forEach(([id, label], index) => {
      const values = featureValues.subarray(index * size * size, (index + 1) * size * size);
      const canvas = el("canvas", { class: "pg2-tile", "data-feature": id });
      paint(canvas, values, size, colourFor(this.start.feature_limits[index]));
      const used = chosen.includes(id);
      const tile = el("div", { class: used ? "pg2-feature used" : "pg2-feature", title: used ? "click to drop this input" : "click to feed this input",
        onclick: () => this.change({ features: used ? chosen.filter((f) => f !== id) : [...chosen, id] }) },
      canvas, el("span", { text: label }));
      featureColumn.append(tile);
      if (used) featureTiles.push(canvas);
    });
    columns.push(featureColumn);
    this.tiles = [featureTiles];
    const layerButtons = el("div", { class: "pg2-layer-buttons" },
      el("button", { text: "+", title: "add a hidden layer", id: "pg2-add-layer",
        onclick: () => this.change({ hidden: [...hidden, 2] }) }),
      el("button", { text: "−", title: "remove the last hidden layer", id: "pg2-remove-layer",
        onclick: () => this.change({ hidden: hidden.slice(0, -1) }) }),
      el("span", { text: `${hidden.length} hidden layer${hidden.length === 1 ? "" : "s"}` }));
    hidden.forEach((width, layer) => {
      const widen = (delta) => this.change({ hidden: hidden.map((w, i) => (i === layer ? w + delta : w)) });
      const column = el("div", { class: "pg2-column", "data-layer": layer + 1 },
        el("div", { class: "pg2-neuron-buttons" },
          el("button", { text: "+", title: "add a neuron", onclick: () => widen(1) }),
          el("button", { text: "−", title: "remove a neuron", onclick: () => widen(-1) })),
        el("h3", { text: `${width} neuron${width === 1 ? "" : "s"}` }));
      const tiles = Array.from({ length: width }, (_, n) => el("canvas", { class: "pg2-tile pg2-neuron", "data-layer": layer + 1, "data-neuron": n }));
      column.append(...tiles);
      columns.push(column);
      this.tiles.push(tiles);
    });
    const output = el("canvas", { class: "pg2-tile pg2-neuron", "data-layer": "output", "data-neuron": 0 });
    columns.push(el("div", { class: "pg2-column" }, el("h3", { text: "Output" }), output));
    this.tiles.push([output]);
    const row = el("div", { class: "pg2-columns" }, ...columns);
    this.networkBox.replaceChildren(layerButtons, el("div", { class: "pg2-stage" }, svg, row));
    this.svg = svg;
    this.lines = this.tiles.slice(1).map((targets, layer) => targets.map(() => this.tiles[layer].map(() => {
      const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
      svg.append(line);
      return line;
    })));
    this.drawLines();
  }

  // Where the lines go: from the right edge of each tile to the left edge of the next layer's.
  drawLines() {
    if (!this.svg) return;
    const origin = this.svg.getBoundingClientRect();
    const anchor = (canvas, side) => {
      const box = canvas.getBoundingClientRect();
      return [side === "right" ? box.right - origin.left : box.left - origin.left, box.top + box.height / 2 - origin.top];
    };
    this.lines.forEach((targets, layer) => targets.forEach((sources, out) => sources.forEach((line, inp) => {
      const [x1, y1] = anchor(this.tiles[layer][inp], "right");
      const [x2, y2] = anchor(this.tiles[layer + 1][out], "left");
      line.setAttribute("x1", x1); line.setAttribute("y1", y1);
      line.setAttribute("x2", x2); line.setAttribute("y2", y2);
    })));
  }

  show(snapshot) {
    this.lastSnapshot = snapshot;
    const last = this.history[this.history.length - 1];
    if (!last || last.epoch !== snapshot.epoch) {
      this.history.push({ epoch: snapshot.epoch, train: snapshot.train_loss, test: snapshot.test_loss });
      if (this.history.length > MAX_CHART_POINTS) this.history = this.history.filter((_, i) => i % 2 === 0 || i === this.history.length - 1);
    }
    document.getElementById("pg2-epoch").textContent = String(snapshot.epoch);
    for (const [id, value, text] of [["pg2-test-loss", snapshot.test_loss, fmt(snapshot.test_loss, 3)],
      ["pg2-train-loss", snapshot.train_loss, fmt(snapshot.train_loss, 3)],
      ["pg2-test-accuracy", snapshot.test_accuracy, percent(snapshot.test_accuracy)]]) {
      const node = document.getElementById(id);
      node.textContent = text;
      node.dataset.value = value;
    }
    const hiddenLayers = snapshot.layers.length - 1;
    snapshot.layers.forEach((packed, layer) => {
      const { shape, data } = unpack(packed);
      const plane = shape[1] * shape[2];
      for (let n = 0; n < shape[0]; n++) {
        const values = data.subarray(n * plane, (n + 1) * plane);
        // the server's limits: fixed for tanh and sigmoid, the neuron's own values for ReLU and linear
        const colour = layer === hiddenLayers ? probabilityColour : colourFor(snapshot.neuron_limits[layer][n]);
        paint(this.tiles[layer + 1][n], values, shape[1], colour);
      }
    });
    this.drawWeights(snapshot);
    this.drawChart();
    this.drawBoundary();
  }

  // Line colour and width: the weight's sign and size on the absolute scale above.
  drawWeights(snapshot) {
    snapshot.weights.forEach((matrix, layer) => matrix.forEach((row, out) => row.forEach((weight, inp) => {
      const line = this.lines[layer]?.[out]?.[inp];
      if (!line) return;
      const size = Math.min(1, Math.abs(weight) / WEIGHT_WIDTH_FULL);
      line.setAttribute("stroke", `rgb(${diverging(Math.max(-1, Math.min(1, weight)), WEIGHT_COLOUR_FULL).join(",")})`);
      line.setAttribute("stroke-width", (0.25 + 4 * size).toFixed(2));
      line.dataset.weight = weight;
    })));
  }

  explainData() {
    explainData(this.section.querySelector(".pg2-explain p"), this.settings.dataset);
  }

  drawChart() {
    drawLossChart(document.getElementById("pg2-loss-chart"), this.history);
  }

  // The output's P(class 1) over the plane, smoothed to the canvas, with the points on top.
  drawBoundary() {
    const snapshot = this.lastSnapshot;
    if (!snapshot) return;
    const { shape, data } = unpack(snapshot.boundary);
    const small = document.createElement("canvas");
    paint(small, data, shape[0], probabilityColour);
    const canvas = this.boundaryCanvas;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.globalAlpha = 0.8; // lighter, so the points stand out
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
    const plane = this.start.plane;
    const place = (x, y) => [((x + plane) / (2 * plane)) * canvas.width, ((plane - y) / (2 * plane)) * canvas.height];
    const sets = [["train", "white"]];
    if (document.getElementById("pg2-show-test").checked) sets.push(["test", "black"]);
    for (const [split, edge] of sets) {
      for (const [x, y, label] of this.start.points[split]) {
        const [px, py] = place(x, y);
        ctx.beginPath();
        ctx.arc(px, py, 3, 0, 2 * Math.PI);
        ctx.fillStyle = CLASS_COLOURS[label];
        ctx.fill();
        ctx.strokeStyle = edge;
        ctx.lineWidth = 1;
        ctx.stroke();
      }
    }
    this.drawLegend();
  }

  drawLegend() {
    const legend = document.getElementById("pg2-legend");
    if (legend.childElementCount) return;
    const bar = el("canvas", { class: "legend-bar" });
    paint(bar, Array.from({ length: 64 * 64 }, (_, i) => (i % 64) / 63), 64, probabilityColour); // left 0, right 1
    legend.append(el("div", { class: "colour-legend", title: "P(class 1): 0 = class 0 (blue), 0.5 undecided (white), 1 = class 1 (red)" },
      el("span", { class: "legend-value pg2-legend-low", text: "0" }), bar,
      el("span", { class: "legend-value pg2-legend-high", text: "1" }),
      el("span", { class: "legend-label", text: "P(class 1)" })));
  }

  // The server pauses a running stream before it steps: the answer is one epoch after the pause.
  async step() {
    this.pause();
    await this.ask("step");
  }

  // Pause, then draw the network as the server has it: a slice it trained after the last
  // snapshot this page read counts, so the next step adds exactly one epoch to what is shown.
  async stop() {
    if (this.pause()) await this.ask("pause");
  }

  // The play button carries data-waiting while an answer is on its way, so a reader (a test,
  // an assistive tool) can tell the shown state from the one the server is about to send.
  async ask(action) {
    const number = ++this.answers;
    const button = document.getElementById("pg2-play");
    button.dataset.waiting = "true";
    try {
      const snapshot = await postJSON(`${API}/${this.page}/${action}`, {});
      if (number === this.answers && !this.playing) this.show(snapshot);
    } catch (error) {
      this.fail(error);
    } finally {
      if (number === this.answers) delete button.dataset.waiting;
    }
  }

  setPlaying(playing) {
    this.playing = playing;
    const button = document.getElementById("pg2-play");
    button.textContent = playing ? "pause" : "play";
    button.classList.toggle("active", playing);
  }

  // Stop reading the stream (the server stops on `stop`, a step, a new start or the broken
  // connection); whether a stream was open.
  pause() {
    const streaming = this.stream !== null;
    this.stream?.abort();
    this.stream = null;
    this.setPlaying(false);
    return streaming;
  }

  // Train in the server and draw each snapshot as it arrives, until paused or the stream ends.
  async play() {
    if (!this.start || this.playing) return;
    const controller = new AbortController();
    this.stream = controller;
    this.setPlaying(true);
    this.message("");
    try {
      const response = await fetch(`${API}/${this.page}/stream`, { signal: controller.signal });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(body.detail || `HTTP ${response.status}`);
      }
      await this.readEvents(response.body.getReader(), controller);
    } catch (error) {
      if (error.name !== "AbortError") this.fail(error);
    } finally {
      if (this.stream === controller) {
        this.stream = null;
        this.setPlaying(false);
      }
    }
  }

  async readEvents(reader, controller) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || controller.signal.aborted) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const kind = block.match(/^event: (.*)$/m)?.[1];
        const data = block.match(/^data: (.*)$/m)?.[1];
        if (!data || controller.signal.aborted) continue;
        if (kind === "snapshot") this.show(JSON.parse(data));
        else if (kind === "end" && JSON.parse(data).reason === "time limit") {
          this.message("paused: one stream trains for a limited time; press play to go on");
        }
      }
    }
  }
}

export default LearningPlayground; // the view main.js constructs (convlens.server.views)
