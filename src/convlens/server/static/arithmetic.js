// The arithmetic panel: the steps the server described for one cell (convlens.views.arithmetic),
// drawn without knowing the cell's kind: headings, sentences, number grids with operators between
// them, labelled tables and equations. The step whose `total` is set is the cell's result.

import { el, fmt, numberTable } from "./draw.js";

// A number between operators: negative in parentheses with a real minus sign, "0.00·(−1.00)",
// never "0.00·-1.00" (the same rule as convlens.views.arithmetic.operand).
export function operand(value, digits = 2) {
  const text = fmt(value, digits);
  return text.startsWith("-") ? `(−${text.slice(1)})` : text;
}

function gridTable(grid) {
  const marks = grid.marks ?? null;
  const values = grid.values.map((row) => row.map((v) => (v === null ? NaN : v))); // null: ±inf or NaN
  const table = numberTable(values, { caption: grid.caption, mark: marks && ((r, c) => marks[r][c]) });
  table.querySelectorAll("td.pad").forEach((td) => {
    if (td.dataset.value === "NaN") td.textContent = "pad";
  });
  return table;
}

function labelledTable(table) {
  return el("table", { class: "numbers plain" },
    table.caption ? el("caption", { text: table.caption }) : null,
    el("tr", {}, ...table.columns.map((name) => el("th", { text: name }))),
    ...table.rows.map((row, i) => el("tr", { class: i === table.chosen ? "chosen" : "" },
      ...row.map((v) => el("td", typeof v === "number" ? { text: fmt(v, 4), "data-value": v } : { text: String(v ?? "") })))));
}

function equation(step) {
  const attrs = { text: fmt(step.value, 4) };
  if (step.total) Object.assign(attrs, { id: "arith-total", "data-value": step.value });
  return el("p", { class: "equation" }, el("span", { text: `${step.equation} ` }), el("strong", attrs));
}

function stepNodes(step) {
  const nodes = [];
  if (step.title) nodes.push(el("h3", { text: step.title }));
  if (step.heading) nodes.push(el("h4", { text: step.heading }));
  if (step.text) nodes.push(el("p", { class: step.style ?? "note", text: step.text }));
  if (step.grids) {
    const row = el("div", { class: "tables" });
    step.grids.forEach((grid, i) => {
      if (i > 0 && step.ops?.[i - 1]) row.append(el("span", { class: "op", text: step.ops[i - 1] }));
      row.append(gridTable(grid));
    });
    nodes.push(row);
  }
  if (step.table) {
    const table = labelledTable(step.table);
    if (step.id) table.id = step.id;
    nodes.push(table);
  }
  if (step.equation !== undefined) nodes.push(equation(step));
  // a step with grids is one block (input channels sit side by side); the rest flow as they are
  return step.grids ? [el("div", { class: "channel-step" }, ...nodes)] : nodes;
}

export function showArithmetic(panel, body) {
  const parts = body.steps.flatMap(stepNodes);
  const box = body.receptive_field;
  parts.push(el("p", { class: "note", text: box.whole_image ? "receptive field: the whole input"
    : `receptive field: input rows ${box.top}–${box.bottom}, cols ${box.left}–${box.right} (outlined on the input)` }));
  panel.replaceChildren(...parts);
}
