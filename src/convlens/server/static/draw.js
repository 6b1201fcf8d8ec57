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

// One colour convention with the Python figures (convlens.views.plots.colours):
// signed values on a diverging map centred on 0 (RdBu_r: blue negative, white zero, red positive),
// magnitudes on one sequential map (magma: black low → pale yellow high), pixels in gray.
// Limits come from robust percentiles, so one outlier cannot wash out a map: the model's maps arrive
// with the server's limits (convlens.views.maps); colourLimits is for small tables of numbers.
// The tables are matplotlib's colour maps sampled at even steps, interpolated linearly.
const SIGNED = ["053061", "2065ab", "4393c3", "90c4dd", "d1e5f0", "f7f6f6", "fddbc7", "f3a481", "d6604d",
  "b1182b", "67001f"].map(rgb);
const MAGNITUDE = ["000004", "0a0822", "1d1147", "36106b", "51127c", "6a1c81", "832681", "9c2e7f", "b73779",
  "d0416f", "e75263", "f56b5c", "fc8961", "fea772", "fec488", "fde2a3", "fcfdbf"].map(rgb);
export const PERCENTILE = 99.5; // signed: of |value|; magnitudes: 100 - PERCENTILE and PERCENTILE
export const ROBUST_FROM = 256; // fewer values: plain min/max
const TINY = 1e-12;

function rgb(hex) {
  return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function lookup(stops, t) {
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((low, k) => Math.round(low + (stops[i + 1][k] - low) * f));
}

// Signed values: blue < 0 (white) < red; `bound` is the |value| drawn at full colour.
export function diverging(value, bound) {
  return lookup(SIGNED, bound > 0 ? 0.5 + value / (2 * bound) : 0.5);
}

// Magnitudes: black at `low`, pale yellow at `high`.
export function magnitude(value, low = 0, high = 1) {
  return lookup(MAGNITUDE, high > low ? (value - low) / (high - low) : 0.5);
}

function percentileOf(sorted, p) {
  const x = (p / 100) * (sorted.length - 1); // linear, as numpy.percentile
  const i = Math.floor(x);
  return sorted[i] + (sorted[Math.min(i + 1, sorted.length - 1)] - sorted[i]) * (x - i);
}

// {low, high, signed, clipped} of a map (NaN/±inf ignored); signed = null decides from the data
// (any negative value → signed, limits symmetric around 0). Same rule as colour_limits in Python.
export function colourLimits(values, signed = null) {
  const finite = Float64Array.from(Array.prototype.filter.call(values, Number.isFinite));
  if (!finite.length) return signed ? symmetricLimits(1) : { low: 0, high: 1, signed: false, clipped: false };
  finite.sort();
  const min = finite[0];
  const max = finite[finite.length - 1];
  const isSigned = signed ?? min < 0;
  const robust = finite.length >= ROBUST_FROM;
  if (isSigned) {
    const top = Math.max(Math.abs(min), Math.abs(max));
    const robustBound = robust ? percentileOf(finite.map(Math.abs).sort(), PERCENTILE) : top;
    const bound = Math.max(TINY, robustBound < TINY ? top : robustBound); // mostly zeros: the plain top
    return { low: -bound, high: bound, signed: true, clipped: top > bound };
  }
  let low = robust ? percentileOf(finite, 100 - PERCENTILE) : min;
  let high = robust ? percentileOf(finite, PERCENTILE) : max;
  if (high - low < TINY) [low, high] = [min, max]; // a mostly-zero map: the percentiles collapse
  if (high - low < TINY) [low, high] = [low - TINY, high + TINY];
  return { low, high, signed: false, clipped: min < low || max > high };
}

// Signed limits of a known size (an attack's ±ε): nothing estimated, nothing clipped.
export function symmetricLimits(bound) {
  const b = Math.max(TINY, Math.abs(bound));
  return { low: -b, high: b, signed: true, clipped: false };
}

// value → [r, g, b] under `limits`: the diverging map when signed, else the sequential one.
export function colourFor(limits) {
  return limits.signed ? (v) => diverging(v, limits.high) : (v) => magnitude(v, limits.low, limits.high);
}

// Black or white text, whichever reads better on a background colour.
export function inkOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b > 128 ? "black" : "white";
}

// 3 significant digits, in at most about 7 characters: tiny and huge values in e-notation
function short(value) {
  const rounded = Number(value.toPrecision(3));
  const size = Math.abs(rounded);
  return size !== 0 && (size < 0.001 || size >= 1e5) ? rounded.toExponential(1) : String(rounded);
}

// A colour bar with its values: the gradient, the value at each end (and 0 in the middle of a
// diverging map), ≤ / ≥ where values beyond an end were clipped, and what the colour measures.
// `limits` come from the server (convlens.views.maps: low, high, signed, low_clipped, ...).
export function colourLegend(limits, label = "") {
  const steps = 128;
  const bar = el("canvas", { class: "colour-bar-gradient" });
  bar.width = steps;
  bar.height = 1;
  const ctx = bar.getContext("2d");
  const image = ctx.createImageData(steps, 1);
  const colour = colourFor(limits);
  for (let x = 0; x < steps; x++) {
    image.data.set([...colour(limits.low + ((limits.high - limits.low) * x) / (steps - 1)), 255], 4 * x);
  }
  ctx.putImageData(image, 0, 0);
  const lowClipped = limits.low_clipped ?? (limits.clipped && limits.signed);
  const highClipped = limits.high_clipped ?? limits.clipped;
  const tick = (value, where, mark) => el("span", { class: `colour-bar-tick ${where}`, "data-value": value,
    text: mark + short(value) });
  const note = limits.note || (limits.clipped ? `clipped at the ${PERCENTILE}th percentile` : "");
  return el("div", {
    class: "colour-bar",
    "data-low": limits.low,
    "data-high": limits.high,
    "data-map": limits.signed ? "diverging" : "sequential",
    title: `${label || "colour"}: ${short(limits.low)} … ${short(limits.high)}${note ? ` (${note})` : ""}`,
  },
  label ? el("span", { class: "colour-bar-label", text: label }) : null,
  bar,
  el("div", { class: "colour-bar-ticks" }, tick(limits.low, "low", lowClipped ? "≤" : ""),
    limits.signed ? tick(0, "middle", "") : null, tick(limits.high, "high", highClipped ? "≥" : "")));
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
  const big = scale ?? colourLimits(rows.flat(), true).high;
  rows.forEach((row, r) => {
    const tr = el("tr");
    row.forEach((value, c) => {
      const colour = Number.isFinite(value) ? diverging(value, big) : [230, 230, 230];
      const td = el("td", {
        text: Number.isFinite(value) ? fmt(value, digits) : String(value),
        style: `background: rgb(${colour.join(",")}); color: ${inkOn(colour)}`,
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
