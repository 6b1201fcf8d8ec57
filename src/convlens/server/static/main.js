// The explorer page: runs, the shared input, and the tabs. The tabs are not listed here: each is a
// view the server declares (GET /api/views, convlens.server.views) with its title, its section's
// markup and an ES module whose default export is the view's class, imported on start. A view's
// class is constructed with {name, section, inputPanel, refresh, state} and may define
// registryLoaded(registry), started(state), runChanged(state), shown(state), hidden(); a view that
// uses the input also inputChanged(input), update(state) and fail(error).

import { getJSON } from "./api.js";
import { el, fmt, message, percent } from "./draw.js";
import { InputPanel } from "./input.js";
import { explainViews } from "./explain-text.js";
import { NeuronPanel } from "./neuron.js";

// registry: what the server can do by name (attribution methods, attacks, ...), from GET /api/registry
const state = { runs: [], run: null, card: null, input: null, registry: null };
let inputPanel = null;
let neuronPanel = null; // one channel from every side, opened from any view (neuron.js)
let declared = []; // GET /api/views, in tab order
const views = {}; // name → the view's object
let activeTab = null;

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

const refreshers = {}; // one per view that uses the input
const stale = new Set();

// The one current input: every image view forgets what it showed for the previous one at once
// (it redraws when shown), so no panel shows maps of one image next to another.
function inputChanged(input) {
  state.input = input;
  inputPanel.outline(null); // a receptive field belongs to the previous image's cell
  for (const name of Object.keys(refreshers)) {
    stale.add(name);
    views[name].inputChanged?.(input);
  }
  neuronPanel?.inputChanged();
  refreshActive();
}

function refreshActive() {
  if (refreshers[activeTab] && stale.has(activeTab) && state.input && state.run) {
    stale.delete(activeTab);
    refreshers[activeTab].request();
  }
}

// Whether a view explains the open run: a classification view (softmax bars, attacks) has nothing
// to say of a model that answers a class per pixel, and the Segment view nothing of a classifier.
function fits(view) {
  return !state.card || (view.tasks ?? []).includes(state.card.task ?? "classification");
}

function showTab(name) {
  const fitting = declared.filter(fits);
  const view = fitting.find((v) => v.name === name) ?? fitting[0] ?? declared[0];
  if (activeTab !== view.name) views[activeTab]?.hidden?.();
  activeTab = view.name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === view.name);
  }
  for (const section of document.querySelectorAll("main > section.tab")) {
    section.hidden = section.id !== `tab-${view.name}`;
  }
  document.getElementById("input-panel").hidden = !view.uses_input;
  views[view.name]?.shown?.(state);
  refreshActive();
}

async function selectRun(runId) {
  state.run = state.runs.find((r) => r.id === runId);
  state.card = await getJSON(`/api/runs/${encodeURIComponent(runId)}`);
  const facts = document.getElementById("run-facts");
  const iou = state.card.metrics?.test_mean_iou; // a segmentation run is scored per pixel
  const accuracy = state.card.task === "segmentation" ? (iou === undefined ? "" : `, mean IoU ${percent(iou)}`)
    : state.run.test_accuracy === null ? "" : `, test accuracy ${percent(state.run.test_accuracy)}`;
  const on = state.run.dataset ? ` on ${state.run.dataset}` : ""; // an imported model may name none
  facts.textContent = `${state.run.model}${on} (${state.run.input_shape.join("×")}, ` +
    `${state.card.parameters.toLocaleString()} parameters${accuracy})`;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.hidden = !fits(declared.find((v) => v.name === button.dataset.tab));
  }
  for (const view of Object.values(views)) view.runChanged?.(state);
  neuronPanel.runChanged();
  if (activeTab && !fits(declared.find((v) => v.name === activeTab))) showTab(activeTab);
  explainViews(state.card, state.registry);
  const testImages = await inputPanel.loadTestImages(runId, Boolean(state.run.dataset));
  // a run opens on one of its own test images: the previous run's image (a photo for a digit
  // model, a digit shrunk to another model's size) would only show how the model fails on it
  if (testImages.length) inputPanel.pickTest(testImages[0]);
  // no test images (an imported model naming no data set): the user's own drawing or upload is
  // meant for any model and is kept; another run's test image is not: a blank canvas instead
  else if (state.input?.kind === "blob") inputChanged(state.input);
  else inputPanel.clear(true);
}

// The run menu, from GET /api/runs; the run shown stays selected.
async function refreshRuns() {
  state.runs = await getJSON("/api/runs");
  const select = document.getElementById("run-select");
  select.replaceChildren(...state.runs.map((run) => new Option(
    `${run.id} (${[run.model, run.dataset].filter(Boolean).join(", ")}${run.test_accuracy === null ? "" : ", " + fmt(100 * run.test_accuracy, 1) + " %"})`,
    run.id)));
  if (state.run) select.value = state.run.id;
}

function styleSheet(href) {
  return new Promise((resolve, reject) => {
    const link = el("link", { rel: "stylesheet", href });
    link.addEventListener("load", resolve);
    link.addEventListener("error", () => reject(new Error(`cannot load ${href}`)));
    document.head.append(link);
  });
}

async function markup(url) {
  if (!url) return "";
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load ${url}: HTTP ${response.status}`);
  return response.text();
}

// One view's files: its markup, its module, its style sheets, fetched in parallel.
async function loadView(view) {
  const [html, module] = await Promise.all([markup(view.markup), import(view.module), ...view.styles.map(styleSheet)]);
  if (typeof module.default !== "function") throw new Error(`${view.module} has no default export (the view's class)`);
  return { html, ViewClass: module.default };
}

// Every declared view: its tab button, its section (its own markup, then its module's class).
// The views are constructed in tab order once every section is in place. A view that cannot
// load or start says so in its own section; the other tabs work.
async function buildViews() {
  declared = await getJSON("/api/views");
  const loaded = await Promise.all(declared.map((view) => loadView(view).catch((error) => ({ error }))));
  const nav = document.getElementById("tabs");
  const main = document.querySelector("main");
  const sections = declared.map((view, i) => {
    const button = el("button", { "data-tab": view.name, text: view.label, title: view.help });
    button.addEventListener("click", () => showTab(view.name));
    nav.append(button);
    const section = el("section", { id: `tab-${view.name}`, class: "tab", hidden: "" });
    section.innerHTML = loaded[i].html ?? ""; // our own file (or a registered plugin's), never user input
    main.append(section);
    return section;
  });
  declared.forEach((view, i) => {
    const refresh = () => refreshers[view.name]?.request();
    try {
      if (loaded[i].error) throw loaded[i].error;
      views[view.name] = new loaded[i].ViewClass({ name: view.name, section: sections[i], inputPanel, refresh, state });
    } catch (error) {
      message(sections[i], `The ${view.label} view could not start: ${error.message}`, "error");
      console.warn(`view ${view.name}:`, error);
      return;
    }
    if (view.uses_input) refreshers[view.name] = new Refresher(views[view.name]);
  });
}

async function start() {
  inputPanel = new InputPanel(inputChanged);
  neuronPanel = new NeuronPanel(state);
  await buildViews();
  state.registry = await getJSON("/api/registry");
  for (const view of Object.values(views)) view.registryLoaded?.(state.registry);
  const select = document.getElementById("run-select");
  await refreshRuns();
  select.addEventListener("change", () => selectRun(select.value));
  // a run finished training (or appeared in the runs folder): it joins the menu
  document.addEventListener("runs-changed", async () => {
    await refreshRuns();
    if (!state.run && state.runs.length) await selectRun(state.runs[0].id);
  });
  await Promise.all(Object.values(views).map((view) => view.started?.(state)));
  if (state.runs.length) await selectRun(state.runs[0].id);
  // no run yet: open the view that makes one (Train), or the linked one if it needs no run
  const first = state.runs.length ? declared[0] : declared.find((v) => v.opens_without_runs) ?? declared[0];
  const linked = declared.find((v) => v.name === location.hash.slice(1) && (state.runs.length || !v.needs_run));
  showTab(linked?.name ?? first.name);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  document.getElementById("fatal").textContent = `The explorer could not start: ${error.message}`;
});
