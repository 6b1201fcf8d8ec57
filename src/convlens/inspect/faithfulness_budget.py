"""How much a run-level faithfulness measurement may spend: fewer test images on a costly model.

Measuring every method (``method_choice.default_method``) costs, per test image, each method's map
(RISE: one forward pass per mask; integrated gradients: a forward and backward pass per step and
baseline) and 2 x 17 forward passes of each method's deletion and insertion curves, on top of the
reference curves. On the mnist5k convnet (2 MFLOPs a pass) the 32 default images cost about
2.5e11 floating-point operations, about 15 CPU-seconds (docs/inspect.md, "What measuring costs").
``measurement_budget`` keeps a costlier model near that: it measures on fewer images (never under
``MIN_IMAGES``), and the verdicts stay honest because their t intervals widen with fewer images
(``verdicts.mean_interval``); the images measured are stored with the numbers.
"""

from __future__ import annotations

import weakref

from torch import nn

from convlens.inspect._stages import input_shape
from convlens.inspect.attribution import ATTRIBUTIONS
from convlens.inspect.cam_stages import grad_cam_default, grad_cam_stages, takes_stage

BUDGET_FLOPS = 4e11  # floating-point operations a measurement aims at: mnist5k's 32 images fit
MOST_IMAGES = 32  # test images when the model is cheap (digits, mnist5k)
MIN_IMAGES = 8  # below this a t interval is too wide to let any method pass
MOST_CAM_STAGES = 4  # a stage-taking method is measured at the last 4 rectified stages at most
BACKWARD = 2  # a backward pass costs about two forward passes
REFERENCE_REPEATS = 4  # random orders per image (verdicts.reference_aucs), plus brightness


def map_passes(method: str, height: int, width: int) -> float:
    """Forward-pass equivalents of one map of registered ``method`` at its default options
    (a method this table does not know counts as one gradient: 1 + 1 + BACKWARD)."""
    from convlens.inspect.attribution import IG_STEPS, ig_samples
    from convlens.inspect.random_masks import default_masks
    from convlens.inspect.smoothing import SMOOTHGRAD_SAMPLES

    gradient = 1 + BACKWARD
    if method == "smoothgrad":
        return 1 + gradient * SMOOTHGRAD_SAMPLES
    if method == "integrated-gradients":
        return 1 + gradient * IG_STEPS * ig_samples(height, width)
    if method == "occlusion":
        window = max(2, round(min(height, width) / 7))
        stride = max(1, window // 2)
        return 1 + ((height - window) // stride + 1) * ((width - window) // stride + 1)
    if method == "rise":
        return 1 + default_masks(height, width)
    return 1 + gradient  # grad-cam, grad-cam++, saliency: the prediction, one forward and backward


def measurement_flops(
    flops: float, keys: list[str], height: int, width: int, images: int, steps: int = 16
) -> float:
    """Estimated floating-point operations of measuring ``keys`` on ``images`` test images of a
    model whose forward pass costs ``flops``: reference curves, each key's map and curves on every
    image, and its map again (trained and randomized) on half of them."""
    curve = 2 * (steps + 1)  # deletion and insertion, steps + the intact image
    references = curve * (REFERENCE_REPEATS + 1)
    maps = sum(map_passes(key.partition("@")[0], height, width) for key in keys)
    per_image = references + len(keys) * curve + maps
    return flops * (images * per_image + randomization_images(images) * 2 * maps)


def randomization_images(images: int) -> int:
    """Images whose maps are compared with the randomized model's: half of those measured, at most 16."""
    return max(2, min(16, images // 2))


def measurement_budget(model: nn.Module, keys: list[str]) -> dict:
    """``{"images", "randomization_images", "flops"}``: the most test images (``MOST_IMAGES`` down to
    ``MIN_IMAGES``) whose estimated cost (``measurement_flops``) fits ``BUDGET_FLOPS``, and that cost."""
    from convlens.models.summary import flops_per_image

    shape = input_shape(model)
    if shape is None:  # a model seen through hooks: no shape to count on
        return {"images": MOST_IMAGES, "randomization_images": 16, "flops": None}
    try:
        flops = float(flops_per_image(model, tuple(shape)))
    except (RuntimeError, TypeError, ValueError):  # e.g. a model on a GPU: counted as cheap
        return {"images": MOST_IMAGES, "randomization_images": 16, "flops": None}
    height, width = shape[-2:]
    images = MOST_IMAGES
    while images > MIN_IMAGES and measurement_flops(flops, keys, height, width, images) > BUDGET_FLOPS:
        images -= 1
    return {
        "images": images,
        "randomization_images": randomization_images(images),
        "flops": measurement_flops(flops, keys, height, width, images),
    }


def method_key(method: str, stage: str | None = None) -> str:
    """How a run-level result is stored: the method, or ``METHOD@STAGE`` off its default stage."""
    return f"{method}@{stage}" if stage else method


def candidate_keys(model: nn.Module) -> list[str]:
    """Every registered method, a stage-taking one once per rectified stage Grad-CAM may look at,
    the last ``MOST_CAM_STAGES`` of them (a deep network's early stages would multiply the cost; its
    default stage as its bare name; the default stage alone when no stage is rectified)."""
    stages = grad_cam_stages(model)
    default = grad_cam_default(model)
    rectified = [s["stage"] for s in stages if s["rectified"]][-MOST_CAM_STAGES:] or (
        [default] if default else []
    )
    if default and default not in rectified:
        rectified = [*rectified[1:], default]
    keys = []
    for entry in ATTRIBUTIONS:
        if not takes_stage(entry):
            keys.append(entry.name)
        else:
            keys += [method_key(entry.name, None if stage == default else stage) for stage in rectified]
    return keys


_BUDGETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its budget (stages never change)


def run_budget(model: nn.Module) -> dict:
    """``measurement_budget`` of ``model`` when every candidate (``candidate_keys``) is measured: the
    same images whichever methods are asked for first. Kept per model object: the explorer asks on
    every request, and counting runs forward passes."""
    if model not in _BUDGETS:
        _BUDGETS[model] = measurement_budget(model, candidate_keys(model))
    return _BUDGETS[model]
