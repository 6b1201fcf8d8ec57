// The arithmetic panel: the numbers the server recomputed for one cell, laid out step by step.

import { el, fmt, numberTable } from "./draw.js";

const MAX_CHANNELS_SHOWN = 8; // a conv over 64 channels: show 8 in full, the rest as sums

function equation(text, value, id = null) {
  const attrs = { class: "equation" };
  if (id) Object.assign(attrs, { id, "data-value": value });
  return el("p", attrs, el("span", { text }), el("strong", { text: fmt(value, 4) }));
}

function agreement(cell) {
  return el("p", { class: "agreement", text: `the layer itself computed ${fmt(cell.output, 6)} ` +
    `(hand-computed ${fmt(cell.total, 6)}, difference ${Math.abs(cell.total - cell.output).toExponential(1)})` });
}

function convParts(cell) {
  const parts = [];
  const padded = (k) => (r, c) => (cell.padding[k][r][c] ? "pad" : null);
  cell.input_channels.forEach((inChannel, k) => {
    if (k >= MAX_CHANNELS_SHOWN) return;
    parts.push(el("div", { class: "channel-step" },
      el("h4", { text: `input channel ${inChannel}` }),
      el("div", { class: "tables" },
        numberTable(cell.patch[k], { caption: "input patch", mark: padded(k) }),
        el("span", { class: "op", text: "×" }),
        numberTable(cell.kernel[k], { caption: "kernel" }),
        el("span", { class: "op", text: "=" }),
        numberTable(cell.products[k], { caption: "products", mark: padded(k) })),
      equation("sum of products = ", cell.channel_sums[k])));
  });
  if (cell.input_channels.length > MAX_CHANNELS_SHOWN) {
    parts.push(el("p", { class: "note", text: `…and ${cell.input_channels.length - MAX_CHANNELS_SHOWN} more ` +
      "input channels; every channel's sum:" }));
    parts.push(numberTable([cell.channel_sums], { caption: "sum per input channel" }));
  }
  parts.push(el("p", { class: "equation", text: `Σ over ${cell.input_channels.length} channel sum(s) ` +
    `+ bias ${fmt(cell.bias, 4)} = ` }, el("strong", { id: "arith-total", "data-value": cell.total,
    text: fmt(cell.total, 4) })));
  return parts;
}

function poolParts(cell) {
  const winner = cell.winner;
  const mark = (r, c) => (winner && cell.rows[r] === winner[0] && cell.cols[c] === winner[1] ? "winner"
    : cell.padding[r][c] ? "pad" : null);
  const parts = [numberTable(cell.window, { caption: `window (rows ${cell.rows.join(",")}, cols ${cell.cols.join(",")})`, mark })];
  if (cell.kind === "max-pool") parts.push(equation("largest value = ", cell.total, "arith-total"));
  else {
    parts.push(equation("sum = ", cell.sum));
    parts.push(equation(`sum ÷ ${cell.divisor} = `, cell.total, "arith-total"));
  }
  return parts;
}

function linearParts(cell, classNames) {
  const rows = cell.top_inputs.map((i) => [i, cell.inputs[i], cell.weights[i], cell.products[i]]);
  const table = el("table", { class: "numbers plain" },
    el("caption", { text: `the ${rows.length} largest of ${cell.inputs.length} products (input × weight)` }),
    el("tr", {}, ...["input #", "input", "weight", "product"].map((t) => el("th", { text: t }))),
    ...rows.map((r) => el("tr", {}, el("td", { text: String(r[0]) }), ...r.slice(1).map((v) => el("td", { text: fmt(v, 4) })))));
  return [table, equation(`Σ of all ${cell.inputs.length} products + bias ${fmt(cell.bias, 4)} = `, cell.total, "arith-total")];
}

function softmaxParts(cell, classNames) {
  const rows = cell.logits.map((logit, i) => [classNames[i] ?? i, logit, cell.exp[i], cell.probabilities[i]]);
  const table = el("table", { class: "numbers plain" },
    el("tr", {}, ...["class", "logit", "exp(logit − max)", "probability"].map((t) => el("th", { text: t }))),
    ...rows.map((r, i) => el("tr", { class: i === cell.channel ? "chosen" : "" }, el("td", { text: String(r[0]) }),
      ...r.slice(1).map((v) => el("td", { text: fmt(v, 4) })))));
  return [table, equation(`exp ${fmt(cell.exp[cell.channel], 4)} ÷ Σ exp ${fmt(cell.exp_sum, 4)} = `, cell.total, "arith-total")];
}

const KIND_TEXT = {
  conv: "convolution: multiply the input patch by the kernel, add everything up, add the bias",
  relu: "ReLU: keep positive values, replace negative ones with 0",
  "max-pool": "max-pool: the largest value in the window",
  "avg-pool": "average-pool: the mean of the window",
  batchnorm: "BatchNorm: normalize with the running statistics, then scale and shift",
  normalize: "normalize: (pixel − mean) ÷ std, so the network sees centred inputs",
  flatten: "flatten: the same value, moved into one long vector",
  linear: "linear: every input times its weight, summed, plus the bias",
  softmax: "softmax: exponentiate the logits and divide by their sum, so they add up to 1",
};

export function showArithmetic(panel, body, classNames) {
  const cell = body.cell;
  const where = cell.kind === "softmax" || cell.kind === "linear" || cell.kind === "flatten"
    ? `unit ${cell.channel}${cell.kind === "softmax" ? ` (class ${classNames[cell.channel]})` : ""}`
    : `channel ${cell.channel}, row ${cell.row}, col ${cell.col}`;
  const parts = [el("h3", { text: `${cell.stage}: ${where}` }), el("p", { class: "note", text: KIND_TEXT[cell.kind] ?? cell.kind })];
  if (cell.kind === "conv") parts.push(...convParts(cell));
  else if (cell.kind === "max-pool" || cell.kind === "avg-pool") parts.push(...poolParts(cell));
  else if (cell.kind === "linear") parts.push(...linearParts(cell, classNames));
  else if (cell.kind === "softmax") parts.push(...softmaxParts(cell, classNames));
  else if (cell.kind === "relu") parts.push(equation(`max(0, ${fmt(cell.before, 4)}) = `, cell.total, "arith-total"));
  else if (cell.kind === "batchnorm") {
    parts.push(equation(`(${fmt(cell.before, 4)} − ${fmt(cell.mean, 4)}) ÷ √(${fmt(cell.var, 4)} + ${cell.eps}) = `, cell.normalized));
    parts.push(equation(`× γ ${fmt(cell.gamma, 4)} + β ${fmt(cell.beta, 4)} = `, cell.total, "arith-total"));
  } else if (cell.kind === "normalize") {
    parts.push(equation(`(${fmt(cell.before, 4)} − ${fmt(cell.mean, 4)}) ÷ ${fmt(cell.std, 4)} = `, cell.total, "arith-total"));
  } else if (cell.kind === "flatten") {
    parts.push(equation(`input value at (channel, row, col) (${cell.source.join(", ")}) = `, cell.total, "arith-total"));
  }
  const box = body.receptive_field;
  if (!box.whole_image) {
    parts.push(el("p", { class: "note", text: `receptive field: input rows ${box.top}–${box.bottom}, ` +
      `cols ${box.left}–${box.right} (outlined on the input)` }));
  } else parts.push(el("p", { class: "note", text: "receptive field: the whole input" }));
  parts.push(agreement(cell));
  panel.replaceChildren(...parts);
}
