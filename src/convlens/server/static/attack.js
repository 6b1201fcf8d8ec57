// Fool it: FGSM / PGD with an ε slider; original, amplified perturbation, adversarial image
// and both probability bars, all as the server's attack returned them.

import { postImage, unpack } from "./api.js";
import { colourFor, colourLegend, el, message, paintImage, paintPlane, percent, probabilityBars } from "./draw.js";

export class AttackView {
  constructor({ refresh }) {
    this.eps = document.getElementById("attack-eps");
    this.epsText = document.getElementById("attack-eps-value");
    this.method = document.getElementById("attack-method");
    this.target = document.getElementById("attack-target");
    this.images = document.getElementById("attack-images");
    this.before = document.getElementById("attack-before");
    this.after = document.getElementById("attack-after");
    this.verdict = document.getElementById("attack-verdict");
    const changed = () => {
      this.epsText.textContent = Number(this.eps.value).toFixed(2);
      refresh();
    };
    this.eps.addEventListener("input", changed);
    this.method.addEventListener("change", changed);
    this.target.addEventListener("change", changed);
  }

  registryLoaded(registry) {
    const chosen = this.method.value;
    this.method.replaceChildren(...registry.attacks.map((entry) => {
      const steps = entry.parameters.find((p) => p.name === "steps");
      return new Option(steps ? `${entry.label} (${steps.default} steps)` : entry.label, entry.name);
    }));
    if (registry.attacks.some((entry) => entry.name === chosen)) this.method.value = chosen;
  }

  runChanged(state) {
    this.target.replaceChildren(new Option("none (untargeted)", ""),
      ...state.card.class_names.map((name, i) => new Option(name, String(i))));
  }

  fail(error) {
    message(this.verdict, error.message, "error");
  }

  // the previous image's attack must not stay next to the new image
  inputChanged() {
    delete this.images.dataset.source;
    this.images.replaceChildren();
    this.before.replaceChildren();
    this.after.replaceChildren();
    message(this.verdict, "attacking the new image…");
    delete this.verdict.dataset.prediction;
  }

  async update(state) {
    const input = state.input;
    const body = await postImage(`/api/runs/${encodeURIComponent(state.run.id)}/attack`, input, {
      method: this.method.value,
      eps: this.eps.value,
      target: this.target.value,
    });
    if (state.input !== input) return; // the input changed meanwhile: its own update follows
    const eps = body.summary.eps;
    const original = unpack(body.input);
    const perturbation = unpack(body.perturbation);
    const [channels, height, width] = perturbation.shape;
    const big = (canvas) => {
      canvas.style.width = `${width * 6}px`;
      canvas.style.height = `${height * 6}px`;
      return canvas;
    };
    // the perturbation is at most ε per pixel: drawn with ε as full colour, i.e. amplified 1/ε times
    const limits = body.perturbation_limits;
    const noise = paintPlane(document.createElement("canvas"), perturbation.data, 0, height, width, colourFor(limits));
    this.images.replaceChildren(
      el("figure", {}, big(paintImage(document.createElement("canvas"), original)), el("figcaption", { text: "original" })),
      el("figure", {}, big(noise), colourLegend(limits, "pixel change"),
        el("figcaption", { text: `perturbation (±${eps.toFixed(2)}, amplified${channels > 1 ? ", channel 0" : ""})` })),
      el("figure", {}, big(paintImage(document.createElement("canvas"), unpack(body.adversarial))),
        el("figcaption", { text: "adversarial" }))
    );
    const names = state.card.class_names;
    probabilityBars(this.before, body.clean.probabilities, names);
    probabilityBars(this.after, body.attacked.probabilities, names, body.clean.probabilities);
    const was = body.clean.top[0];
    const now = body.attacked.top[0];
    this.verdict.replaceChildren(`${body.summary.method.toUpperCase()} ε = ${eps.toFixed(2)}: ` +
      `${was.class} (${percent(was.probability)}) → ${now.class} (${percent(now.probability)})` +
      (was.index !== now.index ? " — fooled" : " — not fooled"));
    this.verdict.dataset.prediction = now.class;
    this.showTarget(body, names);
    this.images.dataset.source = body.source; // which input this attack belongs to
  }

  // A targeted attack pushes one class up: its probability before → after, and its bars marked,
  // so the verdict says whether the attack got where it was aimed, not only whether it fooled.
  showTarget(body, names) {
    const target = body.summary.target;
    if (target === null || target === undefined) return;
    const [before, after] = [body.clean.probabilities[target], body.attacked.probabilities[target]];
    const reached = body.attacked.top[0].index === target;
    this.verdict.append(el("span", { id: "attack-target-verdict", class: reached ? "reached" : "",
      "data-before": before, "data-after": after,
      text: `; target ${names[target]}: ${percent(before)} → ${percent(after)}` +
        (reached ? " — reached" : " — not reached") }));
    for (const bars of [this.before, this.after]) {
      const row = bars.querySelectorAll(".bar-row")[target];
      row.classList.add("target");
      row.title = `${row.title ? `${row.title}; ` : ""}the attack's target`;
    }
  }
}

export default AttackView; // the view main.js constructs (convlens.server.views)
