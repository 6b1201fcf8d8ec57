// Where it looks: one map over the input per registered attribution method (GET /api/registry),
// all asked for in one request, so the image is sent and echoed back once. The run's default method
// (GET .../default-attribution: the most faithful one that passes, measured on the run's own test
// images) comes first, with why it was chosen; its stage is the menu's default selection.

import { getJSON, postImage, unpack } from "./api.js";
import { colourFor, colourLegend, el, fmt, message, paintImage, paintPlane, percent } from "./draw.js";
import { rankedChannelLinks } from "./neuron-ranking.js";

export class AttributionView {
  constructor({ refresh }) {
    this.box = document.getElementById("attr-maps");
    this.target = document.getElementById("attr-target");
    this.stage = document.getElementById("attr-stage");
    this.target.addEventListener("change", refresh);
    this.stage.addEventListener("change", refresh);
    this.methods = []; // [name, label] of every registered attribution method
    this.chosen = null; // the run's default-attribution answer, once it arrives
    this.note = el("p", { id: "attr-default", class: "note" });
    this.box.before(this.note);
    this.refresh = refresh;
    this.stage.addEventListener("change", () => { this.stagePicked = true; });
  }

  registryLoaded(registry) {
    this.methods = registry.attributions.map((entry) => [entry.name, entry.label]);
  }

  runChanged(state) {
    this.target.replaceChildren(new Option("the predicted class", ""),
      ...state.card.class_names.map((name, i) => new Option(name, String(i))));
    // the stages Grad-CAM may look at: the server's layer-kind table decides (layer.grad_cam_target);
    // until the server's ordered list arrives, the card's, in model order
    const targets = state.card.stages.filter((s) => s.layer?.grad_cam_target);
    this.stage.replaceChildren(new Option("last rectified stage (pool after the last conv)", ""), ...targets.map((s) => new Option(s.name, s.name)));
    this.box.replaceChildren();
    this.chosen = null;
    this.stagePicked = false; // until the user picks a stage, the measured default's stage is selected
    if (state.card.task === "segmentation") return; // no whole-image attribution: the Segment tab explains pixels
    this.loadStages(state.run.id).then(() => this.loadDefault(state.run.id));
  }

  // the first request on a run measures every method (a while); later ones read the stored result
  async loadDefault(runId) {
    this.note.className = "note";
    this.note.textContent = "measuring which attribution method is most faithful on this run (once; stored with the run)…";
    let chosen;
    try {
      chosen = await getJSON(`/api/runs/${encodeURIComponent(runId)}/default-attribution`);
    } catch (error) {
      this.note.textContent = `default method not measured: ${error.message}`;
      return;
    }
    if (this.runId !== undefined && this.runId !== runId) return;
    this.chosen = chosen;
    const label = this.methods.find(([name]) => name === chosen.method)?.[1] ?? chosen.method;
    const where = chosen.stage ? ` at ${chosen.stage}` : "";
    this.note.className = chosen.passes ? "note verdict-passes" : chosen.passes === false ? "note verdict-fails" : "note";
    this.note.dataset.method = chosen.method;
    this.note.dataset.passes = String(chosen.passes);
    this.note.textContent = chosen.passes
      ? `default on this run: ${label}${where}, ${chosen.why}`
      : `default on this run: ${label}${where} — ${chosen.why}`;
    const option = [...this.stage.options].find((o) => o.value === chosen.stage);
    if (option && !option.text.includes("measured")) option.text += " — chosen by measurement";
    if (option && !this.stagePicked && this.stage.value !== chosen.stage) {
      this.stage.value = chosen.stage;
      this.refresh(); // the maps again, at the measured stage
    } else {
      this.markDefault();
    }
  }

  // the default method's figure first, marked
  markDefault() {
    if (!this.chosen) return;
    const figure = this.box.querySelector(`figure.attr[data-method="${CSS.escape(this.chosen.method)}"]`);
    if (!figure || figure.classList.contains("attr-default")) return;
    figure.classList.add("attr-default");
    // a badge, not only colour: the outline and the word both say which map is the default
    figure.querySelector(".attr-title")?.append(" ", el("span", { class: "attr-default-mark", text: "(default)" }));
    this.box.prepend(figure);
  }

  // rectified stages first; the others (before a ReLU) marked, in a group of their own
  async loadStages(runId) {
    let stages;
    try {
      stages = await getJSON(`/api/runs/${encodeURIComponent(runId)}/grad-cam-stages`);
    } catch {
      return; // the card's list stays
    }
    if (this.runId !== undefined && this.runId !== runId) return;
    const chosen = this.stage.value;
    const option = (s) => new Option(`${s.stage}${s.default ? " (default)" : ""}${s.rectified ? "" : " — before a ReLU"}`, s.stage);
    const others = stages.filter((s) => !s.rectified);
    const group = el("optgroup", { label: "before a ReLU: weighs evidence the network throws away" }, ...others.map(option));
    this.stage.replaceChildren(new Option("last rectified stage (pool after the last conv)", ""),
      ...stages.filter((s) => s.rectified).map(option), ...(others.length ? [group] : []));
    this.stage.value = [...this.stage.options].some((o) => o.value === chosen) ? chosen : "";
  }

  fail(error) {
    message(this.box, error.message, "error");
  }

  // maps of the previous image must not stay next to the new one
  inputChanged() {
    delete this.box.dataset.source;
    message(this.box, "computing the maps for the new image…");
  }

  async update(state) {
    this.runId = state.run.id;
    const input = state.input;
    const url = `/api/runs/${encodeURIComponent(state.run.id)}/attributions`;
    // every method in one request; the stage menu applies to Grad-CAM (the server leaves it out
    // for methods that take no stage). A method that cannot explain this model answers an error.
    let body;
    try {
      body = await postImage(url, input, { methods: this.methods.map(([method]) => method), target: this.target.value, stage: this.stage.value });
    } catch (error) {
      body = { error: error.message };
    }
    if (state.input !== input) return; // the input changed meanwhile: its own update follows
    const image = body.input ? unpack(body.input) : null;
    const figures = this.methods.map(([method, label]) =>
      this.figure(label, body.attributions?.[method] ?? { error: body.error ?? "no answer" }, image, state));
    this.box.replaceChildren(...figures);
    this.markDefault();
    if (body.source) this.box.dataset.source = body.source; // which input these maps belong to
  }

  figure(title, result, image, state) {
    if (result.error) return el("figure", { class: "attr", "data-method": result.method ?? "" }, el("figcaption", { class: "attr-title", text: title }), el("p", { class: "error", text: result.error }));
    const map = unpack(result.map);
    const [height, width] = map.shape;
    const base = paintImage(document.createElement("canvas"), image);
    const limits = result.limits; // the server's robust limits: one hot pixel cannot wash the map out
    const heatLayer = paintPlane(document.createElement("canvas"), map.data, 0, height, width, colourFor(limits));
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
    const judged = result.faithfulness?.run?.verdict;
    return el("figure", { class: `attr${judged === "fails" ? " attr-fails" : ""}`, "data-judged": judged ?? "", "data-method": result.method },
      el("figcaption", { class: "attr-title", text: judged === "fails" ? `${title} ✗ fails on this run` : title }),
      overlay, colourLegend(limits, "importance"), el("figcaption", { text: caption }), verdict(result.faithfulness),
      result.stage ? rankedChannelLinks(result.stage, result.target, state) : null); // its stage's strongest channels
  }
}

// "passes / fails / inconclusive on this run (numbers)" and this image's drop against random;
// every number is the server's (convlens.inspect.run_faithfulness.attribution_faithfulness)
function verdict(found) {
  if (!found) return null;
  const box = el("div", { class: "verdict" });
  const run = found.run;
  if (run) {
    const d = run.deletion, r = run.randomization;
    box.append(el("p", { class: `verdict-run verdict-${run.verdict}`, "data-verdict": run.verdict,
      text: `${run.verdict} on this run: deletion AUC ${fmt(d.auc, 3)} vs random order ${fmt(d.random_auc, 3)} ` +
        `(difference ${fmt(d.difference, 3)}, 95 % interval ${fmt(d.interval[0], 3)} to ${fmt(d.interval[1], 3)}, ` +
        `${d.images} test images${d.blank ? `, ${d.blank} blank maps left out` : ""}, ${run.fill} fill); ` +
        `after weight randomization Spearman ${fmt(r.spearman, 2)} (${r.verdict}: a map passes below ${r.threshold})` }));
  } else if (found.run_error || found.error) {
    box.append(el("p", { class: "note", text: `not measured on this run: ${found.run_error ?? found.error}` }));
  }
  if (found.verdict) {
    const drop = found.drop === null ? "a blank map" : `drop ${fmt(found.drop, 3)} against random`;
    box.append(el("p", { class: `verdict-image verdict-${found.verdict}`, "data-verdict": found.verdict,
      text: `this image: ${found.verdict}, deletion AUC ${fmt(found.deletion_auc, 3)} vs random ` +
        `${fmt(found.random_deletion_auc, 3)} (${drop})` }));
  }
  return box;
}

export { fmt };

export default AttributionView; // the view main.js constructs (convlens.server.views)
