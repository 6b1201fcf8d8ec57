// Segment: a segmentation run's answer for the input, a class per pixel (POST .../segment), one
// clicked pixel's explanation (POST .../pixel) and portrait mode (POST .../portrait). Every number
// and every coloured picture comes from the server (convlens.inspect.pixels, .portrait and
// convlens.views.segmentation_colours); this module only lays them out and maps values to colours.

import { postImage, unpack } from "./api.js";
import { colourFor, colourLegend, el, fmt, message, paintImage, paintPlane, percent, probabilityBars } from "./draw.js";

const SCALE = 8; // canvas pixels per image pixel: room for a crisp receptive-field box

function picture(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the server's picture could not be shown"));
    image.src = url;
  });
}

// Something drawable (a canvas or an image) onto `canvas`, enlarged without smoothing.
function enlarge(canvas, source, height, width) {
  canvas.width = width * SCALE;
  canvas.height = height * SCALE;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  return ctx;
}

function box(ctx, { top, left, bottom, right }, scale, colour = "#00e0ff") {
  ctx.strokeStyle = colour;
  ctx.lineWidth = Math.max(2, scale / 3);
  ctx.strokeRect(left * scale, top * scale, (right - left + 1) * scale, (bottom - top + 1) * scale);
}

export class SegmentView {
  constructor({ section, refresh, state }) {
    this.section = section;
    this.state = state;
    this.refresh = refresh;
    this.body = null; // the last /segment answer, for the input it was asked for
    this.selected = null; // {row, col} of the clicked pixel
    const find = (id) => section.querySelector(`#${id}`);
    this.summary = find("seg-summary");
    this.inputCanvas = find("seg-input");
    this.overlay = find("seg-overlay");
    this.mask = find("seg-mask");
    this.truthFigure = find("seg-truth-figure");
    this.truth = find("seg-truth");
    this.legend = find("seg-legend");
    this.classSelect = find("seg-class");
    this.probability = find("seg-probability");
    this.probabilityBar = find("seg-probability-bar");
    this.certainty = find("seg-certainty");
    this.certaintyMap = find("seg-certainty-map");
    this.certaintyBar = find("seg-certainty-bar");
    this.pixelBox = find("seg-pixel");
    this.effect = find("seg-effect");
    this.radius = find("seg-radius");
    this.portraitBox = find("seg-portrait-box");
    this.target = el("select", { id: "seg-target" });
    this.classSelect.addEventListener("change", () => this.drawProbability());
    this.certainty.addEventListener("change", () => this.drawCertainty());
    this.overlay.addEventListener("click", (event) => this.clicked(event));
    this.target.addEventListener("change", () => this.selected && this.pick(this.selected.row, this.selected.col));
    this.radius.addEventListener("input", () => { find("seg-radius-value").textContent = this.radius.value; });
    this.effect.addEventListener("change", () => { this.radius.disabled = this.effect.value !== "blur"; });
    find("seg-portrait-button").addEventListener("click", () => this.portrait());
  }

  get base() {
    return `/api/runs/${encodeURIComponent(this.state.run.id)}`;
  }

  runChanged(state) {
    this.body = null;
    this.selected = null;
    const names = state.card.class_names;
    this.classSelect.replaceChildren(...names.map((name, i) => new Option(name, String(i))));
    this.classSelect.value = names.length > 1 ? "1" : "0"; // the first class that is not background
    this.target.replaceChildren(new Option("the predicted class", ""), ...names.map((n, i) => new Option(n, String(i))));
    this.clear();
    if (state.card.task !== "segmentation") message(this.summary, "This run is a classifier (a class per image): there is no mask to show.");
  }

  clear() {
    for (const canvas of [this.inputCanvas, this.overlay, this.mask, this.truth, this.probability, this.certaintyMap]) {
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    }
    this.truthFigure.hidden = true;
    this.legend.replaceChildren();
    this.probabilityBar.replaceChildren();
    this.certaintyBar.replaceChildren();
    this.pixelBox.replaceChildren();
    this.portraitBox.replaceChildren();
    delete this.section.dataset.source;
  }

  // the maps of the previous image must not stay beside the new one
  inputChanged() {
    this.body = null;
    this.clear();
    message(this.summary, "segmenting the new image…");
  }

  fail(error) {
    this.body = null;
    this.clear();
    message(this.summary, error.message, "error");
  }

  async update(state) {
    const input = state.input;
    const body = await postImage(`${this.base}/segment`, input);
    if (state.input !== input) return; // the input changed meanwhile: its own update follows
    const image = unpack(body.input);
    const [, height, width] = image.shape;
    const [overlayPicture, maskPicture, truthPicture] = await Promise.all([picture(body.overlay_png),
      picture(body.mask_png), body.truth ? picture(body.truth.mask_png) : null]);
    if (state.input !== input) return;
    this.body = { ...body, image, height, width, overlayPicture };
    this.small = paintImage(document.createElement("canvas"), image);
    enlarge(this.inputCanvas, this.small, height, width);
    enlarge(this.overlay, overlayPicture, height, width);
    enlarge(this.mask, maskPicture, height, width);
    this.truthFigure.hidden = !truthPicture;
    if (truthPicture) enlarge(this.truth, truthPicture, height, width);
    this.showLegend(body);
    this.drawProbability();
    this.drawCertainty();
    this.summary.replaceChildren(el("span", { text: `${body.source}: ${height}×${width} pixels, ` +
      `${body.shares.filter((s) => s.pixels > 0).length} of ${body.classes.length} classes present. Click a pixel of the prediction.` }));
    this.section.dataset.source = body.source; // which input these maps belong to
    this.portraitBox.replaceChildren();
    if (this.selected && this.selected.row < height && this.selected.col < width) await this.pick(this.selected.row, this.selected.col);
    else this.selected = null;
  }

  // each class's colour (the library's palette) and its share of this image's pixels
  showLegend(body) {
    this.legend.replaceChildren(...body.shares.map((share, i) => el("span", { class: "seg-class", "data-class": share.class, "data-share": share.share },
      el("span", { class: "swatch", style: `background: rgb(${body.palette[i].join(",")})` }),
      `${share.class} ${percent(share.share)}`)));
  }

  drawProbability() {
    if (!this.body) return;
    const { height, width } = this.body;
    const k = Number(this.classSelect.value);
    const maps = unpack(this.body.probabilities);
    const plane = paintPlane(document.createElement("canvas"), maps.data, k * height * width, height, width, colourFor(this.body.limits));
    enlarge(this.probability, plane, height, width);
    this.probability.dataset.class = this.body.classes[k];
    this.probabilityBar.replaceChildren(colourLegend(this.body.limits, `P(${this.body.classes[k]})`));
  }

  drawCertainty() {
    if (!this.body) return;
    const { height, width } = this.body;
    const which = this.certainty.value;
    const plane = paintPlane(document.createElement("canvas"), unpack(this.body[which]).data, 0, height, width, colourFor(this.body.limits));
    enlarge(this.certaintyMap, plane, height, width);
    this.certaintyMap.dataset.map = which;
    this.certaintyBar.replaceChildren(colourLegend(this.body.limits, which));
  }

  clicked(event) {
    if (!this.body) return;
    const rect = this.overlay.getBoundingClientRect();
    const col = Math.min(this.body.width - 1, Math.floor(((event.clientX - rect.left) / rect.width) * this.body.width));
    const row = Math.min(this.body.height - 1, Math.floor(((event.clientY - rect.top) / rect.height) * this.body.height));
    this.pick(row, col);
  }

  async pick(row, col) {
    const input = this.state.input;
    this.selected = { row, col };
    let found;
    try {
      found = await postImage(`${this.base}/pixel`, input, { row, col, target: this.target.value });
    } catch (error) {
      message(this.pixelBox, error.message, "error");
      return;
    }
    if (this.state.input !== input || !this.body) return;
    this.showPixel(found);
  }

  // The clicked pixel: its probabilities, its receptive field on the input and on every stage
  // (through the skip connections and the upsampling), and its Grad-CAM.
  showPixel(found) {
    const { height, width, overlayPicture } = this.body;
    const ctx = enlarge(this.overlay, overlayPicture, height, width);
    box(ctx, { top: found.row, left: found.col, bottom: found.row, right: found.col }, SCALE, "#ffffff");
    const onInput = found.receptive_fields.find((f) => f.shape[1] === height && f.shape[2] === width);
    const inputCtx = enlarge(this.inputCanvas, this.small, height, width);
    if (onInput) box(inputCtx, onInput, SCALE);
    this.inputCanvas.dataset.field = onInput ? JSON.stringify([onInput.top, onInput.left, onInput.bottom, onInput.right]) : "";
    const bars = el("div", { id: "seg-pixel-bars" });
    probabilityBars(bars, found.probabilities, found.classes);
    const predicted = found.classes[found.predicted];
    const cam = unpack(found.grad_cam);
    const heat = paintPlane(document.createElement("canvas"), cam.data, 0, height, width, colourFor(found.grad_cam_limits));
    const camCanvas = el("canvas", { class: "seg-big", id: "seg-grad-cam" });
    const camCtx = enlarge(camCanvas, this.small, height, width);
    camCtx.globalAlpha = 0.6;
    camCtx.drawImage(heat, 0, 0, camCanvas.width, camCanvas.height);
    const stages = el("div", { class: "seg-stages", id: "seg-stages" }, ...found.receptive_fields.map((f) => this.stageField(f)));
    this.pixelBox.replaceChildren(
      el("h3", { id: "seg-pixel-title", "data-row": found.row, "data-col": found.col,
        text: `pixel row ${found.row}, col ${found.col}: ${predicted} (${percent(found.probabilities[found.predicted])})` }),
      el("div", { class: "seg-row" },
        el("figure", {}, el("figcaption", { text: "class probabilities at this pixel" }), bars),
        el("figure", {}, el("figcaption", {}, "Grad-CAM of ", this.target, ` at ${found.stage}`), camCanvas,
          colourLegend(found.grad_cam_limits, `why ${found.classes[found.target]}`))),
      el("p", { class: "note", text: onInput
        ? `What this pixel can see (cyan box on the input): rows ${onInput.top}–${onInput.bottom}, cols ${onInput.left}–${onInput.right}. ` +
          "Below, the window of every stage's map that can change it." : "The window of every stage's map that can change this pixel:" }),
      stages,
      el("button", { id: "seg-show-network", onclick: () => this.showOnNetwork(found) }, "show this pixel on the Network view"));
  }

  // The Network view marks the output cell's window in every stage it reads, skips included.
  showOnNetwork(found) {
    const cell = { stage: found.output_stage, channel: found.target, row: found.row, col: found.col };
    document.dispatchEvent(new CustomEvent("show-cell", { detail: cell }));
    document.querySelector('#tabs button[data-tab="overview"]')?.click();
  }

  // one stage's map as a grid, the pixel's window in it outlined (the whole map: marked "whole")
  stageField(field) {
    const [, h, w] = field.shape;
    const scale = Math.max(1, Math.floor(56 / Math.max(h, w)));
    const canvas = el("canvas", { width: w * scale, height: h * scale });
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#20242a";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = field.whole ? "#888" : "#00e0ff";
    ctx.fillRect(field.left * scale, field.top * scale, (field.right - field.left + 1) * scale, (field.bottom - field.top + 1) * scale);
    return el("div", { class: "seg-stage", "data-stage": field.stage, title: `${field.stage}: rows ${field.top}–${field.bottom}, ` +
      `cols ${field.left}–${field.right} of ${h}×${w}${field.whole ? " (whole map: its geometry is not followed cell by cell)" : ""}` },
    canvas, el("span", { text: field.stage }));
  }

  async portrait() {
    const input = this.state.input;
    if (!input || !this.state.run) return;
    message(this.portraitBox, "applying…");
    let body;
    try {
      body = await postImage(`${this.base}/portrait`, input, { effect: this.effect.value, radius: this.radius.value });
    } catch (error) {
      message(this.portraitBox, error.message, "error");
      return;
    }
    if (this.state.input !== input) return;
    const result = unpack(body.portrait);
    const [, height, width] = result.shape;
    const canvas = el("canvas", { class: "seg-big", id: "seg-portrait", "data-effect": body.effect });
    enlarge(canvas, paintImage(document.createElement("canvas"), result), height, width);
    const how = body.effect === "blur" ? `background blurred (radius ${fmt(body.radius, 1)} px)` : "background grey and darker";
    const share = body.background_share === null ? "" : `, ${percent(body.background_share)} of the pixels`;
    this.portraitBox.replaceChildren(el("figure", {}, el("figcaption", { text: `portrait mode: ${how}${share}` }), canvas));
  }
}

export default SegmentView; // the view main.js constructs (convlens.server.views)
