// The neuron panel: one channel of one stage seen from every side, on the current input (POST
// /api/runs/ID/neuron, convlens.views.neuron_record; keys in docs/explorer.md, "Neuron panel").
// It is no tab: any view opens it for a channel (neuron-link.js: openNeuron, or a neuronLink
// button), it slides in over the page, and it follows the input as the tabs do: a new image redraws it.
// The blocks themselves are drawn by neuron-blocks.js. The two pictures of what the channel
// responds to take gradient searches (once per channel): the panel is drawn first, and they
// follow from GET .../neuron-pictures (data-pictures on the panel says "loading", "ready", "error").

import { getJSON, postImage } from "./api.js";
import { el, message } from "./draw.js";
import { neuronBlocks, neuronTitle, pictureBlocks } from "./neuron-blocks.js";
import { OPEN_NEURON, hasNeuronPanel } from "./neuron-link.js";

export class NeuronPanel {
  constructor(state) {
    this.state = state; // the page's state (main.js): run, card, input
    this.target = null; // {stage, channel} shown, or null when closed
    this.asked = 0; // requests made; only the newest one's answer is drawn
    this.busy = false;
    this.pending = false;
    this.pictures = null; // {run, stage, channel, answer}: the last pictures drawn, kept for a new input
    this.title = el("h2", { id: "neuron-title" });
    this.body = el("div", { class: "neuron-body", id: "neuron-body" });
    this.closeButton = el("button", { class: "neuron-close", id: "neuron-close", type: "button", text: "close ✕",
      onclick: () => this.close() });
    this.box = el("section", { id: "neuron-panel", class: "neuron-panel", role: "dialog",
      "aria-labelledby": "neuron-title", hidden: "" },
    el("div", { class: "neuron-head" }, this.title, this.closeButton), this.body);
    document.body.append(this.box);
    document.addEventListener(OPEN_NEURON, (event) => this.open(event.detail));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.target) this.close();
    });
  }

  open(target) {
    const known = hasNeuronPanel(this.state.card, target.stage);
    this.target = target;
    this.box.hidden = false;
    this.title.textContent = neuronTitle(target, this.state.card);
    this.box.scrollTop = 0;
    this.closeButton.focus({ preventScroll: true }); // the keyboard is in the panel; Escape closes it
    if (!known) { // a flat stage, the normalization or a name this run lacks: said in the panel
      this.asked++;
      this.box.dataset.state = "error";
      message(this.body, `${target.stage} has no channels with a panel: pick a stage with feature maps`, "error");
      return;
    }
    this.refresh();
  }

  close() {
    this.target = null;
    this.pending = false;
    this.asked++; // an answer still on its way is not drawn
    this.box.hidden = true;
    delete this.box.dataset.state;
    delete this.box.dataset.pictures;
    this.body.replaceChildren();
  }

  // another run: its channels are other channels
  runChanged() {
    this.close();
  }

  // the page's input changed: the open panel is redrawn for it, as the open tab is
  inputChanged() {
    if (this.target) this.refresh();
  }

  // One request in flight; while it runs, only the newest wish (input, channel) is kept for next.
  async refresh() {
    if (this.busy) {
      this.pending = true;
      return;
    }
    this.busy = true;
    try {
      await this.load();
    } finally {
      this.busy = false;
      if (this.pending && this.target) {
        this.pending = false;
        this.refresh();
      }
    }
  }

  async load() {
    const { run, card, input } = this.state;
    const target = this.target;
    const ask = ++this.asked;
    const current = () => ask === this.asked && this.target === target;
    this.box.dataset.state = "loading";
    this.box.setAttribute("aria-busy", "true");
    // the previous answer stays readable under the line that says a new one is being computed
    this.body.querySelector(".neuron-loading")?.remove();
    this.body.prepend(el("p", { class: "note neuron-loading", id: "neuron-loading",
      text: `computing ${target.stage} channel ${target.channel} for ${input?.kind === "test" ? `test image ${input.index}` : "your image"}: ` +
        "its kernel, map, what it responds to, its top patches over the test images and the effect of zeroing it…" }));
    try {
      if (!run || !input) throw new Error("pick a test image or draw one first: the panel shows the channel on the current input");
      const body = await postImage(`/api/runs/${encodeURIComponent(run.id)}/neuron`, input,
        { stage: target.stage, channel: target.channel, pictures: false });
      if (!current()) return;
      const kept = this.pictures?.run === run.id && this.pictures.stage === target.stage &&
        this.pictures.channel === target.channel ? this.pictures.answer : null; // the input changed, not the channel
      this.body.replaceChildren(...neuronBlocks(body, card, kept));
      this.box.dataset.state = "ready";
      this.box.dataset.stage = body.stage;
      this.box.dataset.channel = body.channel;
      this.box.dataset.source = body.source;
      if (kept) this.box.dataset.pictures = "ready";
      else this.loadPictures(run, target, current); // not awaited: the next input or channel need not wait
    } catch (error) {
      if (!current()) return;
      this.box.dataset.state = "error";
      message(this.body, error.message, "error"); // in the panel, never thrown at the page
    } finally {
      if (current()) this.box.removeAttribute("aria-busy");
    }
  }

  // the unit optimum and the channel visualization, in place of their "searching" lines
  async loadPictures(run, target, current) {
    this.box.dataset.pictures = "loading";
    const query = new URLSearchParams({ stage: target.stage, channel: target.channel });
    let pictures;
    try {
      pictures = await getJSON(`/api/runs/${encodeURIComponent(run.id)}/neuron-pictures?${query}`);
    } catch (error) {
      if (!current()) return;
      this.box.dataset.pictures = "error";
      for (const line of this.body.querySelectorAll("#neuron-optimum .neuron-text, #neuron-visualization .neuron-text")) {
        line.textContent = `not computed: ${error.message}`;
        line.classList.add("error");
      }
      return;
    }
    if (!current()) return;
    this.pictures = { run: run.id, stage: target.stage, channel: target.channel, answer: pictures };
    for (const drawn of pictureBlocks(pictures)) this.body.querySelector(`#${drawn.id}`)?.replaceWith(drawn);
    this.box.dataset.pictures = "ready";
  }
}
