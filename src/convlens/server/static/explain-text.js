// What each view and each kind of stage does, in a few sentences with the current model's own
// numbers. Every number comes from the run card (GET /api/runs/ID: its `stages[i].layer` facts
// are convlens.inspect.layer_facts); this module only puts them into words.

const SHAPE = (shape) => shape.join("×");
const COUNT = (n) => Number(n).toLocaleString("en-US");
const PLURAL = (n, word) => `${COUNT(n)} ${word}${n === 1 ? "" : "s"}`;

function sizeOf(shape) {
  return shape.length === 3 ? `${shape[1]}×${shape[2]}` : SHAPE(shape);
}

// Sentences per stage role (convlens.inspect.layer_kinds: each layer kind declares its role;
// a role without an entry here reads as `other`); `layer` is that stage's facts.
const STAGE_TEXT = {
  normalize: (layer, card) => {
    const { mean, std } = card.normalization ?? {};
    const numbers = mean && std ? ` (mean ${mean.map((v) => v.toFixed(3)).join(", ")}, ` +
      `std ${std.map((v) => v.toFixed(3)).join(", ")})` : "";
    return `${layer.stage} subtracts the training images' mean and divides by their standard deviation${numbers}, ` +
      "so the pixels the network sees are centred around 0. It learns nothing: these two numbers were measured once, before training.";
  },
  convolution: (layer) => {
    const [kh, kw] = layer.kernel;
    const inputs = layer.input_shape[0];
    const padded = layer.padding.some((p) => p > 0);
    return `${layer.stage} has ${PLURAL(layer.filters, "filter")} of ${kh}×${kw}` +
      `${inputs > 1 ? ` over all ${inputs} input channels` : ""}, ${COUNT(layer.parameters)} parameters ` +
      `(${COUNT(layer.weights_per_filter)} weights${layer.bias ? " and 1 bias" : ""} per filter). ` +
      "Each filter looks for one pattern everywhere: it slides over the whole input, and at every position " +
      "multiplies the pixels under it by its weights and adds them up. " +
      `One output channel per filter: ${sizeOf(layer.input_shape)} in, ${SHAPE(layer.output_shape)} out` +
      `${padded ? " (a border of zeros keeps the edge cells)" : ""}${layer.stride[0] > 1 ? `, moving ${layer.stride[0]} pixels at a time` : ""}.`;
  },
  transposed_convolution: (layer) => {
    const [kh, kw] = layer.kernel;
    return `${layer.stage} is a transposed convolution with ${PLURAL(layer.filters, "filter")} of ${kh}×${kw}, ` +
      `${COUNT(layer.parameters)} parameters. It makes the maps larger (${sizeOf(layer.input_shape)} in, ${sizeOf(layer.output_shape)} out): ` +
      `each input cell stamps a copy of the kernel, scaled by its value, onto the output, ${layer.stride[0]} cells apart, ` +
      "and each output cell adds up the stamps that cover it, plus a bias. A segmentation decoder uses it to learn how to paint coarse findings back at full size.";
  },
  upsample: (layer) => `${layer.stage} makes every map larger (${sizeOf(layer.input_shape)} in, ${sizeOf(layer.output_shape)} out) ` +
    "without learning anything: each output cell copies the input cell it falls in (nearest) or blends the input cells around it, " +
    "nearer ones weighing more (bilinear), channel by channel.",
  batchnorm: (layer) => `${layer.stage} rescales each of its ${layer.output_shape[0]} channels with a mean and variance ` +
    `measured during training, then multiplies by a learned scale and adds a learned shift (${COUNT(layer.parameters)} parameters). ` +
    "It keeps every channel's values in a range the next layer is used to.",
  relu: (layer) => `${layer.stage} (ReLU) keeps every positive value and replaces every negative one with 0: max(0, x). ` +
    `It has no parameters and keeps the shape ${SHAPE(layer.output_shape)}. ` +
    (layer.output_shape.length === 3
      ? "Black cells are places where the filter's pattern was not found; only what was found is passed on."
      : "A unit that stays 0 passes nothing on to the next layer."),
  max_pool: (layer) => `${layer.stage} keeps the largest value of each ${layer.kernel[0]}×${layer.kernel[1]} window, ` +
    `moving ${layer.stride[0]} cells at a time: every ${sizeOf(layer.input_shape)} map becomes ${sizeOf(layer.output_shape)} ` +
    `(${layer.output_shape[0]} channels, no parameters). ` +
    "A pattern found anywhere in the window still counts, so a small shift of the image changes little, and the next layer sees a wider area.",
  avg_pool: (layer) => `${layer.stage} replaces each ${layer.kernel[0]}×${layer.kernel[1]} window by its mean, ` +
    `moving ${layer.stride[0]} cells at a time: ${sizeOf(layer.input_shape)} becomes ${sizeOf(layer.output_shape)} per channel. ` +
    "It has no parameters.",
  global_pool: (layer) => `${layer.stage} reduces each of its ${layer.input_shape[0]} channels to one number ` +
    `(from ${sizeOf(layer.input_shape)} to ${sizeOf(layer.output_shape)}): how strongly the channel's pattern is present anywhere in the image.`,
  flatten: (layer) => `${layer.stage} lays the ${SHAPE(layer.input_shape)} maps out as one row of ${COUNT(layer.output_shape[0])} numbers, ` +
    "so the fully connected layer can give each one its own weight. Nothing is computed: every number keeps the place in the image it came from.",
  fully_connected: (layer, card) => {
    const last = layer.filters === card.class_names.length && layer.output_shape[0] === card.class_names.length;
    return `${layer.stage} is fully connected: each of its ${COUNT(layer.filters)} outputs has its own weight for every one of the ` +
      `${COUNT(layer.weights_per_filter)} inputs, ${COUNT(layer.parameters)} parameters ` +
      `(${COUNT(layer.weights_per_filter)}×${COUNT(layer.filters)} weights${layer.bias ? ` + ${COUNT(layer.filters)} biases` : ""}). ` +
      "Each output is a weighted sum of all inputs plus a bias" +
      (last ? ": one score (logit) per class, before softmax." : ", so it can combine patterns found anywhere in the image.");
  },
  softmax: (layer, card) => `softmax turns the ${card.class_names.length} scores into probabilities: ` +
    "e^score divided by the sum of every class's e^score. They are positive and add up to 1; the highest score wins, " +
    "and a lead of 1 in score means about 2.7 times the probability.",
  add: (layer) => `${layer.stage} adds its inputs cell by cell: each output value is the sum of the values at the same ` +
    `channel, row and column of every input (${SHAPE(layer.output_shape)}, no parameters). In a residual block one input ` +
    "skips the block's layers, so the block only has to learn what to change.",
  concat: (layer) => `${layer.stage} stacks its inputs' channels one after another into ${PLURAL(layer.output_shape[0], "channel")} ` +
    `(${sizeOf(layer.output_shape)} each). Nothing is computed and nothing is learned: each value is copied from one input.`,
  block: (layer) => `${layer.stage} is a block of several layers with ${COUNT(layer.parameters)} parameters: ` +
    `${SHAPE(layer.input_shape)} in, ${SHAPE(layer.output_shape)} out. Click a cell to see the arithmetic of its output.`,
  other: (layer) => `${layer.stage}: ${SHAPE(layer.input_shape)} in, ${SHAPE(layer.output_shape)} out, no parameters.`,
};

// The explanation of one stage of the current model. `stage`: a stage name or an object with
// `name` (an activations or card stage); `card`: the run card. "" for a stage the card lacks.
export function stageExplanation(stage, card) {
  const name = typeof stage === "string" ? stage : stage.name;
  const layer = card.stages.find((s) => s.name === name)?.layer;
  if (!layer) return "";
  return (STAGE_TEXT[layer.role] ?? STAGE_TEXT.other)(layer, card);
}

function convolutions(card) {
  return card.stages.filter((s) => s.layer?.role === "convolution");
}

// Sentences per tab, with the model's numbers; a tab without an entry gets no text here.
const VIEW_TEXT = {
  overview: (card) => {
    const roles = new Set(card.stages.map((s) => s.layer?.role));
    const convs = convolutions(card).length;
    const steps = [
      convs ? `the ${PLURAL(convs, "convolution")} find patterns` : null,
      roles.has("relu") ? "ReLU keeps what was found" : null,
      roles.has("max_pool") || roles.has("avg_pool") ? "pooling shrinks the maps" : null,
      roles.has("fully_connected") ? "the fully connected layer turns them into one score per class" : null,
    ].filter(Boolean);
    const story = steps.length ? `${steps.join(", ")}. `.replace(/^t/, "T").replace(/, ([^,]*)\. $/, ", and $1. ") : "";
    return `The image flows left to right through the ${card.stages.length - 1} stages of this ${card.model.name}, ` +
      `${COUNT(card.parameters)} parameters in all. Each column is one stage's output: one small map per channel ` +
      "(red positive, blue negative, black to yellow for values that cannot be negative). " + story +
      "Click any cell to see the arithmetic behind that one number.";
  },
  playground: (card) => {
    const first = convolutions(card)[0]?.layer;
    return "A convolution slides a small kernel over the image; each output cell is the sum of the pixels under the kernel, each multiplied by its weight. " +
      "A kernel with negative weights on one side and positive on the other gives 0 on flat areas and large values where the brightness changes across it: an edge." +
      (first ? ` ${first.stage} of this model does the same with ${PLURAL(first.filters, "kernel")} of ${first.kernel[0]}×${first.kernel[1]} that it learned from the training images.` : "");
  },
  // one clause per registered method (GET /api/registry: its label and help), so a new one is described too
  attribution: (card, registry) => {
    const methods = (registry?.attributions ?? []).map((entry) => `${entry.label} ${entry.help.replace(/\.$/, "")}`);
    const listed = methods.length > 1 ? `${methods.slice(0, -1).join(", ")}, and ${methods.at(-1)}` : methods.join("");
    return `Which pixels made the model choose the class? ${listed ? `Each map answers it differently: ${listed}. ` : ""}` +
      `Bright means important for the class chosen above (any of the ${card.class_names.length}).`;
  },
  attack: (card) => {
    const accuracy = card.metrics?.test_accuracy;
    return "A tiny change to every pixel, chosen by following the model's own gradients, can flip its answer while the image looks the same to us. " +
      "ε is the most any pixel may change (0.1 = a tenth of the range). " +
      (accuracy === undefined ? "" : `This model gets ${(100 * accuracy).toFixed(1)} % of the test images right; see how small an ε undoes that.`);
  },
  layers: (card) => {
    const convs = convolutions(card);
    return `Pick a stage to see what it learned: its kernels (one row per filter${convs.length ? `; ${convs[0].name} has ${convs[0].layer.filters}` : ""}), ` +
      "an image made to excite each channel as much as possible, and the test images that excite one channel most. Early stages respond to edges and strokes; later ones to larger parts.";
  },
  // the same for every run: the Train tab explains itself before any run exists too
  train: () => "Training shows the network every training image once per epoch and nudges each weight to make its answers less wrong. " +
      "The curves follow the loss (how wrong, lower is better) and the accuracy on the training images, on validation images " +
      "(held out; they choose which epoch is kept as the model, marked “kept” on the charts) and on test images (only reported). " +
      "The epoch slider steps through the saved epochs: the first layer's kernels and what they make of one probe image, " +
      "from the random start (epoch 0) on.",
  card: (card) => {
    const epochs = card.metrics?.epochs ?? card.history?.length ?? 0;
    return `What this ${card.model.name} is and how it was trained: ${COUNT(card.parameters)} parameters, ${PLURAL(epochs, "epoch")} on ${card.dataset?.name ?? "its data"}. ` +
      "The validation split chose which epoch became the model; the test split was only used to report how good it is.";
  },
};

// `registry`: GET /api/registry, for the tabs that describe what is registered
export function viewExplanation(tab, card, registry = null) {
  return VIEW_TEXT[tab]?.(card, registry) ?? "";
}

// Puts each tab's explanation at the top of its section (again for every run switched to).
export function explainViews(card, registry = null) {
  for (const section of document.querySelectorAll("main > section.tab")) {
    const tab = section.id.replace(/^tab-/, "");
    const text = viewExplanation(tab, card, registry);
    let paragraph = section.querySelector(":scope > p.view-explanation");
    if (!text) {
      paragraph?.remove();
      continue;
    }
    if (!paragraph) {
      paragraph = document.createElement("p");
      paragraph.className = "view-explanation";
      paragraph.id = `explain-${tab}`;
      section.prepend(paragraph);
    }
    paragraph.textContent = text;
  }
}
