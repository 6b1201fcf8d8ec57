// The learning playground's setup in the page's URL, so a teacher can share one link: every
// setting the server trains with, and the two view toggles, as `pg-` query parameters (the hash
// stays the tab's name, which main.js opens). Written as the controls change, read on load.
//   ?pg-dataset=xor&pg-noise=10&pg-features=x1,x2&pg-hidden=4,2&pg-discretize=1#playground2d

const PREFIX = "pg-";
const TAB = "#playground2d";
const numbers = (text) => (text.trim() === "" || text.trim() === "0" ? [] : text.split(",").map(Number));
const names = (text) => text.split(",").map((part) => part.trim()).filter(Boolean);
const list = (values) => values.join(",");

// setting → [its name in the URL, text → value, value → text]
const SETTINGS = {
  dataset: ["dataset", String, String],
  noise: ["noise", Number, String],
  train_percent: ["train", Number, String],
  seed: ["seed", Number, String],
  features: ["features", names, list],
  hidden: ["hidden", numbers, (widths) => list(widths) || "0"],
  activation: ["activation", String, String],
  lr: ["lr", Number, String],
  regularization: ["regularization", String, String],
  regularization_rate: ["rate", Number, String],
  batch_size: ["batch", Number, String],
};
const VIEW = { discretize: "discretize", showTest: "test" }; // view toggles: drawn, not trained

// {settings, view}: only what the URL names (a bad value goes to the server as it is, which
// answers a 400 naming it).
export function readSetup(search = window.location.search) {
  const query = new URLSearchParams(search);
  const settings = {};
  for (const [key, [name, parse]] of Object.entries(SETTINGS)) {
    const text = query.get(PREFIX + name);
    if (text !== null) settings[key] = parse(text);
  }
  const view = {};
  for (const [key, name] of Object.entries(VIEW)) {
    const text = query.get(PREFIX + name);
    if (text !== null) view[key] = text === "1" || text === "true";
  }
  return { settings, view };
}

// Replace the URL's `pg-` parameters with `settings` and `view` (other parameters stay), and
// point the hash at the playground tab: a copied link opens this setup.
export function writeSetup(settings, view) {
  const url = new URL(window.location.href);
  const pairs = [...url.searchParams].filter(([key]) => !key.startsWith(PREFIX));
  for (const [key, [name, , write]] of Object.entries(SETTINGS)) {
    if (settings[key] !== undefined) pairs.push([PREFIX + name, write(settings[key])]);
  }
  for (const [key, name] of Object.entries(VIEW)) pairs.push([PREFIX + name, view[key] ? "1" : "0"]);
  // commas stay commas (URLSearchParams would write %2C): the link reads as the controls do
  const encode = (text) => encodeURIComponent(text).replaceAll("%2C", ",");
  url.search = pairs.map(([key, value]) => `${encode(key)}=${encode(value)}`).join("&");
  url.hash = TAB;
  window.history.replaceState(window.history.state, "", url);
}
