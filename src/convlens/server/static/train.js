// Train and watch it learn: start a training on a built-in data set, follow its curves epoch by
// epoch (server-sent events from GET /api/train/ID/events), resume a stopped one where it stopped
// (POST /api/train/ID/resume), and scrub any run's per-epoch snapshots: the first layer's kernels
// and a fixed probe image's feature maps.
// Every number comes from the server (metrics.jsonl and the snapshots fit() wrote).

import { PAGE_ID, getJSON, postJSON, unpack } from "./api.js";
import { SPLIT_COLOURS, lineChart } from "./chart.js";
import { colourLegend, diverging, el, fmt, message, paintImage, paintPlane, percent } from "./draw.js";
import { viewExplanation } from "./explain-text.js";

const POLL_MS = 3000; // how often the list of trainings and runs is refreshed
const MAX_INPUT_CHANNELS = 3; // kernels drawn per output channel (RGB at most)

// One chart of a live training: train, validation (dashed) and test over an axis as long as the
// planned schedule, so the curves grow across it.
function curveChart(title, rows, planned, what, options) {
  const series = [
    ["train", "train", SPLIT_COLOURS.train, false],
    ["test", "test", SPLIT_COLOURS.test, false],
    ["val", "validation", SPLIT_COLOURS.val, true],
  ].map(([split, name, colour, dashed]) => ({
    key: `${split}_${what}`, name, colour, dashed, values: rows.map((r) => r[`${split}_${what}`] ?? null),
  }));
  return lineChart(title, rows.map((r) => r.epoch), series, { ...options, lastEpoch: planned || null });
}

// A word of a command line as a POSIX shell reads it: quoted only when it has to be.
function shellWord(word) {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

// How a stopped training reads in the watch menu: where it stopped and where it was going.
function stoppedLabel(stopped) {
  const how = stopped.status === "failed" ? "failed after" : "stopped at";
  return `${stopped.id} (${how} epoch ${stopped.epoch}${stopped.epochs ? ` of ${stopped.epochs}` : ""})`;
}

// The epoch that is the model: marked in metrics.jsonl once training ended (`selected`), which a
// finished run's events replay; a training watched live learns it from its run card at the end.
function keptEpoch(watching) {
  return watching.rows.find((row) => row.selected)?.epoch ?? watching.kept?.epoch ?? null;
}

export class TrainView {
  constructor() {
    this.form = document.getElementById("train-form");
    this.data = document.getElementById("train-data");
    this.model = document.getElementById("train-model");
    this.epochs = document.getElementById("train-epochs");
    this.startButton = document.getElementById("train-start");
    this.stopButton = document.getElementById("train-stop");
    this.resumeBox = document.getElementById("train-resume-box");
    this.resumeButton = document.getElementById("train-resume");
    this.status = document.getElementById("train-status");
    this.watchSelect = document.getElementById("train-watch");
    this.curves = document.getElementById("train-curves");
    this.slider = document.getElementById("train-epoch");
    this.epochLabel = document.getElementById("train-epoch-value");
    this.snapshot = document.getElementById("train-snapshot");
    this.watching = null; // {id, rows, planned, source, done, index}
    this.mine = null; // the id of the training this page started last
    this.knownRuns = null;
    this.stopped = new Map(); // id → a training that ended before its schedule (GET /api/train)
    this.snapshots = new Map(); // "id/epoch" → snapshot body
    this.startButton.addEventListener("click", () => this.start());
    this.stopButton.addEventListener("click", () => this.stop());
    this.resumeButton.addEventListener("click", () => this.resume());
    this.watchSelect.addEventListener("change", () => this.watch(this.watchSelect.value));
    this.slider.addEventListener("input", () => this.showEpoch(Number(this.slider.value), true));
    // what the tab shows, before any run is loaded too (explainViews updates it per run)
    this.form.before(el("p", { class: "view-explanation", id: "explain-train", text: viewExplanation("train", null) }));
  }

  // The options and the trainings under way; called at start and then every POLL_MS.
  async load() {
    const info = await getJSON("/api/train");
    if (!this.options) {
      this.options = info;
      this.data.replaceChildren(...info.datasets.map((d) =>
        new Option(`${d.name} (${d.input_shape.join("×")}, ${d.train.toLocaleString()} images)`, d.name)));
      this.model.replaceChildren(...info.models.map((name) => new Option(name, name)));
      this.epochs.max = String(info.max_epochs);
      const where = document.getElementById("train-where");
      if (info.runs_dir === null) {
        where.textContent = "This explorer was started without a runs folder, so it cannot train; " +
          "start it with convlens serve --runs-dir DIR.";
        this.startButton.disabled = true;
      } else {
        where.textContent = `New runs are written to ${info.runs_dir}/ (at most ${info.at_once} at once); ` +
          "a run joins the run menu when it finishes.";
      }
    }
    this.stopped = new Map((info.stopped ?? []).map((stopped) => [stopped.id, stopped]));
    this.fillWatchList(info);
    this.showResume();
    const runs = info.runs.join("\n");
    if (this.knownRuns !== null && runs !== this.knownRuns) document.dispatchEvent(new CustomEvent("runs-changed"));
    this.knownRuns = runs;
  }

  // the page is up: fill the form, then follow the trainings under way
  async started() {
    await this.load();
    this.poll();
  }

  poll() {
    setTimeout(() => this.load().catch(() => null).finally(() => this.poll()), POLL_MS);
  }

  fillWatchList(info) {
    const chosen = this.watchSelect.value;
    const training = new Set(info.trainings.map((t) => t.id));
    const options = [
      ...info.trainings.map((t) => new Option(`${t.id} (training${t.external ? ", convlens train" : ""})`, t.id)),
      ...[...this.stopped.values()].filter((s) => !training.has(s.id)).map((s) => new Option(stoppedLabel(s), s.id)),
      ...info.runs.filter((id) => !training.has(id) && !this.stopped.has(id)).map((id) => new Option(id, id)),
    ];
    if (this.watching && !options.some((o) => o.value === this.watching.id)) {
      options.unshift(new Option(this.watching.id, this.watching.id));
    }
    this.watchSelect.replaceChildren(...options);
    if (options.some((o) => o.value === chosen)) this.watchSelect.value = chosen;
  }

  // The run menu changed: watch that run, unless a training of this page is still to be seen.
  runChanged(state) {
    const idle = !this.watching || (this.watching.done && this.watching.id !== this.mine);
    if (idle && !this.curves.closest("section").hidden) this.watch(state.run.id);
  }

  shown(state) {
    if (!this.watching && state.run) this.watch(state.run.id);
  }

  async start() {
    const epochs = Number(this.epochs.value);
    this.status.textContent = "starting…";
    this.status.className = "note"; // an earlier refusal's error style ends here
    try {
      const body = await postJSON("/api/train", {
        data: this.data.value, model: this.model.value, epochs, page: PAGE_ID,
      });
      this.mine = body.id;
      this.status.textContent = `training ${body.id}…`;
      this.stopButton.disabled = false;
      await this.load();
      this.watch(body.id);
    } catch (error) {
      this.status.textContent = error.message;
      this.status.className = "error";
    }
  }

  async stop() {
    if (!this.mine) return;
    this.stopButton.disabled = true;
    this.status.textContent = "stopping…";
    try {
      const response = await fetch(`/api/train/${encodeURIComponent(this.mine)}`, { method: "DELETE" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.detail);
    } catch (error) {
      this.status.textContent = error.message;
    }
  }

  // Continue the watched stopped training in its own folder from its last saved epoch: the same
  // stream, so the curves replay the epochs so far and go on from there.
  async resume() {
    const stopped = this.stopped.get(this.watching?.id);
    if (!stopped) return;
    this.resumeButton.disabled = true;
    this.status.className = "note";
    this.status.textContent = `resuming ${stopped.id}…`;
    try {
      const body = await postJSON(`/api/train/${encodeURIComponent(stopped.id)}/resume`, { page: PAGE_ID });
      this.mine = body.id;
      this.stopped.delete(body.id);
      this.status.textContent = `training ${body.id} again from epoch ${stopped.epoch + 1}…`;
      this.stopButton.disabled = false;
      this.watch(body.id, true);
      await this.load();
    } catch (error) {
      this.status.textContent = error.message;
      this.status.className = "error";
    } finally {
      this.resumeButton.disabled = false;
    }
  }

  // The watched training ended before its schedule did: say what it kept, offer Resume and the
  // command that does the same in a terminal.
  showResume() {
    const stopped = this.watching?.done ? this.stopped.get(this.watching.id) : null;
    this.resumeBox.hidden = !stopped;
    if (!stopped) return;
    const planned = stopped.epochs ? ` of ${stopped.epochs}` : "";
    document.getElementById("train-stopped-text").textContent =
      `${stopped.id} ${stopped.status === "failed" ? "failed after" : "stopped at"} epoch ${stopped.epoch}${planned}. ` +
      "Its last saved epoch (last.json) holds the weights, the optimizer's momentum, the learning-rate schedule and " +
      "the random generators' state, so Resume continues exactly where it stopped: the remaining epochs give the " +
      "same curves and model as a training that never stopped. It joins the run menu when it finishes.";
    document.getElementById("train-resume-command").textContent = stopped.data
      ? `convlens train --data ${shellWord(stopped.data)} --out ${shellWord(stopped.folder)} --resume`
      : `convlens train --out ${shellWord(stopped.folder)} --resume`;
  }

  // Follow one run or training: its epochs (all so far, then live) and its snapshots; ``again``
  // follows it anew though it is watched (a resumed training).
  watch(id, again = false) {
    if (!id || (this.watching?.id === id && !again)) return;
    this.watching?.source?.close();
    const watching = { id, rows: [], planned: null, done: null, index: null, source: null, follow: true };
    this.watching = watching;
    this.showResume();
    if (![...this.watchSelect.options].some((o) => o.value === id)) this.watchSelect.prepend(new Option(id, id));
    this.watchSelect.value = id;
    this.curves.dataset.run = id;
    this.curves.dataset.epochs = "0";
    delete this.curves.dataset.done;
    this.curves.replaceChildren();
    message(this.snapshot, "waiting for the first epoch…");
    this.slider.max = "0";
    this.slider.value = "0";
    this.epochLabel.textContent = "";
    const source = new EventSource(`/api/train/${encodeURIComponent(id)}/events`);
    watching.source = source;
    source.onmessage = (event) => {
      if (this.watching !== watching) return;
      const row = JSON.parse(event.data);
      if (row.restart) { // the folder is being trained again from its first epoch
        watching.rows = [];
        watching.index = watching.indexRequest = null;
        return;
      }
      if (row.done) {
        source.close();
        this.finished(watching, row);
        return;
      }
      watching.rows.push(row);
      watching.planned = row.epochs ?? watching.planned;
      this.drawCurves();
      if (row.snapshot) this.newSnapshot(watching, row.epoch);
    };
    source.onerror = () => {
      if (this.watching === watching && !watching.done) this.status.textContent = `lost the connection to ${id}'s events`;
      source.close();
    };
  }

  finished(watching, done) {
    watching.done = done;
    this.curves.dataset.done = done.status;
    if (watching.id === this.mine) {
      this.stopButton.disabled = true;
      this.status.className = done.status === "failed" ? "error" : "note";
      this.status.textContent = {
        finished: `${done.id} finished after ${done.epochs_done} epochs; it is in the run menu now`,
        stopped: `${done.id} stopped after ${done.epochs_done} epochs` +
          (done.resumable ? "; Resume continues it from there" : ", before its first epoch was saved"),
        failed: `${done.id} failed: ${done.message}`,
      }[done.status] ?? done.status;
    }
    if (done.run) {
      document.dispatchEvent(new CustomEvent("runs-changed"));
      this.loadKept(watching, done.run);
    }
    if (!watching.index) this.newSnapshot(watching, null); // a run without per-epoch events
    if (watching.rows.length && this.watching === watching) this.drawCurves(); // "(where it stopped)"
    this.load().catch(() => null); // the watch menu says how it ended (stopped: Resume)
    this.showResume();
  }

  // Which epoch the finished run kept and why (its card: metrics.selected_epoch and selection).
  async loadKept(watching, runId) {
    try {
      const metrics = (await getJSON(`/api/runs/${encodeURIComponent(runId)}`)).metrics ?? {};
      if (metrics.selected_epoch) watching.kept = { epoch: metrics.selected_epoch, why: metrics.selection ?? "" };
    } catch {
      return; // the curves stand without the mark; the run menu says why the run cannot load
    }
    if (this.watching === watching) this.drawCurves();
  }

  drawCurves() {
    const { rows, planned } = this.watching;
    const cursor = Number(this.slider.value) || null;
    const kept = keptEpoch(this.watching);
    // drawn at the width there is, so a phone shows the charts' text at its real size
    const room = this.curves.clientWidth;
    const width = room > 0 && room < 420 ? room : null;
    this.curves.dataset.epochs = String(rows.length);
    this.curves.replaceChildren(
      curveChart("loss per epoch", rows, planned, "loss", { min: 0, cursor, kept, width }),
      curveChart("accuracy per epoch", rows, planned, "accuracy", { min: 0, max: 1, asPercent: true, cursor, kept, width }),
    );
    const last = rows[rows.length - 1];
    if (last) {
      this.curves.append(el("p", { class: "note", id: "train-last", text: `epoch ${last.epoch}${planned ? ` of ${planned}` : ""}` +
        `${{ finished: " (the last)", stopped: " (where it stopped)" }[this.watching.done?.status] ?? ""}: train loss ${fmt(last.train_loss, 3)}, test accuracy ${percent(last.test_accuracy)}` }));
    }
    const model = rows.find((row) => row.epoch === kept);
    if (model) { // the model is the kept epoch, not the last one: its numbers are the run's
      const why = this.watching.kept?.epoch === kept ? this.watching.kept.why : "";
      const validation = Number.isFinite(model.val_accuracy) ? `, validation ${percent(model.val_accuracy)}` : "";
      this.curves.append(el("p", { id: "train-kept", "data-epoch": kept },
        el("strong", { text: `the model is epoch ${kept}: test accuracy ${percent(model.test_accuracy)}${validation}` }),
        why ? el("span", { class: "note", text: ` (${why})` }) : null));
    }
  }

  // A snapshot was saved (or the run ended): extend the slider; follow it while at the newest epoch.
  async newSnapshot(watching, epoch) {
    watching.indexRequest ??= getJSON(`/api/train/${encodeURIComponent(watching.id)}/snapshots`);
    try {
      watching.index = await watching.indexRequest;
    } catch (error) {
      if (this.watching === watching) message(this.snapshot, error.message, "note");
      return;
    }
    if (epoch !== null && !watching.index.epochs.includes(epoch)) watching.index.epochs.push(epoch);
    if (this.watching !== watching) return;
    const epochs = watching.index.epochs;
    this.slider.min = String(epochs[0]);
    this.slider.max = String(epochs[epochs.length - 1]);
    if (watching.follow && !watching.drawing) { // epochs replayed in a burst: draw the newest once
      watching.drawing = true;
      setTimeout(() => {
        watching.drawing = false;
        if (this.watching === watching) this.showEpoch(Number(this.slider.max), false);
      }, 50);
    }
  }

  async showEpoch(epoch, byHand) {
    const watching = this.watching;
    if (!watching?.index) return;
    const saved = watching.index.epochs;
    if (!saved.includes(epoch)) epoch = saved.filter((e) => e <= epoch).pop() ?? saved[0];
    if (byHand) watching.follow = epoch === saved[saved.length - 1];
    this.slider.value = String(epoch);
    this.epochLabel.textContent = epoch === 0 ? "0 (initial weights)" : String(epoch);
    const key = `${watching.id}/${epoch}`;
    try {
      if (!this.snapshots.has(key)) {
        this.snapshots.set(key, await getJSON(`/api/train/${encodeURIComponent(watching.id)}/snapshots/${epoch}`));
      }
    } catch (error) {
      message(this.snapshot, error.message, "error");
      return;
    }
    if (this.watching !== watching || Number(this.slider.value) !== epoch) return; // a newer choice won
    this.drawSnapshot(watching.index, this.snapshots.get(key));
    if (watching.rows.length) this.drawCurves();
  }

  drawSnapshot(index, body) {
    const kernels = unpack(body.kernels);
    const maps = unpack(body.feature_maps);
    const [outC, inC, kh, kw] = kernels.shape;
    const [, mh, mw] = maps.shape;
    const kernelLimits = body.kernel_limits; // the server's: signed, centred on 0
    const mapLimits = body.feature_map_limits;
    const shownIn = Math.min(inC, MAX_INPUT_CHANNELS);
    const filters = el("div", { class: "train-grid" });
    const featureMaps = el("div", { class: "train-grid" });
    for (let o = 0; o < outC; o++) {
      const tile = el("div", { class: "train-kernel", title: `${index.stage} channel ${o}` });
      for (let i = 0; i < shownIn; i++) {
        tile.append(paintPlane(el("canvas", { class: "kernel" }), kernels.data, (o * inC + i) * kh * kw, kh, kw,
          (v) => diverging(v, kernelLimits.high)));
      }
      filters.append(tile);
      featureMaps.append(paintPlane(el("canvas", { class: "train-map", title: `${index.stage} channel ${o}` }),
        maps.data, o * mh * mw, mh, mw, (v) => diverging(v, mapLimits.high)));
    }
    const probe = paintImage(el("canvas", { class: "train-probe" }), unpack(index.probe.input));
    this.snapshot.dataset.epoch = String(body.epoch);
    this.snapshot.replaceChildren(
      el("figure", {}, probe, el("figcaption", { text: `probe: test image ${index.probe.index} (${index.probe.class})` })),
      el("div", {}, el("h4", { text: `${index.stage} kernels (${outC} of ${inC}×${kh}×${kw})` +
        (inC > shownIn ? `, first ${shownIn} input channels` : "") }), colourLegend(kernelLimits, "weight"), filters),
      el("div", {}, el("h4", { text: `${index.stage} feature maps of the probe (${mh}×${mw})` }),
        colourLegend(mapLimits, "activation"), featureMaps),
    );
  }
}

export default TrainView; // the view main.js constructs (convlens.server.views)
