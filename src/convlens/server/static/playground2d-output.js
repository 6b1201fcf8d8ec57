// The learning playground's output: the large map of the output neuron over the plane with the
// points on top, and its colour bar. A classification shows P(class 1) around 0.5, a regression
// its predicted value around 0 on ±1 (the targets' range); "discretize" shows the class (or, for
// a regression, the sign) instead of the shade, as the TensorFlow Playground's checkbox does.
// The values are the server's; the only arithmetic here maps a value to a colour.

import { diverging, el } from "./draw.js";

export const CLASS_COLOURS = ["#2166ac", "#b2182b"]; // class 0, class 1: the ends of the diverging map
const REGRESSION_BOUND = 1; // the regression targets lie in about [-1, 1]: full colour there

export function paint(canvas, values, size, colour) {
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(size, size);
  for (let i = 0; i < size * size; i++) image.data.set([...colour(values[i]), 255], 4 * i);
  ctx.putImageData(image, 0, 0);
}

// value → [r, g, b] for the output neuron (its tile and the large map).
export function outputColour(task, discretize) {
  if (task === "regression") {
    return discretize ? (v) => diverging(v >= 0 ? 1 : -1, 1) : (v) => diverging(v, REGRESSION_BOUND);
  }
  return discretize ? (p) => diverging(p >= 0.5 ? 1 : -1, 1) : (p) => diverging(p - 0.5, 0.5);
}

// What a point's fill shows: its class, or its target on the output's own scale.
function pointColour(task, target) {
  if (task !== "regression") return CLASS_COLOURS[target];
  return `rgb(${diverging(target, REGRESSION_BOUND).join(",")})`;
}

// The output over the plane, smoothed to the canvas, with the training points (white edge) and,
// when asked, the test points (black edge).
// `boundary` is the snapshot's unpacked {shape, data}.
export function drawOutput(canvas, boundary, task, start, { showTest, discretize }) {
  const { shape, data } = boundary;
  const small = document.createElement("canvas");
  paint(small, data, shape[0], outputColour(task, discretize));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = !discretize; // a discretized map keeps its hard edge
  ctx.globalAlpha = 0.8; // lighter, so the points stand out
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 1;
  const plane = start.plane;
  const place = (x, y) => [((x + plane) / (2 * plane)) * canvas.width, ((plane - y) / (2 * plane)) * canvas.height];
  const sets = [["train", "white"]];
  if (showTest) sets.push(["test", "black"]);
  for (const [split, edge] of sets) {
    for (const [x, y, target] of start.points[split]) {
      const [px, py] = place(x, y);
      ctx.beginPath();
      ctx.arc(px, py, 3, 0, 2 * Math.PI);
      ctx.fillStyle = pointColour(task, target);
      ctx.fill();
      ctx.strokeStyle = edge;
      ctx.lineWidth = 1;
      ctx.stroke();
    }
  }
}

const LEGENDS = {
  classification: { low: 0, high: 1, label: "P(class 1)",
    help: "P(class 1): 0 = class 0 (blue), 0.5 undecided (white), 1 = class 1 (red)" },
  "classification discretized": { low: 0, high: 1, label: "class (P(class 1) ≥ 0.5: class 1)",
    help: "the class the network gives each point: blue class 0, red class 1" },
  regression: { low: -1, high: 1, label: "predicted value",
    help: "the network's output: -1 blue, 0 white, 1 red (beyond ±1: the end colours)" },
  "regression discretized": { low: -1, high: 1, label: "sign of the predicted value",
    help: "the predicted value rounded to its sign: -1 blue, +1 red" },
};

// The colour bar under the map, as wide as it: the low end under its left, the high under its right.
export function drawOutputLegend(box, task, discretize) {
  const key = `${task}${discretize ? " discretized" : ""}`;
  if (box.dataset.legend === key) return;
  const { low, high, label, help } = LEGENDS[key];
  const bar = el("canvas", { class: "legend-bar" });
  const colour = outputColour(task, discretize);
  paint(bar, Array.from({ length: 64 * 64 }, (_, i) => low + ((high - low) * (i % 64)) / 63), 64, colour);
  box.dataset.legend = key;
  box.replaceChildren(el("div", { class: "colour-legend", title: help },
    el("span", { class: "legend-value pg2-legend-low", text: String(low) }), bar,
    el("span", { class: "legend-value pg2-legend-high", text: String(high) }),
    el("span", { class: "legend-label", text: label })));
}
