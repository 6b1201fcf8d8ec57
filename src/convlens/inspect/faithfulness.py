"""Does a map explain the model? Deletion/insertion curves and cascading weight randomization.

- ``deletion_curve`` (Petsiuk et al. 2018, RISE): delete the pixels a map ranks highest,
  ``step`` at a time, and follow the probability of the image's class; the area under that
  curve (AUC) is low when the map found the pixels the model needs. ``mode="insertion"``
  starts from the empty image and puts the pixels back (high AUC is good).
- ``randomization_check`` (Adebayo et al. 2018, "Sanity checks for saliency maps"):
  re-initialize the model's weights stage by stage from the top and compare each map with
  the trained model's by Spearman rank correlation; a map that stays the same explains the
  image, not the model.

``method`` is a registered attribution method's name, one of the model-free references
(``random``: a random ranking; ``brightness``: the brightest pixels first), or a function
``(model, image, target) -> Attribution | map (H, W)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.errors import ConvlensError
from convlens.inspect._stages import eval_mode, input_shape, model_device, model_stages

REFERENCES = ("random", "brightness")  # model-free maps every method is compared with
PASS_SPEARMAN = 0.5  # a mean rank correlation below this passes the randomization check


@dataclass
class DeletionCurve:
    """The class probability as a map's top pixels are deleted (or inserted), mean over images."""

    method: str
    mode: str  # "deletion" (low AUC = faithful) or "insertion" (high AUC = faithful)
    step: int  # pixels changed per point of the curve
    fractions: torch.Tensor  # (S,) share of the pixels deleted (inserted), 0 .. 1
    probabilities: torch.Tensor  # (S,) mean probability of each image's class
    aucs: torch.Tensor  # (N,) area under each image's curve
    auc: float  # mean of ``aucs``


@dataclass
class RandomizationCheck:
    """Rank correlation of each map with the trained model's as stages are re-initialized from the top."""

    method: str
    stages: list[str]  # the stage re-initialized at each cascade step (the ones above it stay random)
    spearman: torch.Tensor  # (S, N) per step and image; a constant map counts as 0
    per_step: torch.Tensor  # (S,) mean over images
    mean: float  # mean over steps and images
    passed: bool  # mean < PASS_SPEARMAN


def _method_name(method) -> str:
    return method if isinstance(method, str) else getattr(method, "__name__", "custom")


def attribution_map(
    model: nn.Module, image: torch.Tensor, method, target: int, seed: int = 0, **options
) -> torch.Tensor:
    """The (H, W) map of ``method`` for one image (C, H, W) in [0, 1] and class ``target``."""
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(image.shape[-2:], generator=generator)
    if method == "brightness":
        return image.float().sum(dim=0).cpu()
    if isinstance(method, str):
        from convlens.inspect.attribution import ATTRIBUTIONS

        result = ATTRIBUTIONS.get(method).call(model, image, target=target, **options)
    elif callable(method):
        result = method(model, image, target)
    else:
        raise ConvlensError(f"method must be a method name or a function, got {method!r}", parameter="method")
    values = result.map if hasattr(result, "map") else result
    return torch.as_tensor(values).detach().float().cpu().reshape(image.shape[-2:])


def _check_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    expected = input_shape(model)
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or (expected is not None and tuple(images.shape[1:]) != tuple(expected))
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConvlensError(
            f"images must be N x C x H x W pixels the model takes, got {shape}", parameter="images"
        )
    if images.shape[0] == 0:
        raise ConvlensError("images must hold at least one image", parameter="images")
    return to_float(images).float()


def _order(saliency: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixel indices, highest value first; ties broken at random (an all-zero map is a random order)."""
    flat = saliency.flatten()
    shuffled = torch.randperm(flat.numel(), generator=generator)
    ranked = torch.sort(flat[shuffled], descending=True, stable=True).indices
    return shuffled[ranked]


def deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method="grad-cam",
    step: int = 8,
    mode: str = "deletion",
    fill: float = 0.0,
    seed: int = 0,
    maps: torch.Tensor | None = None,
    **options,
) -> DeletionCurve:
    """Delete (``mode="insertion"``: insert) each image's pixels ``step`` at a time in the order of
    ``method``'s map and record the probability of its label; the curve and its area, mean over images.

    A deleted pixel becomes ``fill`` (black) in every channel; insertion starts from an all-``fill``
    image. ``maps`` (N, H, W) skips computing the maps; ``options`` go to the method.
    """
    images = _check_images(model, images)
    labels = torch.as_tensor(labels).long().flatten()
    if labels.shape[0] != images.shape[0]:
        raise ConvlensError(
            f"labels must have one class per image ({images.shape[0]}), got {labels.shape[0]}",
            parameter="labels",
        )
    if step < 1:
        raise ConvlensError(f"step must be at least 1 pixel, got {step}", parameter="step")
    if mode not in ("deletion", "insertion"):
        raise ConvlensError(f"mode must be deletion or insertion, got {mode!r}", parameter="mode")
    height, width = images.shape[-2:]
    pixels = height * width
    points = math.ceil(pixels / step) + 1
    counts = torch.clamp(torch.arange(points) * step, max=pixels)  # (S,) pixels changed at each point
    fractions = counts.float() / pixels
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    curves = []
    with eval_mode(model):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            saliency = (
                maps[index]
                if maps is not None
                else attribution_map(model, image, method, int(label), seed=seed + index, **options)
            )
            order = _order(saliency, generator)
            # mask[s, p] = 1 where pixel p is changed at point s: p's rank < counts[s]
            rank = torch.empty(pixels, dtype=torch.long)
            rank[order] = torch.arange(pixels)
            changed = (rank[None, :] < counts[:, None]).view(points, 1, height, width).float()
            if mode == "insertion":
                changed = 1 - changed
            batch = image[None] * (1 - changed) + fill * changed  # (S, C, H, W)
            with torch.no_grad():
                probabilities = torch.softmax(model(batch.to(device)).float(), dim=1)[:, int(label)].cpu()
            curves.append(probabilities)
    curves = torch.stack(curves)  # (N, S)
    aucs = torch.trapezoid(curves, fractions, dim=1)
    return DeletionCurve(
        method=_method_name(method),
        mode=mode,
        step=step,
        fractions=fractions,
        probabilities=curves.mean(dim=0),
        aucs=aucs,
        auc=float(aucs.mean()),
    )


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties sharing their mean rank (what Spearman's rho needs)."""
    ordered, order = torch.sort(values.double())
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, dim=0).double()  # last rank of each group of equal values
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(ordered)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps; 0 when either is constant (it carries no ranking)."""
    ra, rb = _ranks(a.flatten()), _ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


def cascade_stages(model: nn.Module) -> list[str]:
    """The stages with weights, from the output back to the input: the order they are re-initialized."""
    return [name for name, module in reversed(model_stages(model)) if any(True for _ in module.parameters())]


def _reinitialize(module: nn.Module) -> None:
    for child in module.modules():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()


def randomization_check(
    model: nn.Module,
    images: torch.Tensor,
    method="grad-cam",
    labels: torch.Tensor | None = None,
    seed: int = 0,
    maps: torch.Tensor | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    **options,
) -> RandomizationCheck:
    """Cascading randomization (Adebayo et al. 2018): re-initialize the stages with weights one by
    one from the top (``cascade_stages``), and after each compare ``method``'s maps with the trained
    model's by Spearman rank correlation, for class ``labels`` (default: the trained prediction).

    The model is copied; it is not changed. ``maps`` (N, H, W): the trained model's maps, if known.
    """
    images = _check_images(model, images)
    stages = cascade_stages(model)
    if not stages:
        raise ConvlensError("model has no weights to randomize", parameter="model")
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        predictions = model(images.to(device)).argmax(dim=1).cpu()
    targets = predictions if labels is None else torch.as_tensor(labels).long().flatten()
    if maps is None:
        maps = torch.stack(
            [attribution_map(model, image, method, int(t), seed=seed + i, **options)
             for i, (image, t) in enumerate(zip(images, targets, strict=True))]
        )  # fmt: skip
    randomized = copy.deepcopy(model)
    named = dict(model_stages(randomized))
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for done, stage in enumerate(stages):
            _reinitialize(named[stage])
            row = []
            for i, (image, t) in enumerate(zip(images, targets, strict=True)):
                other = attribution_map(randomized, image, method, int(t), seed=seed + i, **options)
                row.append(spearman(maps[i], other))
            rows.append(row)
            if progress is not None:
                progress(done + 1, len(stages), f"{_method_name(method)}: {stage} randomized")
    correlations = torch.tensor(rows, dtype=torch.float32)  # (S, N)
    mean = float(correlations.mean())
    return RandomizationCheck(
        method=_method_name(method),
        stages=stages,
        spearman=correlations,
        per_step=correlations.mean(dim=1),
        mean=mean,
        passed=mean < PASS_SPEARMAN,
    )


# --------------------------------------------------------------- measured on a run, with intervals

FILLS = ("blur", "mean", "black")
# The fill of a deleted pixel, chosen by measurement (docs/inspect.md, "Faithfulness on your run"):
# with black, deleting the brightest pixels (a map that copies the image) beats every gradient map.
DEFAULT_FILL = "blur"
CURVE_STEPS = 16  # points of the coarse deletion curve (+ the intact image)
CONFIDENCE = 0.95
VERDICTS = ("passes", "fails", "inconclusive")


def fill_images(images: torch.Tensor, fill: str) -> torch.Tensor:
    """What a deleted pixel becomes, per image (N, C, H, W): ``blur`` the image blurred (sigma 1/7
    of its size, as integrated gradients' blur baseline), ``mean`` each channel's mean, ``black`` 0."""
    if fill == "black":
        return torch.zeros_like(images)
    if fill == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()
    if fill == "blur":
        from convlens.inspect.attribution import ig_baselines

        return torch.cat([ig_baselines(image[None], "blur") for image in images])
    raise ConvlensError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}", parameter="fill")


def deletion_aucs(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    orders: torch.Tensor,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    batch_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(aucs (N,), curves (N, steps + 1)): the probability of ``targets`` as each image's pixels are
    replaced by ``fill_images`` in ``orders`` (N, H*W; pixel indices, first deleted first), in
    ``steps`` equal chunks; the area under each curve over the share deleted (0 .. 1). Batched."""
    images = to_float(images).float()
    count, _, height, width = images.shape
    pixels = height * width
    deleted = torch.round(torch.linspace(0, pixels, steps + 1)).long()  # (S,) pixels deleted per point
    rank = torch.empty(count, pixels, dtype=torch.long)
    rank.scatter_(1, orders.long(), torch.arange(pixels).expand(count, pixels).contiguous())
    mask = (rank[:, None, :] < deleted[None, :, None]).view(count, steps + 1, 1, height, width).float()
    filled = fill_images(images, fill)
    batch = images[:, None] * (1 - mask) + filled[:, None] * mask  # (N, S, C, H, W)
    batch = batch.flatten(0, 1)
    device = model_device(model)
    chunks = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, batch.shape[0], batch_size):
            chunks.append(torch.softmax(model(batch[start : start + batch_size].to(device)).float(), 1).cpu())
    probabilities = torch.cat(chunks).view(count, steps + 1, -1)
    curves = probabilities.gather(2, targets.long().view(count, 1, 1).expand(count, steps + 1, 1))[..., 0]
    aucs = torch.trapezoid(curves, deleted.float() / pixels, dim=1)
    return aucs, curves


def map_orders(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, H*W) pixel orders, highest value first, ties broken at random (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([_order(m, generator) for m in maps])


def random_orders(count: int, pixels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(pixels, generator=generator) for _ in range(count)])


def mean_interval(values: torch.Tensor, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean (low = high = mean for one value)."""
    from scipy.stats import t

    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    mean = float(values.mean()) if values.numel() else float("nan")
    if values.numel() < 2:
        return mean, mean, mean
    half = (
        float(t.ppf(0.5 + confidence / 2, values.numel() - 1)) * float(values.std()) / values.numel() ** 0.5
    )
    return mean, mean - half, mean + half


def verdict_below(low: float, high: float, reference: float = 0.0) -> str:
    """``passes`` when the whole interval lies below ``reference``, ``fails`` when none of it does,
    else ``inconclusive`` (the noise allows either)."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if high < reference:
        return "passes"
    return "fails" if low >= reference else "inconclusive"


def unsigned_map(result, shape: tuple[int, int]) -> torch.Tensor:
    """The map's magnitude before any clamping: |raw| summed over channels (input methods) or
    |Grad-CAM| upsampled to the input (bilinear); a bare map's absolute value."""
    raw = getattr(result, "raw", None)
    if raw is None:
        return torch.as_tensor(getattr(result, "map", result)).detach().float().abs().reshape(shape)
    raw = raw.detach().float().cpu().abs()
    if tuple(raw.shape[-2:]) == tuple(shape):
        return raw.reshape(-1, *shape).sum(dim=0)
    up = nn.functional.interpolate(raw.reshape(1, 1, *raw.shape[-2:]), size=shape, mode="bilinear")
    return up[0, 0]


def is_blank(values: torch.Tensor) -> bool:
    """A constant map ranks nothing."""
    return bool(
        values.numel() == 0 or values.max() - values.min() <= 1e-12 * max(1.0, float(values.abs().max()))
    )


def attribution_result(model: nn.Module, image: torch.Tensor, method, target: int, seed: int = 0, **options):
    """``method``'s Attribution (or a bare map from a function) for one image and class ``target``."""
    if isinstance(method, str):
        from convlens.inspect.attribution import ATTRIBUTIONS

        return ATTRIBUTIONS.get(method).call(model, image, target=target, seed=seed, **options)
    return method(model, image, target)


def randomized_copy(model: nn.Module, seed: int = 0) -> tuple[nn.Module, list[str]]:
    """A copy with every stage that has weights re-initialized (the cascade's last step) and those
    stages, top first."""
    stages = cascade_stages(model)
    randomized = copy.deepcopy(model)
    named = dict(model_stages(randomized))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for stage in stages:
            _reinitialize(named[stage])
    return randomized, stages


def combined_verdict(deletion: str, randomization: str) -> str:
    """``passes`` only when both checks pass; ``fails`` when either fails."""
    if "fails" in (deletion, randomization):
        return "fails"
    return "passes" if deletion == randomization == "passes" else "inconclusive"


def reference_aucs(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
    repeats: int = 4,
    with_curves: bool = False,
):
    """(random (N,), brightness (N,)) deletion AUCs: random order averaged over ``repeats`` seeded
    orders per image; brightness (the map that copies the image) for comparison. ``with_curves``:
    and their mean curves, ``{"random": (S,), "brightness": (S,)}``."""
    count, _, height, width = images.shape
    orders = random_orders(count * repeats, height * width, seed)
    many = images.repeat(repeats, 1, 1, 1)
    random, random_curves = deletion_aucs(model, many, targets.repeat(repeats), orders, fill, steps)
    bright, bright_curves = deletion_aucs(
        model, images, targets, map_orders(images.sum(dim=1), seed), fill, steps
    )
    found = random.view(repeats, count).mean(dim=0), bright
    if with_curves:
        return (*found, {"random": random_curves.mean(dim=0), "brightness": bright_curves.mean(dim=0)})
    return found


def method_faithfulness(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method,
    random_aucs: torch.Tensor,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
    randomization_images: int = 16,
    **options,
) -> dict:
    """One method on ``images`` (N, C, H, W) for classes ``targets``, as JSON-ready numbers.

    Deletion: each image's AUC with the method's map (ties at random) minus its ``random_aucs``;
    the mean difference with its t interval (``verdict_below`` 0). Randomization: Spearman of the
    unsigned map (``unsigned_map``) of the trained model and of the fully re-initialized one
    (``randomized_copy``) on the first ``randomization_images``, mean and interval
    (``verdict_below`` PASS_SPEARMAN). An image whose map is
    blank (constant) is left out of either check and counted.
    """
    shape = tuple(images.shape[-2:])
    results = [attribution_result(model, image, method, int(t), seed=seed + i, **options)
               for i, (image, t) in enumerate(zip(images, targets, strict=True))]  # fmt: skip
    maps = torch.stack(
        [torch.as_tensor(getattr(r, "map", r)).detach().float().cpu().reshape(shape) for r in results]
    )
    keep = torch.tensor([not is_blank(m) for m in maps])
    aucs, curve = torch.full((images.shape[0],), float("nan")), torch.full((steps + 1,), float("nan"))
    if keep.any():
        aucs[keep], curves = deletion_aucs(
            model, images[keep], targets[keep], map_orders(maps[keep], seed), fill, steps
        )
        curve = curves.mean(dim=0)
    difference = (aucs - random_aucs)[keep]
    mean, low, high = mean_interval(difference)
    randomized, _ = randomized_copy(model, seed)
    rhos, blank_random = [], 0
    for i, (image, t) in enumerate(zip(images[:randomization_images], targets, strict=False)):
        trained = unsigned_map(results[i], shape)
        other = unsigned_map(
            attribution_result(randomized, image, method, int(t), seed=seed + i, **options), shape
        )
        if is_blank(trained) or is_blank(other):
            blank_random += 1
            continue
        rhos.append(spearman(trained, other))
    rho, rho_low, rho_high = mean_interval(torch.tensor(rhos, dtype=torch.float64))
    deletion = verdict_below(low, high)
    randomization = verdict_below(rho_low, rho_high, PASS_SPEARMAN)
    return {
        "method": _method_name(method),
        "verdict": combined_verdict(deletion, randomization),
        "images": int(images.shape[0]),
        "deletion": {
            "verdict": deletion,
            "auc": float(aucs[keep].mean()) if keep.any() else None,
            "random_auc": float(random_aucs[keep].mean()) if keep.any() else None,
            "difference": _finite(mean),
            "interval": [_finite(low), _finite(high)],
            "images": int(keep.sum()),
            "blank": int((~keep).sum()),
            "per_image": [_finite(v) for v in aucs.tolist()],
            "curve": [_finite(v) for v in curve.tolist()],  # mean probability at each step
        },
        "randomization": {
            "verdict": randomization,
            "spearman": _finite(rho),
            "interval": [_finite(rho_low), _finite(rho_high)],
            "threshold": PASS_SPEARMAN,
            "images": len(rhos),
            "blank": blank_random,
        },
    }


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
