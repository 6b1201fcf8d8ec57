// The explorer page: runs, tabs and the shared input; each tab is its own module.

import { getJSON } from "./api.js";
import { fmt, percent } from "./draw.js";
import { InputPanel } from "./input.js";
import { Overview } from "./overview.js";
import { Playground } from "./playground.js";
import { AttributionView } from "./attribution.js";
import { AttackView } from "./attack.js";
import { LayersView } from "./layers.js";
import { ModelCard } from "./card.js";
import { TrainView } from "./train.js";
import { LearningPlayground } from "./playground2d.js";
import { explainViews } from "./explain-text.js";

// registry: what the server can do by name (attribution methods, attacks, ...), from GET /api/registry
const state = { runs: [], run: null, card: null, input: null, registry: null };
const views = {};
let activeTab = "overview";

// Image tabs redraw when the input changes; at most one request per view is in flight and
// only the newest input is sent next, so drawing stays smooth however fast the pointer moves.
class Refresher {
  constructor(view) {
    this.view = view;
    this.busy = false;
    this.pending = false;
  }
  async request() {
    if (this.busy) {
      this.pending = true;
      return;
    }
    this.busy = true;
    try {
      await this.view.update(state);
    } catch (error) {
      this.view.fail?.(error);
    } finally {
      this.busy = false;
      if (this.pending) {
        this.pending = false;
        this.request();
      }
    }
  }
}

const refreshers = {};
const stale = new Set();

// The one current input: every image view forgets what it showed for the previous one at once
// (it redraws when shown), so no panel shows maps of one image next to another.
function inputChanged(input) {
  state.input = input;
  views.input.outline(null); // a receptive field belongs to the previous image's cell
  for (const name of Object.keys(refreshers)) {
    stale.add(name);
    views[name].inputChanged?.(input);
  }
  refreshActive();
}

function refreshActive() {
  if (refreshers[activeTab] && stale.has(activeTab) && state.input && state.run) {
    stale.delete(activeTab);
    refreshers[activeTab].request();
  }
}

function showTab(name) {
  activeTab = name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll("main > section.tab")) {
    section.hidden = section.id !== `tab-${name}`;
  }
  document.getElementById("input-panel").hidden = !["overview", "attribution", "attack"].includes(name);
  views.input.showOutline(name === "overview");
  views[name]?.shown?.(state);
  refreshActive();
}

async function selectRun(runId) {
  state.run = state.runs.find((r) => r.id === runId);
  state.card = await getJSON(`/api/runs/${encodeURIComponent(runId)}`);
  const facts = document.getElementById("run-facts");
  const accuracy = state.run.test_accuracy === null ? "" : `, test accuracy ${percent(state.run.test_accuracy)}`;
  facts.textContent = `${state.run.model} on ${state.run.dataset} (${state.run.input_shape.join("×")}, ` +
    `${state.card.parameters.toLocaleString()} parameters${accuracy})`;
  for (const view of Object.values(views)) view.runChanged?.(state);
  explainViews(state.card);
  const testImages = await views.input.loadTestImages(runId);
  // the first screen shows a test image and its prediction, not an empty canvas
  if (!state.input && testImages.length) views.input.pickTest(testImages[0]);
  // a test index of the previous run means nothing here: send the canvas, which shows that image
  else if (state.input?.kind === "test" || !state.input) views.input.sendCanvas();
  else inputChanged(state.input);
}

// The run menu, from GET /api/runs; the run shown stays selected.
async function refreshRuns() {
  state.runs = await getJSON("/api/runs");
  const select = document.getElementById("run-select");
  select.replaceChildren(...state.runs.map((run) => new Option(
    `${run.id} (${run.model}, ${run.dataset}${run.test_accuracy === null ? "" : ", " + fmt(100 * run.test_accuracy, 1) + " %"})`,
    run.id)));
  if (state.run) select.value = state.run.id;
}

async function start() {
  views.input = new InputPanel(inputChanged);
  views.overview = new Overview(views.input);
  views.playground = new Playground();
  views.attribution = new AttributionView(() => refreshers.attribution.request());
  views.attack = new AttackView(() => refreshers.attack.request());
  views.layers = new LayersView();
  views.card = new ModelCard();
  views.train = new TrainView();
  views.playground2d = new LearningPlayground();
  for (const name of ["overview", "attribution", "attack"]) refreshers[name] = new Refresher(views[name]);
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  state.registry = await getJSON("/api/registry");
  views.attribution.registryLoaded(state.registry);
  views.attack.registryLoaded(state.registry);
  const select = document.getElementById("run-select");
  await refreshRuns();
  select.addEventListener("change", () => selectRun(select.value));
  // a run finished training (or appeared in the runs folder): it joins the menu
  document.addEventListener("runs-changed", async () => {
    await refreshRuns();
    if (!state.run && state.runs.length) await selectRun(state.runs[0].id);
  });
  await views.train.load();
  views.train.poll();
  if (state.runs.length) await selectRun(state.runs[0].id);
  showTab(state.runs.length ? location.hash.slice(1) || "overview" : "train"); // no run yet: train one
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  document.getElementById("fatal").textContent = `The explorer could not start: ${error.message}`;
});
