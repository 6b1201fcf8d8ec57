"""Analyses the faces show, as library operations that return data.

Each of these used to be assembled inside a face; here each exists once, so the CLI, the report
and the explorer show the same choice of images and maps:

- ``misclassified``: the most confident mistakes first, each with Grad-CAM of the (wrong)
  predicted class — where the model looked when it decided (the report's "Misclassified").
- ``explanation_attribution``: the attribution `convlens explain` draws — the method measured most
  faithful on the run when none is named (``method_choice.default_method``), which stage Grad-CAM
  looks at, and what a model without convolutions gets instead. The faithfulness measurements
  themselves live in ``run_faithfulness``; the stages Grad-CAM may look at in ``cam_stages``.
- ``top_activating_pictures``: the test images that excite each channel most, with their pixels.
- ``one_per_class``: a few sample images of different classes (the demo's samples);
  ``correct_sample``: one image the model gets right (the report's worked example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.inspect._stages import is_spatial_stage, model_stages
from convlens.inspect.attribution import ATTRIBUTIONS, Attribution, grad_cam
from convlens.inspect.cam_stages import is_grad_cam_target, takes_stage
from convlens.inspect.featureviz import TopImages, top_activating_images
from convlens.inspect.run_faithfulness import attribution_faithfulness


@dataclass
class Mistakes:
    """The most confident mistakes among some labelled images, strongest first."""

    indices: torch.Tensor  # (k,) indices into the images
    labels: torch.Tensor  # (k,) the true classes
    predicted: torch.Tensor  # (k,) the (wrong) predicted classes
    confidence: torch.Tensor  # (k,) the probability of the predicted class
    cams: list[Attribution]  # Grad-CAM of the predicted class per mistake ([] when not asked for)
    wrong: int  # mistakes among all the images
    total: int  # how many images were looked at


def misclassified(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor | None = None,
    limit: int = 10,
    with_grad_cam: bool = True,
) -> Mistakes:
    """The ``limit`` most confident mistakes of ``model`` on float ``images`` (N, C, H, W).

    ``probabilities`` (N, classes): the model's, if already computed (else computed here). Ties in
    confidence keep the images' order. ``with_grad_cam``: Grad-CAM of each mistake's predicted
    class at the default stage (``grad_cam_stage``).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConvlensError(f"limit must be a positive integer, got {limit!r}", parameter="limit")
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ConvlensError(
            f"labels: expected one label per image ({images.shape[0]}), got shape {tuple(labels.shape)}",
            parameter="labels",
        )
    if probabilities is None:
        from convlens.predict import predict_probabilities

        probabilities = predict_probabilities(model, images)
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)
    shown = wrong[order][:limit]  # most confident mistakes first
    cams = [grad_cam(model, images[int(i)], target=int(predicted[i])) for i in shown] if with_grad_cam else []
    return Mistakes(
        indices=shown,
        labels=labels[shown],
        predicted=predicted[shown],
        confidence=confidence[shown],
        cams=cams,
        wrong=int(wrong.numel()),
        total=int(labels.numel()),
    )


def explanation_attribution(
    model: nn.Module,
    image: torch.Tensor,
    method: str | None = "grad-cam",
    target: int | None = None,
    stage: str | None = None,
    run=None,
    progress=None,
) -> Attribution | None:
    """The attribution `convlens explain` shows: registered ``method`` for ``target`` (default: the
    prediction).

    ``method=None``: with ``run``, the method (and stage) measured most faithful on it
    (``default_method``; the choice and why under ``faithfulness["default"]``), else Grad-CAM.
    A stage-taking method (Grad-CAM) looks at ``stage`` when that stage has a spatial map, else at
    its default stage. A model without any convolution has no Grad-CAM: that is None, not an error
    (the explanation still has its feature maps and probabilities), but ``target`` is still checked,
    so a bad target is the same error with or without convolutions.

    With ``run`` (a ``Run``), the result carries ``faithfulness``: this image's verdict and the
    run's (``attribution_faithfulness``). ``progress(done, total, what)``: while the run's default is
    measured (its first call on a checkpoint).
    """
    chosen = None
    if method is None and run is not None:
        from convlens.inspect.method_choice import default_method

        chosen = default_method(run, model=model, progress=progress)
        method, stage = chosen["method"], stage if stage is not None else chosen["stage"]
    entry = ATTRIBUTIONS.get(method or "grad-cam")
    cam_stage = stage if stage is not None and is_grad_cam_target(model, stage) else None
    if not takes_stage(entry) or any(is_spatial_stage(module) for _, module in model_stages(model)):
        result = entry.call(model, image, target=target, stage=cam_stage)
        if run is not None:
            result.faithfulness = attribution_faithfulness(run, image, result, model=model)
            if chosen is not None:
                result.faithfulness["default"] = chosen
        return result
    if target is not None:
        ATTRIBUTIONS.get("saliency").call(model, image, target=target)  # only to check the target
    return None


@dataclass
class TopPictures:
    """The images that excite each channel most (``TopImages``), with their pixels."""

    top: TopImages
    pixels: torch.Tensor  # (channels, k, C, H, W) float in [0, 1], in the order of ``top.indices``


def top_activating_pictures(
    model: nn.Module, images: torch.Tensor, stage: str, channels: list[int] | None = None, k: int = 6
) -> TopPictures:
    """``top_activating_images`` of ``images`` (N, C, H, W), and those images as float pixels."""
    top = top_activating_images(model, images, stage, channels, k=k)
    pixels = to_float(images[top.indices.flatten()]).view(*top.indices.shape, *images.shape[1:])
    return TopPictures(top, pixels)


def one_per_class(labels: torch.Tensor, count: int = 6, seed: int = 0) -> list[int]:
    """Indices of up to ``count`` images of different classes, in a seeded random order.

    At most one image per class: a handful of samples that show six zeros shows nothing.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConvlensError(f"count must be a positive integer, got {count!r}", parameter="count")
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, seen = [], set()
    for index in order:
        if int(labels[index]) not in seen:
            chosen.append(index)
            seen.add(int(labels[index]))
        if len(chosen) == count:
            break
    return chosen


def correct_sample(labels: torch.Tensor, probabilities: torch.Tensor) -> int:
    """The first image whose predicted class is its label (0 when there is none): an example that
    shows how the model works rather than how it fails."""
    right = torch.nonzero(probabilities.argmax(dim=1) == labels).flatten()
    return int(right[0]) if right.numel() else 0
