// Which cells a selected cell reads, drawn over the network: its window in the stage just before
// (a line from the cell to each outlined window), and the wider windows in every stage further
// back, down to the input (its receptive field). The windows come from the server
// (GET /api/runs/ID/network, convlens.inspect ReceptiveField.windows_in); here they are only drawn.

const SVG = "http://www.w3.org/2000/svg";

function shape(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function mapCanvas(box, stage, channel) {
  return box.querySelector(`.stage[data-stage="${stage}"] canvas.fmap[data-channel="${channel}"]`);
}

// A canvas's box in the scroll box's content coordinates (they scroll with the maps).
function placed(box, canvas) {
  const outer = box.getBoundingClientRect();
  const inner = canvas.getBoundingClientRect();
  return {
    x: inner.left - outer.left + box.scrollLeft,
    y: inner.top - outer.top + box.scrollTop,
    width: inner.width,
    height: inner.height,
  };
}

// The rectangle of rows first..last × cols first..last of a map canvas showing (rows × cols) cells.
function cellRect(box, canvas, [top, bottom], [left, right], kind, facts) {
  const at = placed(box, canvas);
  const [rows, cols] = [Number(canvas.height), Number(canvas.width)];
  const cellWidth = at.width / cols;
  const cellHeight = at.height / rows;
  return shape("rect", {
    class: kind,
    x: at.x + left * cellWidth,
    y: at.y + top * cellHeight,
    width: (right - left + 1) * cellWidth,
    height: (bottom - top + 1) * cellHeight,
    "data-rows": bottom - top + 1,
    "data-cols": right - left + 1,
    ...facts,
  });
}

function line(from, to) {
  const end = (rect, side) => ({
    x: Number(rect.getAttribute("x")) + (side === "left" ? 0 : Number(rect.getAttribute("width"))),
    y: Number(rect.getAttribute("y")) + Number(rect.getAttribute("height")) / 2,
  });
  const a = end(from, "left");
  const b = end(to, "right");
  return shape("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y });
}

// The feature-map cell a click chose: a flatten unit u is cell (c, r, col) of the map it flattened.
function asMapCell(cell, stage, previous) {
  if (!stage.unit_grid) return null;
  const [, height, width] = stage.unit_grid;
  const plane = height * width;
  const within = cell.channel % plane;
  return { stage: previous.name, channel: Math.floor(cell.channel / plane), row: Math.floor(within / width),
    col: within % width };
}

// Outlines `cell`'s windows in every earlier map stage; `chosen` is the rect of the cell itself.
function outlineWindows(box, svg, wiring, cell, chosen) {
  const order = wiring.stages.map((stage) => stage.name);
  const at = order.indexOf(cell.stage);
  const stage = wiring.stages[at];
  for (const [earlier, window] of Object.entries(stage.windows)) {
    const from = order.indexOf(earlier);
    const between = wiring.stages.slice(from + 1, at + 1);
    const mixes = between.some((s) => s.mixes_channels);
    const channels = mixes ? [...box.querySelectorAll(`.stage[data-stage="${earlier}"] canvas.fmap`)]
      : [mapCanvas(box, earlier, cell.channel)].filter(Boolean);
    // the window in what it reads directly: its inputs in a graph, the stage before in a chain
    const direct = stage.inputs ? stage.inputs.includes(earlier) : from === at - 1;
    const kind = direct ? "window" : "field";
    for (const canvas of channels) {
      const rect = cellRect(box, canvas, window.rows[cell.row], window.cols[cell.col], kind,
        { "data-stage": earlier, "data-channel": canvas.dataset.channel });
      svg.append(rect);
      if (kind === "window" && chosen) svg.append(line(chosen, rect));
    }
  }
}

// Redraws the overlay for `cell` ({stage, channel, row, col}); null clears it.
export function drawLinks(box, svg, wiring, cell) {
  svg.replaceChildren();
  svg.setAttribute("width", box.scrollWidth);
  svg.setAttribute("height", box.scrollHeight);
  if (!cell || !wiring) return;
  const at = wiring.stages.findIndex((stage) => stage.name === cell.stage);
  if (at < 0) return;
  const stage = wiring.stages[at];
  // what the stage reads: its one input in a graph (a merge has no single one), else the stage before
  const previous = stage.inputs ? wiring.stages.find((s) => stage.inputs.length === 1 && s.name === stage.inputs[0])
    : wiring.stages[at - 1];
  if (stage.shape.length === 3) {
    const canvas = mapCanvas(box, cell.stage, cell.channel);
    if (!canvas) return; // a hidden channel: nothing on screen to link
    const chosen = cellRect(box, canvas, [cell.row, cell.row], [cell.col, cell.col], "chosen",
      { "data-stage": cell.stage, "data-channel": cell.channel });
    svg.append(chosen);
    outlineWindows(box, svg, wiring, cell, chosen);
    return;
  }
  const strip = box.querySelector(`.stage[data-stage="${cell.stage}"] canvas.fmap`);
  if (!strip) { // softmax: its bars sit beside the network, not in it; every logit feeds each bar
    if (previous) outlineWhole(box, svg, previous, null);
    return;
  }
  const [row, col] = [Math.floor(cell.channel / strip.width), cell.channel % strip.width];
  const chosen = cellRect(box, strip, [row, row], [col, col], "chosen", { "data-stage": cell.stage });
  svg.append(chosen);
  const source = previous && asMapCell(cell, stage, previous);
  if (source) { // a flatten unit: the one cell it copies, then that cell's own windows
    const canvas = mapCanvas(box, source.stage, source.channel);
    if (!canvas) return;
    const copied = cellRect(box, canvas, [source.row, source.row], [source.col, source.col], "window",
      { "data-stage": source.stage, "data-channel": source.channel });
    svg.append(copied, line(chosen, copied));
    outlineWindows(box, svg, wiring, source, null);
  } else if (previous) { // a linear layer reads every value of the stage before
    outlineWhole(box, svg, previous, chosen);
  }
}

// Every map of `previous` outlined as read whole, each joined to `chosen` (when it is on screen).
function outlineWhole(box, svg, previous, chosen) {
  const whole = box.querySelectorAll(`.stage[data-stage="${previous.name}"] canvas.fmap`);
  for (const canvas of whole) {
    const rect = cellRect(box, canvas, [0, canvas.height - 1], [0, canvas.width - 1], "window",
      { "data-stage": previous.name, "data-channel": canvas.dataset.channel ?? "" });
    svg.append(rect);
    if (chosen) svg.append(line(chosen, rect));
  }
}
