// "Where it looks": the channels of a Grad-CAM stage ranked by what Grad-CAM credits them with for
// the class the map explains (POST /api/runs/ID/neuron-ranking, convlens.inspect.neuron_effects.
// grad_cam_ranking): the 8 strongest shown with their share of the map, the rest folded, each a
// link to its neuron panel. Every number is the server's.

import { postImage } from "./api.js";
import { el, fmt } from "./draw.js";
import { hasNeuronPanel, neuronLink } from "./neuron-link.js";

export const SHOWN = 8; // channels listed before the fold

// one request per input, stage and class, however many figures of the view ask (Grad-CAM, Grad-CAM++)
const asked = new WeakMap(); // input → Map("run|stage|target" → Promise of the ranking)

function ranking(run, input, stage, target) {
  if (!asked.has(input)) asked.set(input, new Map());
  const answers = asked.get(input);
  const key = `${run.id}|${stage}|${target}`;
  if (!answers.has(key)) {
    const url = `/api/runs/${encodeURIComponent(run.id)}/neuron-ranking`;
    const answer = postImage(url, input, { stage, target });
    answer.catch(() => answers.delete(key)); // a failed request is asked again next time
    answers.set(key, answer);
  }
  return answers.get(key);
}

function share(line) {
  return line.share === null ? `contribution ${fmt(line.contribution, 3)}` : `${fmt(100 * line.share, 1)} %`;
}

function rankedLine(stage, line) {
  return el("li", { class: "neuron-ranked-channel", "data-channel": line.channel, "data-share": line.share ?? "",
    "data-contribution": line.contribution,
    title: `Grad-CAM weight ${fmt(line.weight, 4)} × the map's mean = contribution ${fmt(line.contribution, 4)}` },
  neuronLink(stage, line.channel, `ch ${line.channel}`), el("span", { class: "neuron-share", text: share(line) }));
}

function fill(box, stage, answer) {
  const [first, rest] = [answer.channels.slice(0, SHOWN), answer.channels.slice(SHOWN)];
  const empty = answer.map_mean <= 0 ? " The map's mean is not above 0 here, so no share is given." : "";
  const folded = rest.length ? el("details", { class: "neuron-channels" },
    el("summary", { text: `the other ${rest.length} channels, in the same order` }),
    el("div", { class: "neuron-links" }, ...rest.map((line) => neuronLink(stage, line.channel, String(line.channel))))) : null;
  box.replaceChildren(
    el("p", { class: "note", text: `Strongest channels of ${stage} for class ${answer.class}: what Grad-CAM credits ` +
      "each with (its weight × its map's mean), as a share of the map before its ReLU; open one in the neuron " +
      `panel.${empty}` }),
    el("ol", { class: "neuron-ranked" }, ...first.map((line) => rankedLine(stage, line))), folded);
  box.dataset.ready = "true";
}

// The ranked channel links of `stage` for the class `target` on `input`, filled in when the
// ranking arrives; null for a stage without a neuron panel. On an error, every channel unranked.
export function rankedChannelLinks(stage, target, { run, card, input }) {
  if (!hasNeuronPanel(card, stage)) return null;
  const box = el("div", { class: "neuron-ranking", "data-stage": stage, "data-target": target },
    el("p", { class: "note", text: `ranking the channels of ${stage} by their Grad-CAM contribution…` }));
  ranking(run, input, stage, target).then((answer) => fill(box, stage, answer), (error) => {
    const count = card.stages.find((s) => s.name === stage).shape[0];
    box.replaceChildren(el("p", { class: "note", text: `channels not ranked: ${error.message}` }),
      el("div", { class: "neuron-links" },
        ...[...Array(count).keys()].map((channel) => neuronLink(stage, channel, String(channel)))));
    box.dataset.ready = "error";
  });
  return box;
}
