// Learning playground: a small fully connected network on 2-D points, trained by PyTorch in the
// server and streamed here (server-sent events read through fetch, so a 400 or 429 shows its
// message). The page only draws what arrives: every neuron's map, the weights, the losses.
// This file holds the controls and the training's life (start, play, pause, step, edits); the
// diagram is playground2d-network.js, the output map playground2d-output.js, the loss chart
// playground2d-chart.js, and the setup in the URL playground2d-url.js.

import { ApiError, PAGE_ID, getJSON, postJSON, unpack } from "./api.js";
import { el, fmt, percent } from "./draw.js";
import { drawLossChart, explainData } from "./playground2d-chart.js";
import { NetworkDiagram } from "./playground2d-network.js";
import { drawOutput, drawOutputLegend } from "./playground2d-output.js";
import { readSetup, writeSetup } from "./playground2d-url.js";

const LEARNING_RATES = [0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];
const REGULARIZATION_RATES = [0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];
const API = "/api/playground2d";
const MAX_CHART_POINTS = 600;

export class LearningPlayground {
  constructor() {
    this.page = PAGE_ID;
    this.section = document.getElementById("tab-playground2d");
    this.networkBox = document.getElementById("pg2-network");
    this.messageBox = document.getElementById("pg2-message");
    this.boundaryCanvas = document.getElementById("pg2-boundary");
    this.discretizeBox = document.getElementById("pg2-discretize");
    this.showTestBox = document.getElementById("pg2-show-test");
    this.diagram = new NetworkDiagram(this.networkBox, this.section, {
      change: (values) => this.change(values),
      edit: (kind, body) => this.edit(kind, body),
    });
    this.options = null;
    this.settings = null; // what the next start sends
    this.start = null; // the answer of the last start: points, feature maps, config
    this.playing = false;
    this.stream = null; // the AbortController of the open stream
    this.history = [];
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
    for (const box of [this.showTestBox, this.discretizeBox]) {
      box.addEventListener("change", () => {
        if (this.lastSnapshot) this.show(this.lastSnapshot);
        this.writeURL();
      });
    }
    // a hidden tab trains for nobody: pause it (main.js only toggles `hidden`)
    new MutationObserver(() => { if (this.section.hidden) this.stop(); })
      .observe(this.section, { attributes: true, attributeFilter: ["hidden"] });
    window.addEventListener("pagehide", () => {
      fetch(`${API}/${this.page}`, { method: "DELETE", keepalive: true }).catch(() => {});
    });
    window.addEventListener("resize", () => this.diagram.layout());
  }

  shown() {
    this.ready ??= this.load().catch((error) => this.fail(error));
    return this.ready;
  }

  // The defaults, overridden by a setup in the URL; a setup the server refuses leaves its
  // message and starts the defaults instead.
  async load() {
    this.options = await getJSON(API);
    const setup = readSetup();
    this.settings = { ...this.options.defaults, ...setup.settings };
    this.discretizeBox.checked = setup.view.discretize ?? false;
    this.showTestBox.checked = setup.view.showTest ?? false;
    this.buildControls();
    if (!(await this.restart()) && Object.keys(setup.settings).length) {
      this.settings = { ...this.options.defaults };
      await this.restart({ keepMessage: true });
    }
  }

  writeURL() {
    writeSetup(this.settings, { discretize: this.discretizeBox.checked, showTest: this.showTestBox.checked });
  }

  // The controls show `settings` (after a start, a refusal, or a setup read from the URL).
  showSettings() {
    for (const [id, key] of [["pg2-lr", "lr"], ["pg2-activation", "activation"],
      ["pg2-regularization", "regularization"], ["pg2-regularization-rate", "regularization_rate"]]) {
      document.getElementById(id).value = String(this.settings[key]);
    }
    for (const [id, key, unit] of this.sliders) {
      document.getElementById(id).value = this.settings[key];
      document.getElementById(`${id}-value`).textContent = `${this.settings[key]}${unit}`;
    }
    document.getElementById("pg2-seed").value = this.settings.seed;
    for (const button of document.querySelectorAll("#pg2-datasets button")) {
      button.classList.toggle("active", button.dataset.dataset === this.settings.dataset);
    }
  }

  buildControls() {
    const datasets = document.getElementById("pg2-datasets");
    for (const [name, help] of Object.entries(this.options.datasets)) {
      datasets.append(el("button", { text: name, title: help, "data-dataset": name,
        class: this.options.tasks[name], onclick: () => this.change({ dataset: name }) }));
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
    this.sliders = [["pg2-train-percent", "train_percent", " %"], ["pg2-noise", "noise", " %"],
      ["pg2-batch-size", "batch_size", ""]];
    for (const [id, key, unit] of this.sliders) {
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
  // replaces this page's network, and its stream if one was open. Whether the server took it.
  async restart({ keepMessage = false } = {}) {
    const wasPlaying = this.playing;
    this.pause();
    this.answers++; // a pause or step answer still on its way is of the network this replaces
    try {
      this.start = await postJSON(`${API}/start`, { page: this.page, ...this.settings, init_seed: this.initSeed });
    } catch (error) {
      // refused (a 400 names the value): the network before the change stays, and so does playing
      this.settings = { ...(this.start?.config ?? this.options.defaults) };
      this.showSettings();
      this.fail(error);
      if (wasPlaying && this.start) this.play();
      return false;
    }
    if (!keepMessage) this.message("");
    this.settings = { ...this.start.config };
    this.initSeed = this.start.init_seed;
    this.history = [];
    this.showSettings();
    this.writeURL();
    this.section.dataset.task = this.options.tasks[this.settings.dataset];
    this.diagram.build(this.settings, this.options, this.start);
    this.explainData();
    this.show(this.start.snapshot);
    if (wasPlaying) this.play();
    return true;
  }

  // Draw a snapshot: the numbers, the diagram, the chart and the output map. An edit answers
  // the same epoch with other losses: that epoch's point of the chart moves.
  show(snapshot) {
    this.lastSnapshot = snapshot;
    const last = this.history[this.history.length - 1];
    const point = { epoch: snapshot.epoch, train: snapshot.train_loss, test: snapshot.test_loss };
    if (last?.epoch === snapshot.epoch) this.history[this.history.length - 1] = point;
    else {
      this.history.push(point);
      if (this.history.length > MAX_CHART_POINTS) this.history = this.history.filter((_, i) => i % 2 === 0 || i === this.history.length - 1);
    }
    const regression = snapshot.task === "regression";
    document.getElementById("pg2-epoch").textContent = String(snapshot.epoch);
    for (const node of this.section.querySelectorAll(".pg2-loss-name")) node.textContent = regression ? "MSE" : "loss";
    const digits = regression ? 4 : 3; // squared errors of values within ±1 are small
    for (const [id, value, text] of [["pg2-test-loss", snapshot.test_loss, fmt(snapshot.test_loss, digits)],
      ["pg2-train-loss", snapshot.train_loss, fmt(snapshot.train_loss, digits)],
      ["pg2-test-accuracy", snapshot.test_accuracy, regression ? "" : percent(snapshot.test_accuracy)]]) {
      const node = document.getElementById(id);
      node.textContent = text;
      node.dataset.value = value;
    }
    const discretize = this.discretizeBox.checked;
    this.diagram.draw(snapshot, discretize);
    drawLossChart(document.getElementById("pg2-loss-chart"), this.history, regression ? "MSE" : "loss");
    drawOutput(this.boundaryCanvas, unpack(snapshot.boundary), snapshot.task, this.start,
      { showTest: this.showTestBox.checked, discretize });
    drawOutputLegend(document.getElementById("pg2-legend"), snapshot.task, discretize);
  }

  explainData() {
    explainData(this.section.querySelector(".pg2-explain p"), this.settings.dataset);
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

  // A weight or a bias set by hand (`kind`: "weight" or "bias"): the server pauses, sets it in
  // its network and answers the edited network, drawn like a step's answer.
  async edit(kind, body) {
    this.pause();
    await this.ask(kind, body);
  }

  // The play button carries data-waiting while an answer is on its way, so a reader (a test,
  // an assistive tool) can tell the shown state from the one the server is about to send.
  async ask(action, body = {}) {
    const number = ++this.answers;
    const button = document.getElementById("pg2-play");
    button.dataset.waiting = "true";
    try {
      const snapshot = await postJSON(`${API}/${this.page}/${action}`, body);
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
