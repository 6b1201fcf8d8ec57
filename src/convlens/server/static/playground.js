// Convolution playground: edit a pixel grid and a kernel; the server convolves them and
// returns every cell's products and sum, which the page replays one step at a time.

import { getJSON, postJSON } from "./api.js";
import { operand } from "./arithmetic.js";
import { colourLegend, diverging, el, fmt, gray, inkOn, message, numberTable } from "./draw.js";

const PLAY_MS = 350;
const OWN_GRID = "your own grid (blank or painted)";

export class Playground {
  constructor() {
    this.gridBox = document.getElementById("pg-grid");
    this.kernelBox = document.getElementById("pg-kernel");
    this.outputBox = document.getElementById("pg-output");
    this.stepBox = document.getElementById("pg-step");
    this.size = 8;
    this.image = [];
    this.kernel = [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]];
    this.result = null;
    this.position = -1; // output cells revealed so far (the animation's position)
    this.timer = null;
    this.brush = 1;
    this.ready = this.load();
    document.getElementById("pg-size").addEventListener("change", (e) => this.blank(Number(e.target.value)));
    document.getElementById("pg-picture").addEventListener("change", (e) => this.picture(e.target.value));
    document.getElementById("pg-kernel-size").addEventListener("change", (e) => this.kernelSize(Number(e.target.value)));
    document.getElementById("pg-padding").addEventListener("change", () => this.convolve());
    document.getElementById("pg-stride").addEventListener("change", () => this.convolve());
    document.getElementById("pg-brush").addEventListener("change", (e) => { this.brush = Number(e.target.value); });
    document.getElementById("pg-step-button").addEventListener("click", () => this.step());
    document.getElementById("pg-play").addEventListener("click", () => this.play());
    document.getElementById("pg-all").addEventListener("click", () => this.reveal(this.cellCount() - 1));
    document.getElementById("pg-reset").addEventListener("click", () => this.reveal(-1));
  }

  async load() {
    const presets = await getJSON("/api/playground");
    const kernelButtons = document.getElementById("pg-presets");
    for (const [name, kernel] of Object.entries(presets.kernels)) {
      kernelButtons.append(el("button", { text: name, "data-kernel": name, onclick: () => this.setKernel(kernel) }));
    }
    const select = document.getElementById("pg-picture");
    // the menu names what the grid holds: a preset picture, or the learner's own painting
    select.append(new Option(OWN_GRID, ""));
    for (const name of presets.pictures) select.append(new Option(name, name));
    this.setKernel(presets.kernels.edge);
    await this.picture("smiley");
  }

  async picture(name) {
    if (!name) return; // "your own grid": keep what is painted
    // the smiley and digits are 8x8 already; a photo needs at least 16x16 cells to be recognisable
    const chosen = Number(document.getElementById("pg-size").value);
    const size = name === "smiley" || name.startsWith("digits") ? null : Math.max(16, chosen);
    try {
      const body = await getJSON(`/api/playground/picture?name=${encodeURIComponent(name)}${size ? `&size=${size}` : ""}`);
      this.image = body.image;
      document.getElementById("pg-picture").value = name;
      this.drawGrid();
      await this.convolve();
    } catch (error) {
      message(this.stepBox, error.message, "error");
    }
  }

  blank(size) {
    this.image = Array.from({ length: size }, () => Array(size).fill(0));
    this.ownGrid();
    this.drawGrid();
    this.convolve();
  }

  // a blank or painted-over grid is no preset picture any more: the menu must not name one
  ownGrid() {
    document.getElementById("pg-picture").value = "";
  }

  drawGrid() {
    const height = this.image.length;
    const width = this.image[0].length;
    const table = el("table", { class: "pixel-grid", id: "pg-grid-table" });
    let painting = false;
    const paint = (td, r, c) => {
      if (this.image[r][c] !== this.brush) this.ownGrid();
      this.image[r][c] = this.brush;
      td.style.background = `rgb(${gray(this.brush).join(",")})`;
      td.dataset.value = this.brush;
    };
    for (let r = 0; r < height; r++) {
      const tr = el("tr");
      for (let c = 0; c < width; c++) {
        const td = el("td", { "data-row": r, "data-col": c, "data-value": this.image[r][c],
          style: `background: rgb(${gray(this.image[r][c]).join(",")})` });
        td.addEventListener("pointerdown", (e) => { e.preventDefault(); painting = true; paint(td, r, c); });
        td.addEventListener("pointerenter", () => { if (painting) paint(td, r, c); });
        tr.append(td);
      }
      table.append(tr);
    }
    table.addEventListener("pointerup", () => { if (painting) { painting = false; this.convolve(); } });
    table.addEventListener("pointerleave", () => { if (painting) { painting = false; this.convolve(); } });
    this.gridBox.replaceChildren(table);
  }

  kernelSize(size) {
    this.setKernel(Array.from({ length: size }, (_, r) => Array.from({ length: size }, (_, c) =>
      (r === (size - 1) / 2 && c === (size - 1) / 2 ? 1 : 0))));
  }

  setKernel(kernel) {
    this.kernel = kernel.map((row) => [...row]);
    const table = el("table", { class: "kernel-grid", id: "pg-kernel-table" });
    this.kernel.forEach((row, r) => {
      const tr = el("tr");
      row.forEach((value, c) => {
        const input = el("input", { type: "number", step: "any", value: fmt(value, 3).replace(/\.?0+$/, "") || "0" });
        input.addEventListener("change", () => {
          const number = Number(input.value);
          if (Number.isFinite(number)) { this.kernel[r][c] = number; this.convolve(); }
        });
        tr.append(el("td", {}, input));
      });
      table.append(tr);
    });
    this.kernelBox.replaceChildren(table);
    document.getElementById("pg-kernel-size").value = String(kernel.length);
    this.convolve();
  }

  async convolve() {
    if (!this.image.length) return;
    this.stopPlay();
    try {
      this.result = await postJSON("/api/playground/convolve", {
        image: this.image,
        kernel: this.kernel,
        padding: Number(document.getElementById("pg-padding").value),
        stride: Number(document.getElementById("pg-stride").value),
      });
      this.reveal(this.cellCount() - 1); // the finished map at once; step or play replays it
    } catch (error) {
      this.result = null;
      this.outputBox.replaceChildren();
      message(this.stepBox, error.message, "error");
    }
  }

  cellCount() {
    return this.result ? this.result.cells.length : 0;
  }

  // Show output cells 0..index, and the arithmetic of cell `index` with its window on the grid.
  reveal(index) {
    if (!this.result) return;
    this.position = index;
    const output = this.result.output;
    const limits = this.result.limits; // the server's: signed, centred on 0, robust bound
    const width = output[0]?.length ?? 0;
    const table = el("table", { class: "pixel-grid output", id: "pg-output-table" });
    output.forEach((row, r) => {
      const tr = el("tr");
      row.forEach((value, c) => {
        const visible = r * width + c <= index;
        const colour = visible ? diverging(value, limits.high) : [240, 240, 240];
        const td = el("td", { "data-row": r, "data-col": c, style: `background: rgb(${colour.join(",")}); color: ${inkOn(colour)}`,
          text: visible && output.length <= 16 ? fmt(value, 1) : "" });
        if (visible) td.dataset.value = value;
        if (r * width + c === index) td.classList.add("current");
        tr.append(td);
      });
      table.append(tr);
    });
    this.outputBox.replaceChildren(table, colourLegend(limits, "sum of products"));
    for (const td of this.gridBox.querySelectorAll("td.window")) td.classList.remove("window");
    if (index < 0) {
      this.stepBox.replaceChildren(el("p", { class: "note", text: "Press step or play to slide the kernel." }));
      return;
    }
    const cell = this.result.cells[index];
    for (const row of cell.rows) {
      for (const col of cell.cols) {
        this.gridBox.querySelector(`td[data-row="${row}"][data-col="${col}"]`)?.classList.add("window");
      }
    }
    const kernel = this.result.kernel;
    const terms = cell.patch.flat().map((p, i) => `${operand(p)}·${operand(kernel.flat()[i])}`).join(" + ");
    this.stepBox.replaceChildren(
      el("h4", { text: `output cell (${cell.row}, ${cell.col}): kernel over rows ${cell.rows.join(",")}, cols ${cell.cols.join(",")}` }),
      el("div", { class: "tables" },
        numberTable(cell.patch, { caption: "pixels under the kernel" }),
        el("span", { class: "op", text: "×" }),
        numberTable(kernel, { caption: "kernel" }),
        el("span", { class: "op", text: "=" }),
        numberTable(cell.products, { caption: "products" })),
      el("p", { class: "equation" }, el("span", { text: `${terms} = ` }),
        el("strong", { id: "pg-sum", "data-value": cell.sum, text: fmt(cell.sum, 3) })));
  }

  step() {
    const next = this.position >= this.cellCount() - 1 ? 0 : this.position + 1;
    this.reveal(next);
  }

  play() {
    if (this.timer) return this.stopPlay();
    if (this.position >= this.cellCount() - 1) this.reveal(-1);
    this.step();
    document.getElementById("pg-play").textContent = "pause";
    this.timer = setInterval(() => {
      if (this.position >= this.cellCount() - 1) return this.stopPlay();
      this.step();
    }, PLAY_MS);
  }

  stopPlay() {
    clearInterval(this.timer);
    this.timer = null;
    document.getElementById("pg-play").textContent = "play";
  }
}

export default Playground; // the view main.js constructs (convlens.server.views)
