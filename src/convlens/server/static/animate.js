// The kernel at work, as in CNN Explainer: the chosen cell's window slides over the real input of
// its stage (the maps of the stage before, as the server computed them for this image) while the
// chosen output map fills in cell by cell with the server's own values. Nothing is recomputed
// here: the windows come from GET /network, every number from GET /activations.

import { colourFor, colourLegend, el, fmt, inkOn, paintPlane } from "./draw.js";
import { unpack } from "./api.js";

const INPUT_PIXELS = [128, 64]; // on-screen size of the largest side of one input map, of several
const MAX_INPUTS = 16; // input channels drawn; a note says how many more the kernel reads
const DURATION_MS = 4000; // one pass over the whole output map, however many cells it has

export class KernelAnimation {
  constructor(container) {
    this.box = container;
    this.timer = null;
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.button) this.button.textContent = "animate";
  }

  clear() {
    this.stop();
    this.box.replaceChildren();
  }

  // Offers the animation for `cell` when its stage reads a window of the map stage before it.
  // `limitsOf(stage, channel)` gives the colour limits the network shows (per stage or channel).
  offer(cell, body, wiring, limitsOf) {
    this.clear();
    const order = wiring.stages.map((stage) => stage.name);
    const at = order.indexOf(cell.stage);
    const facts = wiring.stages[at];
    // the map it reads: its one input in a graph (a merge slides no window), else the stage before
    const previous = facts?.inputs ? wiring.stages.find((s) => facts.inputs.length === 1 && s.name === facts.inputs[0])
      : wiring.stages[at - 1];
    const window = previous && facts?.windows[previous.name];
    if (!window) return;
    const output = body.stages.find((stage) => stage.name === cell.stage);
    const input = body.stages.find((stage) => stage.name === previous.name);
    const [channels, height, width] = input.shape;
    const reads = facts.mixes_channels ? [...Array(channels).keys()] : [cell.channel];
    this.button = el("button", { id: "animate-button", text: "animate" });
    this.button.addEventListener("click", () => (this.timer ? this.stop() : this.play()));
    const pixels = INPUT_PIXELS[reads.length > 1 ? 1 : 0];
    const inputs = reads.slice(0, MAX_INPUTS).map((channel) => this.inputMap(input, channel, limitsOf, pixels));
    const more = reads.length - inputs.length;
    this.output = this.outputTable(output.shape[1], output.shape[2]);
    this.readout = el("p", { class: "animation-readout" });
    this.values = unpack(output.output);
    this.context = { cell, window, inputs, colour: colourFor(limitsOf(output, cell.channel)), source: previous.name };
    const what = facts.mixes_channels ? `all ${channels} channels of ${previous.name}` : `${previous.name} channel ${cell.channel}`;
    this.box.append(
      el("h3", {}, el("span", { text: `${cell.stage} channel ${cell.channel}: its window slides over ${what} ` }),
        this.button),
      el("div", { class: "animation-stage" },
        el("div", {}, el("h4", { text: `input: ${previous.name} (${height}×${width})` }),
          el("div", { class: "animation-inputs" }, ...inputs.map((item) => item.figure)),
          more > 0 ? el("p", { class: "note", text: `and ${more} more input channels` }) : null,
          colourLegend(limitsOf(input, reads[0]), previous.name)),
        el("div", {}, el("h4", { text: `output: ${cell.stage} channel ${cell.channel}` }), this.output,
          colourLegend(limitsOf(output, cell.channel), cell.stage))),
      this.readout);
  }

  inputMap(stage, channel, limitsOf, pixels) {
    const [, height, width] = stage.shape;
    const values = unpack(stage.output);
    const canvas = paintPlane(el("canvas"), values.data, channel * height * width, height, width,
      colourFor(limitsOf(stage, channel)));
    const cell = Math.max(2, Math.floor(pixels / Math.max(height, width)));
    canvas.style.width = `${width * cell}px`;
    canvas.style.height = `${height * cell}px`;
    const frame = el("div", { class: "animation-window", hidden: "" });
    const figure = el("figure", { class: "animation-map", title: `${stage.name} channel ${channel}` }, canvas, frame);
    return { figure, frame, cell };
  }

  outputTable(height, width) {
    const table = el("table", { class: "animation-output", id: "animation-output", "data-filled": 0 });
    for (let r = 0; r < height; r++) {
      const tr = el("tr");
      for (let c = 0; c < width; c++) tr.append(el("td"));
      table.append(tr);
    }
    return table;
  }

  play() {
    const { cell, window, inputs, colour, source } = this.context;
    const rows = this.output.rows.length;
    const cols = this.output.rows[0].cells.length;
    const plane = rows * cols;
    const offset = cell.channel * plane;
    for (const td of this.output.querySelectorAll("td")) {
      td.removeAttribute("style");
      td.removeAttribute("data-value");
      td.textContent = "";
    }
    let step = 0;
    this.button.textContent = "stop";
    const showNumbers = cols <= 12;
    const advance = () => {
      this.output.querySelector("td.current")?.classList.remove("current");
      if (step === plane) {
        for (const item of inputs) item.frame.hidden = true;
        this.stop();
        return;
      }
      const [row, col] = [Math.floor(step / cols), step % cols];
      const [top, bottom] = window.rows[row];
      const [left, right] = window.cols[col];
      for (const item of inputs) {
        Object.assign(item.frame.style, { top: `${top * item.cell}px`, left: `${left * item.cell}px`,
          height: `${(bottom - top + 1) * item.cell}px`, width: `${(right - left + 1) * item.cell}px` });
        item.frame.hidden = false;
      }
      const value = this.values.data[offset + step];
      const td = this.output.rows[row].cells[col];
      const rgb = colour(value);
      td.style.background = `rgb(${rgb.join(",")})`;
      td.style.color = inkOn(rgb);
      td.dataset.value = value;
      td.textContent = showNumbers ? fmt(value, 2) : "";
      td.title = `row ${row}, col ${col}: ${fmt(value, 4)}`;
      td.classList.add("current");
      this.readout.textContent = `row ${row}, col ${col} reads ${source} rows ${top}–${bottom}, ` +
        `cols ${left}–${right} → ${fmt(value, 4)}`;
      step += 1;
      this.output.dataset.filled = step;
    };
    advance();
    this.timer = setInterval(advance, Math.max(15, Math.min(250, DURATION_MS / plane)));
  }
}
