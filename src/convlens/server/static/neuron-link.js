// How any view opens the neuron panel (neuron.js) on one channel: an "open-neuron" event on the
// document, sent by openNeuron or by a neuronLink button. Kept apart from the panel so that a view
// linking to it loads nothing of the panel itself.

export const OPEN_NEURON = "open-neuron"; // detail: {stage, channel}

export function openNeuron(stage, channel) {
  document.dispatchEvent(new CustomEvent(OPEN_NEURON, { detail: { stage, channel: Number(channel) } }));
}

// The stages whose channels have a panel (convlens.inspect.neurons.neuron_stages, read from the run
// card): those with a feature map, after the input's normalization. A segmentation run has none:
// the panel's ablation asks about one class per image (the endpoint refuses such a run).
export function hasNeuronPanel(card, stage) {
  if (card?.task === "segmentation") return false;
  const found = card?.stages.find((s) => s.name === stage);
  return Boolean(found && found.shape.length === 3 && found.layer?.role !== "normalize");
}

// A button that opens the panel on `channel` of `stage`.
export function neuronLink(stage, channel, text = null) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "neuron-link";
  button.dataset.stage = stage;
  button.dataset.channel = channel;
  button.title = `open the neuron panel: ${stage} channel ${channel}'s kernel, what excites it, what zeroing it changes`;
  button.textContent = text ?? `${stage} ch ${channel} ›`;
  button.addEventListener("click", () => openNeuron(stage, channel));
  return button;
}
