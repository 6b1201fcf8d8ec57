// The input panel: draw with mouse or touch, upload a file, or pick a test image.
// The canvas is sent as PNG; the server downsamples it to the model's input. The invert toggle
// sends 1 − pixels; a badge says when the input is far from the training images.
//
// The panel holds the one current input every view computes from. "What the model sees" is
// painted from the server's answer for exactly that input (whichever view asked), so it never
// shows one image while the maps beside it belong to another.

import { getJSON, unpack } from "./api.js";
import { el, gray, message, paintImage, paintPlane } from "./draw.js";

const BRUSH = 22; // pixels on the 280 x 280 canvas: about one MNIST stroke width

export class InputPanel {
  constructor(onChange) {
    this.onChange = onChange; // called with the new input {kind: "blob"|"test", ...}
    this.canvas = document.getElementById("draw-canvas");
    this.ctx = this.canvas.getContext("2d");
    this.seen = document.getElementById("seen-canvas");
    this.overlay = document.getElementById("seen-overlay");
    this.strip = document.getElementById("test-strip");
    this.invertBox = document.getElementById("invert-input");
    this.badge = document.getElementById("shift-badge");
    this.input = null;
    this.drawing = false;
    this.showOutline(false); // until the Network view, whose cells it outlines, is shown
    this.clear(false);
    this.canvas.addEventListener("pointerdown", (e) => this.start(e));
    this.canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel", "pointerleave"]) {
      this.canvas.addEventListener(type, () => this.stop());
    }
    document.getElementById("clear-button").addEventListener("click", () => this.clear(true));
    document.getElementById("upload-input").addEventListener("change", (e) => this.upload(e.target.files[0]));
    this.invertBox.addEventListener("change", () => {
      if (this.input) this.changed({ ...this.input });
    });
    document.addEventListener("input-checked", (e) => this.checked(e.detail));
    document.addEventListener("input-rejected", (e) => this.rejected(e.detail));
  }

  // every new input carries the invert toggle's state; its thumbnail (if any) is marked
  changed(input) {
    this.input = { ...input, invert: this.invertBox.checked };
    for (const thumb of this.strip.querySelectorAll("canvas.thumb")) {
      thumb.classList.toggle("current", input.kind === "test" && Number(thumb.dataset.index) === input.index);
    }
    this.onChange(this.input);
  }

  // An answer of any image endpoint: shown only if it belongs to the current input.
  checked(answer) {
    if (answer.request !== this.input) return;
    if (answer.input) this.paintSeen(answer.input, answer.source);
    this.showShift(answer.shift, answer.inverted);
  }

  // The server refused the current input (api.js rejectsInput): nothing of the previous image
  // stays on the panel, neither on the canvas, nor as what the model sees, nor as its badge.
  rejected(answer) {
    if (answer.request !== this.input) return;
    if (this.input.kind === "blob") {
      this.ctx.fillStyle = "black";
      this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    }
    this.seen.getContext("2d").clearRect(0, 0, this.seen.width, this.seen.height);
    this.seen.dataset.source = "";
    this.outline(null);
    this.showShift(null, false);
  }

  // The server's check of the input against the training images (convlens.shift): a badge when far.
  showShift(shift, inverted) {
    const far = Boolean(shift && shift.is_far);
    this.badge.hidden = !far;
    this.badge.classList.toggle("inverted", far && shift.looks_inverted);
    this.badge.dataset.reason = far ? shift.reason : "";
    if (!far) {
      this.badge.textContent = "";
      return;
    }
    const hint = shift.looks_inverted ? (inverted ? " Try turning invert off." : " Try the invert toggle.") : "";
    this.badge.textContent = `${shift.message}.${hint}`;
  }

  clear(notify) {
    this.ctx.fillStyle = "black";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.input = null;
    if (notify) this.sendCanvas();
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) / box.width) * this.canvas.width,
      ((event.clientY - box.top) / box.height) * this.canvas.height,
    ];
  }

  start(event) {
    event.preventDefault();
    this.canvas.setPointerCapture?.(event.pointerId);
    this.drawing = true;
    this.last = this.point(event);
    this.stroke(this.last);
  }

  move(event) {
    if (!this.drawing) return;
    event.preventDefault();
    this.stroke(this.point(event));
  }

  stop() {
    if (!this.drawing) return;
    this.drawing = false;
    this.sendCanvas();
  }

  stroke(to) {
    const ctx = this.ctx;
    ctx.strokeStyle = "white";
    ctx.lineWidth = BRUSH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...this.last);
    ctx.lineTo(...to);
    ctx.stroke();
    this.last = to;
    this.sendCanvas(); // throttled by main.js: at most one request in flight
  }

  sendCanvas() {
    this.canvas.toBlob((blob) => this.changed({ kind: "blob", blob, name: "drawing.png" }), "image/png");
  }

  upload(file) {
    if (!file) return;
    const url = URL.createObjectURL(file);
    const picture = new Image();
    picture.onerror = () => URL.revokeObjectURL(url); // not for the browser: the server may read it (DICOM)
    picture.onload = () => {
      this.ctx.fillStyle = "black";
      this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
      this.ctx.drawImage(picture, 0, 0, this.canvas.width, this.canvas.height);
      URL.revokeObjectURL(url);
    };
    picture.src = url;
    this.changed({ kind: "blob", blob: file, name: file.name });
  }

  pickTest(item) {
    const pixels = unpack(item.pixels);
    const small = paintImage(document.createElement("canvas"), pixels);
    this.ctx.imageSmoothingEnabled = false;
    this.ctx.drawImage(small, 0, 0, this.canvas.width, this.canvas.height);
    this.changed({ kind: "test", index: item.index, label: item.label });
  }

  // Fills the strip; resolves to the images shown (none when the server could not send them).
  // `hasData`: the run names its data set; an imported model without one has no test images, so
  // the strip says so instead of asking (a 400 the console would log as an error).
  async loadTestImages(runId, hasData = true) {
    this.strip.replaceChildren();
    let images = [];
    if (!hasData) {
      message(this.strip, "this run names no data set, so there are no test images: draw or upload an image");
      return images;
    }
    try {
      const body = await getJSON(`/api/runs/${encodeURIComponent(runId)}/test-images?count=30&spread=true`);
      for (const item of body.images) {
        const thumb = paintImage(el("canvas", { class: "thumb", title: `test image ${item.index}${item.class === null ? "" : `: ${item.class}`}` }),
          unpack(item.pixels));
        thumb.dataset.index = item.index;
        thumb.addEventListener("click", () => this.pickTest(item));
        this.strip.append(thumb);
      }
      images = body.images;
    } catch (error) {
      message(this.strip, error.message, "error");
    }
    return images;
  }

  // The receptive-field box of a cell on what the model sees. The image itself was painted when
  // the answer arrived (checked), and only if it belongs to the current input.
  showSeen(packed, box = null) {
    const [, height, width] = packed.shape;
    this.outline(box, height, width);
  }

  paintSeen(packed, source) {
    paintImage(this.seen, unpack(packed));
    this.seen.dataset.source = source ?? "";
  }

  // The receptive-field box belongs to a cell of the Network view: hidden on the other views.
  showOutline(visible) {
    this.overlay.hidden = !visible;
  }

  outline(box, height, width) {
    const scale = 8;
    this.overlay.width = (width || this.seen.width) * scale;
    this.overlay.height = (height || this.seen.height) * scale;
    const ctx = this.overlay.getContext("2d");
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    if (!box) return;
    ctx.strokeStyle = "#00e0ff";
    ctx.lineWidth = 3;
    ctx.strokeRect(box.left * scale, box.top * scale, (box.right - box.left + 1) * scale,
      (box.bottom - box.top + 1) * scale);
  }
}

export { gray, paintPlane };
