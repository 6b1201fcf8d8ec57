// The learning playground's loss chart and its data-set explanation: drawn from what the page
// holds, no state of their own (playground2d.js calls them on every snapshot / start).

import { el, fmt } from "./draw.js";

const SVG = "http://www.w3.org/2000/svg";

// What the first explanation paragraph says of each data set (the rest of the text is general).
const DATA_STORY = {
  spiral: "Stack a few layers and the cuts compose into the spiral's curved boundary on the right: "
    + "nothing in the network knows about spirals, it only learned where to cut and how to mix the cuts.",
  xor: "The xor points put opposite quadrants in one class, so no single cut separates them: two cuts "
    + "of the first layer, mixed by the next, draw the cross on the right (or feed x1·x2, which alone "
    + "says which quadrant a point is in).",
  circle: "A disc inside a ring needs one closed boundary: a few straight cuts, mixed, close around the "
    + "disc on the right (or feed x1² and x2², whose sum is the squared distance from the centre).",
  gauss: "Two blobs are split by one straight cut: even a network with no hidden layer draws the "
    + "boundary on the right; extra layers only bend a line that needs no bending.",
  plane: "Here the network predicts a number, not a class: the target rises as a tilted plane from "
    + "-1 (blue) to 1 (red), and the output is that sum itself, with no squashing. One linear neuron "
    + "(no hidden layer, linear activation) fits it exactly; the loss is the mean squared error.",
  "multi-gauss": "Here the network predicts a number, not a class: six bumps, up (red) and down "
    + "(blue), each a cone of radius 2. The output adds up the hidden neurons' cuts without squashing; "
    + "it takes several mixed cuts to raise one bump and sink its neighbour. The loss is the mean "
    + "squared error.",
};

// The explanation's first paragraph (`paragraph`), about the data set chosen now.
export function explainData(paragraph, dataset) {
  if (!paragraph) return;
  paragraph.dataset.dataset = dataset;
  paragraph.replaceChildren("Every hidden neuron of the first layer computes ", el("em", { text: "w₁·x1 + w₂·x2 + b" }),
    " and squashes it: its map is one straight cut through the plane, soft at the edge. A neuron of the "
    + "next layer adds up those cuts with its own weights (the lines: red positive, blue negative, thicker "
    + "is larger, a hairline is a weight near 0; the small square at a neuron is its bias b) and squashes "
    + "again, so it can draw a corner, a band or a closed blob. Hover a line or a square to read its value, "
    + `click it to set your own. ${DATA_STORY[dataset] ?? ""}`);
}

// Test and training loss per epoch: a legend above, the loss axis (0 to the largest loss so
// far) on the left, the epochs shown below. `lossName`: "loss" (cross-entropy) or "MSE".
export function drawLossChart(svg, history, lossName = "loss") {
  if (!history.length) return svg.replaceChildren();
  const [W, H, left, right, top, bottom] = [300, 100, 34, 294, 16, 82];
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet"); // text keeps its shape
  const highest = Math.max(1e-6, ...history.flatMap((h) => [h.train, h.test]));
  const first = history[0].epoch;
  const last = history[history.length - 1].epoch;
  const span = Math.max(1, last - first);
  const x = (epoch) => left + ((right - left) * (epoch - first)) / span;
  const y = (loss) => bottom - ((bottom - top) * loss) / highest;
  const node = (tag, attrs, text) => {
    const made = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) made.setAttribute(key, value);
    if (text !== undefined) made.textContent = text;
    return made;
  };
  const line = (key, cls) => node("polyline", { class: cls, points: history.map((h) => `${x(h.epoch)},${y(h[key])}`).join(" ") });
  const label = (text, attrs) => node("text", { class: "pg2-chart-text", ...attrs }, text);
  const swatch = (x0, cls, text) => [node("line", { class: cls, x1: x0, y1: 7, x2: x0 + 14, y2: 7 }),
    label(text, { x: x0 + 18, y: 10 })];
  svg.replaceChildren(
    node("title", {}, `${lossName} per epoch: test (dark), training (light); largest ${fmt(highest, 3)}`),
    node("path", { class: "pg2-chart-axis", d: `M${left},${top}V${bottom}H${right}` }),
    label(fmt(highest, 2), { x: left - 3, y: top + 3, "text-anchor": "end", "data-axis": "top" }),
    label("0", { x: left - 3, y: bottom + 3, "text-anchor": "end" }),
    label(lossName, { x: 2, y: (top + bottom) / 2 + 3 }),
    label(String(first), { x: left, y: H - 4, "text-anchor": "start" }),
    label("epoch", { x: (left + right) / 2, y: H - 4, "text-anchor": "middle" }),
    label(String(last), { x: right, y: H - 4, "text-anchor": "end", "data-axis": "last" }),
    ...swatch(left, "pg2-test-line", `test ${lossName}`),
    ...swatch(left + 90, "pg2-train-line", `training ${lossName}`),
    line("train", "pg2-train-line"), line("test", "pg2-test-line"));
}
