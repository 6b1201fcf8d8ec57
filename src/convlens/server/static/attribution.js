// Where it looks: Grad-CAM, saliency, integrated gradients and occlusion maps over the input.

import { postImage, unpack } from "./api.js";
import { el, fmt, heat, message, paintImage, paintPlane, percent } from "./draw.js";

const METHODS = [
  ["grad_cam", "Grad-CAM"],
  ["saliency", "saliency"],
  ["integrated_gradients", "integrated gradients"],
  ["occlusion", "occlusion"],
];

export class AttributionView {
  constructor(refresh) {
    this.box = document.getElementById("attr-maps");
    this.target = document.getElementById("attr-target");
    this.stage = document.getElementById("attr-stage");
    this.target.addEventListener("change", refresh);
    this.stage.addEventListener("change", refresh);
  }

  runChanged(state) {
    this.target.replaceChildren(new Option("the predicted class", ""),
      ...state.card.class_names.map((name, i) => new Option(name, String(i))));
    const convStages = state.card.stages.filter((s) => s.kind === "Conv2d" || s.kind === "BasicBlock"
      || (s.shape.length === 3 && s.name !== "normalize"));
    this.stage.replaceChildren(new Option("last conv stage", ""), ...convStages.map((s) => new Option(s.name, s.name)));
    this.box.replaceChildren();
  }

  fail(error) {
    message(this.box, error.message, "error");
  }

  async update(state) {
    const url = `/api/runs/${encodeURIComponent(state.run.id)}/attribution`;
    const target = this.target.value;
    const results = await Promise.all(METHODS.map(([method]) =>
      postImage(url, state.input, { method, target, stage: method === "grad_cam" ? this.stage.value : "" })
        .catch((error) => ({ error: error.message, method }))));
    const figures = results.map((result, i) => this.figure(METHODS[i][1], result, state));
    this.box.replaceChildren(...figures);
  }

  figure(title, result, state) {
    if (result.error) return el("figure", { class: "attr" }, el("figcaption", { text: title }), el("p", { class: "error", text: result.error }));
    const image = unpack(result.input);
    const map = unpack(result.map);
    const [height, width] = map.shape;
    const base = paintImage(document.createElement("canvas"), image);
    const heatLayer = paintPlane(document.createElement("canvas"), map.data, 0, height, width, heat);
    const overlay = el("canvas", { class: "attr-overlay", "data-method": result.method });
    overlay.width = width * 8;
    overlay.height = height * 8;
    const ctx = overlay.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(base, 0, 0, overlay.width, overlay.height);
    ctx.globalAlpha = 0.55;
    ctx.drawImage(heatLayer, 0, 0, overlay.width, overlay.height);
    const caption = `${title} for class ${state.card.class_names[result.target]} ` +
      `(p = ${percent(result.probability)})${result.stage ? ` at ${result.stage}` : ""}`;
    return el("figure", { class: "attr" }, overlay, el("figcaption", { text: caption }));
  }
}

export { fmt };
