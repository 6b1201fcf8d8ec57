// Drawing helpers: values the server computed → pixels, bars and tables. No model maths here;
// the only arithmetic is mapping a value to a colour for display.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "";
  if (!Number.isFinite(value)) return String(value);
  return value.toFixed(digits).replace(/^-0\.0+$/, "0." + "0".repeat(digits));
}

export function percent(value) {
  return `${(100 * value).toFixed(1)} %`;
}

// Diverging colours: negative blue, zero white, positive orange (scale: the largest |value|).
export function diverging(value, scale) {
  const t = scale > 0 ? Math.max(-1, Math.min(1, value / scale)) : 0;
  if (t >= 0) return [255, Math.round(255 - 120 * t), Math.round(255 - 235 * t)];
  return [Math.round(255 + 225 * t), Math.round(255 + 125 * t), 255];
}

// Heat colours for maps in [0, 1] (black → red → yellow → white).
export function heat(t) {
  const v = Math.max(0, Math.min(1, t));
  return [Math.round(255 * Math.min(1, 3 * v)), Math.round(255 * Math.min(1, Math.max(0, 3 * v - 1))),
    Math.round(255 * Math.max(0, 3 * v - 2))];
}

// A (H, W) plane of a Float32Array at `offset` onto a canvas, one canvas pixel per value.
export function paintPlane(canvas, data, offset, height, width, colour) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const [r, g, b] = colour(data[offset + i]);
    image.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// A model input (C, H, W) in [0, 1]: grayscale or RGB.
export function paintImage(canvas, tensor) {
  const [channels, height, width] = tensor.shape;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const plane = height * width;
  for (let i = 0; i < plane; i++) {
    const rgb = channels === 3 ? [0, 1, 2].map((c) => tensor.data[c * plane + i]) : Array(3).fill(tensor.data[i]);
    image.data.set([...rgb.map((v) => Math.round(255 * Math.max(0, Math.min(1, v)))), 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

export function gray(v) {
  const g = Math.round(255 * Math.max(0, Math.min(1, v)));
  return [g, g, g];
}

// Class probability bars; the most probable class is marked.
export function probabilityBars(container, probabilities, classNames, compare = null) {
  container.replaceChildren();
  const best = probabilities.indexOf(Math.max(...probabilities));
  probabilities.forEach((p, i) => {
    const bar = el("div", { class: "bar-fill", style: `width:${(100 * p).toFixed(1)}%` });
    const row = el(
      "div",
      { class: i === best ? "bar-row top" : "bar-row", "data-class": classNames[i], "data-probability": p },
      el("span", { class: "bar-label", text: classNames[i] }),
      el("span", { class: "bar-track" }, bar),
      el("span", { class: "bar-value", text: percent(p) })
    );
    if (compare) row.title = `before: ${percent(compare[i])}`;
    container.append(row);
  });
}

// A small numeric table (rows of numbers); `mark(r, c)` may return a CSS class per cell.
export function numberTable(rows, { digits = 2, mark = null, scale = null, caption = null } = {}) {
  const table = el("table", { class: "numbers" });
  if (caption) table.append(el("caption", { text: caption }));
  const big = scale ?? Math.max(1e-12, ...rows.flat().map((v) => Math.abs(v)).filter(Number.isFinite));
  rows.forEach((row, r) => {
    const tr = el("tr");
    row.forEach((value, c) => {
      const [red, green, blue] = Number.isFinite(value) ? diverging(value, big) : [230, 230, 230];
      const td = el("td", {
        text: Number.isFinite(value) ? fmt(value, digits) : String(value),
        style: `background: rgb(${red},${green},${blue})`,
        "data-value": value,
      });
      const extra = mark && mark(r, c);
      if (extra) td.classList.add(extra);
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

export function message(container, text, kind = "note") {
  container.replaceChildren(el("p", { class: kind, text }));
}
