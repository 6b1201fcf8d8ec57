// What each layer learned: the kernels of a conv stage, one feature-visualization image per
// channel, and (on click) the test images that excite that channel most.

import { getJSON, unpack } from "./api.js";
import { colourLegend, colourLimits, diverging, el, fmt, message, paintImage, paintPlane } from "./draw.js";

export class LayersView {
  constructor() {
    this.stage = document.getElementById("layers-stage");
    this.filters = document.getElementById("layers-filters");
    this.features = document.getElementById("layers-features");
    this.top = document.getElementById("layers-top");
    this.stage.addEventListener("change", () => this.show());
  }

  runChanged(state) {
    this.run = state.run;
    const stages = state.card.stages.filter((s) => s.shape.length === 3 && s.name !== "normalize");
    this.stage.replaceChildren(...stages.map((s) => new Option(`${s.name} (${s.kind}, ${s.shape[0]} channels)`, s.name)));
    this.loaded = null;
    if (!this.filters.closest("section").hidden) this.show();
  }

  shown() {
    if (this.loaded !== `${this.run?.id}/${this.stage.value}`) this.show();
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
    message(this.features, "optimizing an input image for every channel…");
    try {
      const body = await getJSON(`${base}/filters?stage=${encodeURIComponent(stage)}`);
      if (current()) this.drawFilters(body);
    } catch (error) {
      if (current()) message(this.filters, `${error.message}`, "note");
    }
    try {
      const body = await getJSON(`${base}/features?stage=${encodeURIComponent(stage)}`);
      if (current()) this.drawFeatures(body, base);
    } catch (error) {
      if (current()) message(this.features, error.message, "error");
    }
  }

  drawFilters(body) {
    const parts = [];
    for (const conv of body.convolutions) {
      const weight = unpack(conv.weight);
      const [outC, inC, kh, kw] = weight.shape;
      const grid = el("div", { class: inC === 1 ? "filter-grid wrap" : "filter-grid" });
      const shownIn = Math.min(inC, 16);
      const limits = colourLimits(weight.data, true); // weights are signed: centred on 0
      for (let o = 0; o < outC; o++) {
        const row = el("div", { class: "filter-row", title: `output channel ${o}${conv.bias ? `, bias ${fmt(conv.bias[o], 3)}` : ""}` },
          el("span", { class: "filter-index", text: String(o) }));
        for (let i = 0; i < shownIn; i++) {
          const canvas = paintPlane(el("canvas", { class: "kernel" }), weight.data, (o * inC + i) * kh * kw, kh, kw,
            (v) => diverging(v, limits.high));
          row.append(canvas);
        }
        grid.append(row);
      }
      parts.push(el("h4", { text: `${conv.name}: ${outC} filters of ${inC}×${kh}×${kw}` +
        (inC > shownIn ? ` (first ${shownIn} input channels shown)` : "") }), colourLegend(limits, "weight"), grid);
    }
    this.filters.replaceChildren(...parts);
  }

  drawFeatures(body, base) {
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
    const how = body.closed_form ? "each image the exact optimum of its channel (this stage is linear in the pixels)"
      : `each image optimized for ${body.steps} steps to excite its channel`;
    document.getElementById("layers-features-note").textContent = `${count} channels, ${how}; ` +
      "click one for the test images that excite it most";
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
          el("figcaption", { text: `${item.class} (${fmt(item.score, 2)})` }))));
    } catch (error) {
      message(this.top, error.message, "error");
    }
  }
}
