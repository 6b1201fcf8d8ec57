// The neuron panel's blocks (neuron.js asks for them): one channel's kernel, its feature map on the
// current input with its strongest cell's arithmetic, what one unit and the whole channel respond to
// (pictureBlocks, fetched apart: they take gradient searches), the test patches that
// excite it most and least, what zeroing it changes, and the channels feeding it. Every number is
// the server's (convlens.views.neuron_record); here they are only laid out and put into words.

import { unpack } from "./api.js";
import { showArithmetic } from "./arithmetic.js";
import { colourFor, colourLegend, el, fmt, numberTable, paintImage, paintPlane, percent } from "./draw.js";
import { hasNeuronPanel, neuronLink } from "./neuron-link.js";

const MAP_PIXELS = 168; // on-screen size of the longest side of the feature map and of the input
const PATCH_PIXELS = 60; // of the largest patch; smaller ones (cut by the image's edge) keep the scale
const OPTIMUM_PIXELS = 120;
const VISUALIZATION_PIXELS = 168;
const KERNEL_DIGITS = 3;
const MARK = "#00b8d4"; // the selected-cell colour of the Network view

export function neuronTitle(target, card) {
  const stage = card?.stages.find((s) => s.name === target.stage);
  const count = stage?.shape.length === 3 ? ` of ${stage.shape[0]}` : "";
  return `${target.stage} · channel ${target.channel}${count}`;
}

function block(name, title, text, ...content) {
  return el("div", { class: "neuron-block", id: `neuron-${name}` }, el("h3", { text: title }),
    text ? el("p", { class: "neuron-text", text }) : null, ...content);
}

// A (C, h, w) image or a (h, w) plane drawn `zoom` screen pixels per value, pixelated.
function enlarged(canvas, zoom) {
  canvas.style.width = `${canvas.width * zoom}px`;
  canvas.style.height = `${canvas.height * zoom}px`;
  return canvas;
}

function zoomFor(height, width, pixels) {
  return Math.max(1, Math.floor(pixels / Math.max(height, width)));
}

// A plane at `zoom` pixels per cell with rectangles outlined (cells, or input pixels):
// [{top, bottom, left, right}], inclusive.
function outlined(small, zoom, boxes) {
  const big = el("canvas");
  big.width = small.width * zoom;
  big.height = small.height * zoom;
  const ctx = big.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, big.width, big.height);
  ctx.strokeStyle = MARK;
  ctx.lineWidth = 2;
  for (const box of boxes) {
    ctx.strokeRect(box.left * zoom + 1, box.top * zoom + 1, (box.right - box.left + 1) * zoom - 2,
      (box.bottom - box.top + 1) * zoom - 2);
  }
  return big;
}

function kernelBlock(body) {
  const kernel = body.kernel;
  const own = kernel?.stage === body.stage;
  if (!kernel) {
    return block("kernel", "Kernel", `No single convolution computes ${body.stage} channel ${body.channel} ` +
      "(it adds or mixes several stages' channels), so it has no kernel of its own to show.");
  }
  const weight = unpack(kernel.weight);
  const [inputs, height, width] = weight.shape;
  const reads = kernel.input_stage ?? "the block's inside";
  const who = own ? `${body.stage}'s filter ${body.channel}` : `${body.stage} has no weights of its own: channel ` +
    `${body.channel} is made by ${kernel.stage}'s filter ${body.channel}, then passed through ${body.stage}. That filter`;
  const text = `A kernel is the small grid of weights a filter slides over its input: at every position it multiplies ` +
    `the values under it by these weights, adds them up and adds the bias. ${who} has ${inputs === 1
      ? `one ${height}×${width} grid, for the one channel` : `${inputs} ${height}×${width} grids, one per channel`} ` +
    `of ${reads} it reads. Red weights reward a high ` +
    "value there, blue ones punish it, white is 0.";
  const grids = [...Array(inputs).keys()].map((i) => {
    const rows = [...Array(height).keys()].map((r) =>
      Array.from(weight.data.subarray((i * height + r) * width, (i * height + r + 1) * width)));
    const caption = kernel.input_stage ? `${kernel.input_stage} ch ${kernel.input_channels[i]}` : `input ch ${i}`;
    const table = numberTable(rows, { digits: KERNEL_DIGITS, scale: kernel.limits.high, caption });
    table.dataset.inputChannel = kernel.input_channels[i];
    return table;
  });
  const bias = kernel.bias === null ? "no bias" : `bias ${fmt(kernel.bias, 4)}`;
  return block("kernel", `Kernel (${kernel.stage}, filter ${body.channel})`, text,
    colourLegend(kernel.limits, "weight"),
    el("div", { class: "neuron-kernels" }, ...grids),
    el("p", { class: "note", id: "neuron-bias", "data-value": kernel.bias ?? "", text: bias }));
}

function hoverReadout(canvas, plane, readout) {
  canvas.addEventListener("mousemove", (e) => {
    const box = canvas.getBoundingClientRect();
    const [height, width] = plane.shape;
    const row = Math.min(height - 1, Math.floor(((e.clientY - box.top) / box.height) * height));
    const col = Math.min(width - 1, Math.floor(((e.clientX - box.left) / box.width) * width));
    readout.textContent = `row ${row} col ${col}: ${fmt(plane.data[row * width + col], 4)}`;
  });
}

// A map that is one value everywhere (a silent ReLU's zeros) gets limits of zero width; drawn with
// them, 0 would sit mid-scale (magenta). It is drawn at the low end instead: black, as "nothing".
function flatAware(limits) {
  return !limits.signed && limits.high - limits.low < 1e-9 ? { ...limits, high: limits.low + 1 } : limits;
}

function mapBlock(body) {
  const plane = unpack(body.feature_map);
  const [height, width] = plane.shape;
  const small = paintPlane(el("canvas"), plane.data, 0, height, width, colourFor(flatAware(body.feature_map_limits)));
  const { row, col, value } = body.strongest;
  const map = outlined(small, zoomFor(height, width, MAP_PIXELS), [{ top: row, bottom: row, left: col, right: col }]);
  map.classList.add("neuron-map");
  Object.assign(map.dataset, { row, col, value });
  const readout = el("p", { class: "note", id: "neuron-map-readout", text: "point at a cell to read its value" });
  hoverReadout(map, plane, readout);
  const image = unpack(body.input);
  const [, imageHeight, imageWidth] = image.shape;
  const seen = outlined(paintImage(el("canvas"), image), zoomFor(imageHeight, imageWidth, MAP_PIXELS), [body.receptive_field]);
  seen.classList.add("neuron-input");
  const silent = value === 0 ? " Every cell is 0 on this image: the pattern is nowhere, so the channel passes nothing on for it."
    : value < 0 ? " Every cell is below 0 on this image: nowhere does the filter find its pattern." : "";
  const text = "The feature map is the filter's answer at every position of the current image: high where its " +
    `pattern is found. Its strongest cell (row ${row}, col ${col}: ${fmt(value, 4)}) is outlined, and so are the ` +
    `input pixels it sees (its receptive field); the arithmetic of that one number follows.${silent}`;
  const arithmetic = el("div", { class: "neuron-arithmetic", id: "neuron-arithmetic" });
  const rf = body.receptive_field;
  showArithmetic(arithmetic, { steps: body.steps, receptive_field: { ...rf,
    whole_image: rf.top === 0 && rf.left === 0 && rf.bottom === imageHeight - 1 && rf.right === imageWidth - 1 } });
  return block("map", `Feature map on ${body.source}`, text,
    el("div", { class: "neuron-figures" },
      el("figure", {}, map, el("figcaption", { text: `${body.stage} ch ${body.channel}, ${height}×${width}` })),
      el("figure", {}, seen, el("figcaption", { text: "input, receptive field outlined" }))),
    colourLegend(flatAware(body.feature_map_limits), `${body.stage} ch ${body.channel}`), readout,
    el("details", { class: "neuron-steps", open: "" },
      el("summary", { text: `the arithmetic of cell (${row}, ${col})` }), arithmetic));
}

function optimumBlock(optimum) {
  const title = "What one unit responds to";
  if (!optimum) {
    return block("optimum", title, "This answer carries no unit optimum (the server did not compute one for " +
      "this channel).");
  }
  const crop = unpack(optimum.crop);
  const [, height, width] = crop.shape;
  const canvas = enlarged(paintImage(el("canvas", { class: "neuron-optimum" }), crop), zoomFor(height, width, OPTIMUM_PIXELS));
  const how = optimum.closed_form ? "the exact optimum (this stage is linear in the pixels: 1 where the unit's " +
    "weight is positive, 0 where it is negative, the sign pattern of its kernel)"
    : `found by ${optimum.steps} steps of gradient ascent from several starts`;
  const cell = optimum.cell ? `the centre cell (${optimum.cell[0]}, ${optimum.cell[1]})` : "the unit";
  const best = optimum.best_image_activation === null || optimum.best_image_activation === undefined ? ""
    : `; the test image that drives this unit hardest (#${optimum.best_image_index}) reaches ${fmt(optimum.best_image_activation, 3)}`;
  const text = `The input that drives ${cell} of this channel highest, cropped to the ${height}×${width} pixels it ` +
    `sees and enlarged: ${how}. It reaches ${fmt(optimum.activation, 3)}${best}.`;
  const beside = optimum.best_image_index === null || optimum.best_image_index === undefined ? null
    : el("figcaption", { text: `best test image (#${optimum.best_image_index}): ${fmt(optimum.best_image_activation, 3)}` });
  return block("optimum", title, text, el("figure", { id: "neuron-optimum-figure", "data-activation": optimum.activation }, canvas,
    el("figcaption", { text: `this pattern: ${fmt(optimum.activation, 3)}` }), beside));
}

// one number of the side-by-side pair under the channel visualization
function compared(id, label, value) {
  return el("p", { class: "neuron-compared", id, "data-value": value ?? "" },
    el("span", { class: "note", text: label }), el("strong", { text: value === null ? "—" : fmt(value, 3) }));
}

function visualizationBlock(picture) {
  const title = "What the whole channel responds to";
  if (!picture) {
    return block("visualization", title, "This answer carries no channel visualization (the server did not " +
      "compute one for this channel).");
  }
  const image = unpack(picture.image);
  const [, height, width] = image.shape;
  const canvas = enlarged(paintImage(el("canvas", { class: "neuron-visualization" }), image),
    zoomFor(height, width, VISUALIZATION_PIXELS));
  const text = "A regularised visualization: an image grown from noise to raise this channel's mean value over its " +
    "whole map, shifted, scaled and rotated a little at every step so that only a pattern that still works when " +
    "moved survives, as the channel meets it in real images: easier to read than the strongest possible input, so it " +
    `may reach less than the best test image. Both numbers are that mean, measured on the picture as drawn (${picture.steps} steps).`;
  const best = picture.best_image_index === null ? "best test image" : `best test image (#${picture.best_image_index})`;
  return block("visualization", title, text,
    el("div", { class: "neuron-figures" },
      el("figure", { id: "neuron-visualization-figure", "data-activation": picture.activation }, canvas,
        el("figcaption", { text: `${width}×${height} pixels, enlarged` })),
      el("div", { class: "neuron-compare" },
        compared("neuron-visualization-activation", "this picture", picture.activation),
        compared("neuron-visualization-best", best, picture.best_image_activation))));
}

// The two pictures of what the channel responds to (GET .../neuron-pictures); before they
// arrive, one line each saying they are being searched.
export function pictureBlocks(pictures) {
  if (!pictures) {
    return [
      block("optimum", "What one unit responds to", "searching for the input that drives the channel's centre " +
        "unit hardest (gradient ascent, once per channel)…"),
      block("visualization", "What the whole channel responds to", "drawing the regularised visualization of the " +
        "whole channel (once per channel)…"),
    ];
  }
  return [optimumBlock(pictures.optimum), visualizationBlock(pictures.visualization)];
}

function patchFigures(patches, classNames, kind) {
  const largest = Math.max(1, ...patches.map((p) => Math.max(p.pixels.shape[1], p.pixels.shape[2])));
  const zoom = zoomFor(largest, largest, PATCH_PIXELS);
  return el("div", { class: "neuron-patches", id: `neuron-${kind}-patches` }, ...patches.map((patch) => {
    const named = patch.class ?? (patch.label === null ? "" : classNames[patch.label] ?? "");
    return el("figure", { class: "neuron-patch", "data-index": patch.index, "data-value": patch.value,
      title: `test image ${patch.index}${named ? ` (${named})` : ""}: largest value ${fmt(patch.value, 4)} at ` +
        `cell (${patch.row}, ${patch.col}); input rows ${patch.region.top}–${patch.region.bottom}, cols ${patch.region.left}–${patch.region.right}` },
    enlarged(paintImage(el("canvas"), unpack(patch.pixels)), zoom),
    el("figcaption", { text: `#${patch.index}${named ? ` ${named}` : ""}` }),
    el("figcaption", { class: "neuron-value", text: fmt(patch.value, 3) }));
  }));
}

function patchesBlock(body, card) {
  if (!body.image_count) {
    return block("patches", "Top test patches", "This run's test images are not available, so no patches can be shown.");
  }
  const text = `Of the ${body.image_count} test images, the ${body.top_patches.length} where this channel's largest ` +
    "value is highest (top) and lowest (bottom), each cut to the receptive field of the cell where it peaks (as Zeiler " +
    "and Fergus showed them). The number under each is that value; #n is the test image. What the top ones share is " +
    "what the channel detects.";
  return block("patches", "Top and bottom test patches", text, el("div", { class: "neuron-patch-sets" },
    el("div", {}, el("h4", { text: "top: excite it most" }), patchFigures(body.top_patches, card.class_names, "top")),
    el("div", {}, el("h4", { text: "bottom: excite it least" }), patchFigures(body.bottom_patches, card.class_names, "bottom"))));
}

// a change in points of probability, readable however small
function points(change) {
  const value = 100 * change;
  return Math.abs(value) >= 0.01 || value === 0 ? `${fmt(value, 2)} points` : `${value.toExponential(1)} points`;
}

function effectBlock(body) {
  const parts = [];
  const ablation = body.ablation;
  if (ablation) {
    const becomes = ablation.predicted_after === ablation.target ? `the prediction stays ${ablation.class}`
      : `the prediction becomes ${ablation.predicted_after_class}`;
    parts.push(el("p", { class: "neuron-effect", id: "neuron-ablation", "data-before": ablation.before, "data-after": ablation.after,
      text: `On this image: p(${ablation.class}) ${percent(ablation.before)} → ${percent(ablation.after)} ` +
        `(${points(ablation.after - ablation.before)}); ${becomes}.` }));
  }
  const sample = body.sample_ablation;
  if (sample) {
    const accuracy = sample.accuracy_before === null ? ""
      : `; accuracy ${percent(sample.accuracy_before)} → ${percent(sample.accuracy_after)}`;
    parts.push(el("p", { class: "neuron-effect", id: "neuron-sample-ablation", "data-mean-change": sample.mean_change,
      text: `Over ${sample.images} test images: each image's predicted class changes by ${points(sample.mean_change)} ` +
        `of probability on average; ${sample.changed_predictions} prediction${sample.changed_predictions === 1 ? "" : "s"} ` +
        `change${accuracy}.` }));
  }
  const share = body.grad_cam;
  if (share) {
    parts.push(el("p", { class: "neuron-effect", id: "neuron-grad-cam", "data-contribution": share.contribution, "data-rank": share.rank,
      text: `Grad-CAM at ${body.stage} for class ${share.class}: weight ${fmt(share.weight, 4)} (how much that class's score ` +
        `rises with this map, on average) × the map's mean = contribution ${fmt(share.contribution, 4)}, rank ${share.rank} ` +
        `of ${share.channels} channels.` }));
  }
  if (!parts.length) {
    return block("effect", "Where it matters", "This model answers a class per pixel, not one per image: zeroing a " +
      "channel has no single prediction to change.");
  }
  return block("effect", "Where it matters", "Ablation asks what the channel is for: its map is set to 0 everywhere " +
    "and the image is classified again. Grad-CAM instead credits each channel with its share of the class's score.", ...parts);
}

function feedersBlock(body, card) {
  if (!body.feeders.length) {
    const why = body.kernel?.input_stage ? "" : " (its kernel reads inside a block, not a stage of the network)";
    return block("feeders", "Fed by", `No channel of an earlier stage is listed${why}.`);
  }
  const source = body.feeders[0].stage;
  const rows = body.feeders.map((feeder) => el("li", { class: "neuron-feeder" },
    hasNeuronPanel(card, feeder.stage) ? neuronLink(feeder.stage, feeder.channel)
      : el("span", { text: `${feeder.stage} ch ${feeder.channel}` }),
    el("span", { class: "note", text: ` strength ${fmt(feeder.strength, 3)}, weights sum to ${fmt(feeder.weight_sum, 3)}: ` +
      (feeder.weight_sum >= 0 ? "mostly excites" : "mostly inhibits") })));
  const text = `The channels of ${source} this filter reads most strongly (${body.feeder_measure}), strongest first. ` +
    "Weights that sum above 0 make this channel rise where that one is high; below 0, fall. Click one to open its panel.";
  return block("feeders", "Fed by", text, el("ul", { class: "neuron-feeders", id: "neuron-feeders" }, ...rows));
}

// Every block of one answer of POST /neuron, in reading order; `pictures` ({optimum,
// visualization}: the answer itself, or GET .../neuron-pictures), null while they are searched.
export function neuronBlocks(body, card, pictures = null) {
  const dead = body.dead ? el("p", { class: "neuron-dead", id: "neuron-dead", text: `${body.dead_label}: ` +
    "whatever the image, this channel passes nothing on, so the next layer never hears from it." }) : null;
  return [
    el("p", { class: "note", text: `${body.kind.replace(/_/g, " ")} stage, ${body.map_size.join("×")} map.` }),
    dead, kernelBlock(body), mapBlock(body), ...pictureBlocks(pictures), patchesBlock(body, card), effectBlock(body),
    feedersBlock(body, card),
  ].filter(Boolean);
}
