// Branches and merges of a model traced to a graph (an imported ResNet, a concat), drawn over the
// Network view's columns. The columns stay one left-to-right chain, so an edge is drawn only where
// that chain would mislead: every input of a merge (add, concat: more than one input) and the one
// input of a stage that does not read the column before it (a skip, a downsample branch's start).
// Edges run in lanes of one row above the stage heads, scrolling sideways with the columns; a
// shorter edge gets a lower lane, so nested edges never cross and no two share a line. Edges are
// not the only carrier: each head also says in words which stages it reads (readsText).
// A chain (a convlens-built model: `inputs` null, or each stage reading the one before) gets no
// edges and no lane row, so it looks as it always did.

import { el } from "./draw.js";

const SVG = "http://www.w3.org/2000/svg";
const LANE = 10; // pixels between lanes
const MARGIN = 8; // pixels under the lowest lane, where the edges turn down into the heads
const SPREAD = 7; // pixels between the ends of edges that leave or enter one column

function shape(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

// name → the stages it reads, from GET /network (`inputs`: null for a chain model).
export function inputsByStage(wiring) {
  return new Map((wiring?.stages ?? []).filter((s) => s.inputs).map((s) => [s.name, s.inputs]));
}

// The edges to draw between the columns `names` (in order): {from, to, fromAt, toAt, lane}.
// "input" (the image, before the first column) sits at -1.
export function branchEdges(names, inputs) {
  const at = new Map(names.map((name, i) => [name, i]));
  at.set("input", -1);
  const edges = [];
  names.forEach((name, toAt) => {
    const reads = inputs.get(name);
    if (!reads) return;
    const chain = reads.length === 1 && at.get(reads[0]) === toAt - 1;
    if (chain || (toAt === 0 && reads.length === 1)) return; // the first column reads the image
    for (const from of reads) {
      if (at.has(from)) edges.push({ from, to: name, fromAt: at.get(from), toAt });
    }
  });
  // shorter first, into the lowest lane whose edges it does not touch (columns shared count)
  const lanes = [];
  for (const edge of [...edges].sort((a, b) => a.toAt - a.fromAt - (b.toAt - b.fromAt) || a.fromAt - b.fromAt)) {
    const free = lanes.findIndex((lane) => lane.every((e) => edge.toAt < e.fromAt || edge.fromAt > e.toAt));
    edge.lane = free < 0 ? lanes.length : free;
    if (free < 0) lanes.push([]);
    lanes[edge.lane].push(edge);
  }
  return edges;
}

// "reads a and b" for a stage whose inputs the chain does not show; "" when it reads the column
// before it only (or the model is a chain).
export function readsText(name, previous, inputs) {
  const reads = inputs.get(name);
  if (!reads || (reads.length === 1 && (reads[0] === previous || (!previous && reads[0] === "input")))) return "";
  const listed = reads.length > 1 ? `${reads.slice(0, -1).join(", ")} and ${reads.at(-1)}` : reads[0];
  return `reads ${listed}`;
}

// The lane row (grid row 1, every column) with its SVG; `place()` draws the edges once the heads
// are laid out, from the heads' positions (they move with the maps' widths).
export class BranchLanes {
  constructor(edges) {
    this.edges = edges;
    const lanes = Math.max(0, ...edges.map((e) => e.lane + 1));
    this.height = lanes * LANE + MARGIN;
    this.svg = shape("svg", { class: "branch-edges", role: "img",
      "aria-label": `${edges.length} branch and merge edges; each stage's head names what it reads` });
    this.box = el("div", { class: "branch-lanes", id: "branch-lanes", "data-edges": edges.length,
      style: `grid-column: 1 / -1; grid-row: 1; height: ${this.height}px` });
    this.box.append(this.svg);
  }

  // x of each column's middle, relative to the lane row; "input" is the channel-label column.
  place(network) {
    const origin = this.box.getBoundingClientRect();
    const middle = (node) => {
      const box = node.getBoundingClientRect();
      return box.left - origin.left + box.width / 2;
    };
    const heads = new Map([...network.querySelectorAll(".stage")].map((stage) =>
      [stage.dataset.stage, stage.querySelector(".stage-head")]));
    const corner = network.querySelector(".channel-label.corner");
    const x = (name) => middle(name === "input" ? corner : heads.get(name));
    // each column's outgoing ends left of its middle, incoming right, one SPREAD apart
    const ends = new Map();
    const end = (name, side, edge) => {
      const key = `${name}/${side}`;
      if (!ends.has(key)) ends.set(key, []);
      ends.get(key).push(edge);
    };
    for (const edge of this.edges) {
      end(edge.from, "out", edge);
      end(edge.to, "in", edge);
    }
    // the ends of a column are ordered by lane so that verticals of one column do not cross
    for (const [key, list] of ends) {
      const out = key.endsWith("/out");
      list.sort((a, b) => (out ? b.lane - a.lane : a.lane - b.lane));
      list.forEach((edge, i) => {
        const offset = out ? -SPREAD * (i + 1) : SPREAD * (i + 1);
        edge[out ? "x1" : "x2"] = x(out ? edge.from : edge.to) + offset;
      });
    }
    const marker = shape("marker", { id: "branch-arrow", viewBox: "0 0 6 6", refX: 6, refY: 3, markerWidth: 4,
      markerHeight: 4, orient: "auto" }, shape("path", { d: "M0,0 L6,3 L0,6 z" }));
    const paths = this.edges.map((edge) => this.path(edge));
    this.svg.replaceChildren(shape("defs", {}, marker), ...paths);
  }

  path(edge) {
    const bottom = this.height;
    const y = this.height - MARGIN - edge.lane * LANE + 2;
    const r = Math.min(4, Math.abs(edge.x2 - edge.x1) / 2);
    const d = `M${edge.x1},${bottom} V${y + r} Q${edge.x1},${y} ${edge.x1 + r},${y} H${edge.x2 - r} ` +
      `Q${edge.x2},${y} ${edge.x2},${y + r} V${bottom - 1}`;
    const title = shape("title", {});
    title.textContent = `${edge.to} reads ${edge.from}`;
    const group = shape("g", { class: "branch-edge", "data-from": edge.from, "data-to": edge.to, "data-lane": edge.lane },
      title, shape("path", { class: "hit", d }), shape("path", { class: "line", d, "marker-end": "url(#branch-arrow)" }));
    // hovering an edge marks the two heads it joins
    group.addEventListener("mouseenter", () => this.mark(edge, true));
    group.addEventListener("mouseleave", () => this.mark(edge, false));
    return group;
  }

  mark(edge, on) {
    for (const name of [edge.from, edge.to]) {
      const head = this.box.parentElement?.querySelector(`.stage[data-stage="${CSS.escape(name)}"] .stage-head`);
      head?.classList.toggle("branch-marked", on);
    }
  }
}
