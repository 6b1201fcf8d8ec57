"""Verdicts on a run: is a method's map faithful on this run's own test images, beyond noise?

``method_faithfulness`` measures one attribution method on a seeded sample of the run's test
images: the deletion and insertion AUCs of its maps against random orders of the same pixels (a
t interval of the mean difference; also against pixel brightness), with deleted pixels filled by a
blur of the image (black or mean fill
rewards a map that copies the image: measured in docs/inspect.md), and the rank correlation of
its unsigned maps after every stage's weights are re-initialized, blank maps left out and
counted. ``verdict_below`` turns an interval into "passes", "fails" or "inconclusive"; a method's
verdict is deletion's and randomization's together (insertion is reported, not judged on).
The curves and the randomization themselves live in ``convlens.inspect.faithfulness``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from convlens.data.bundle import to_float
from convlens.errors import ConvlensError
from convlens.inspect._stages import eval_mode, model_device, model_stages
from convlens.inspect.faithfulness import (
    PASS_SPEARMAN,
    cascade_stages,
    method_name,
    pixel_order,
    reinitialize,
    spearman,
)

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


CURVE_MODES = ("deletion", "insertion")


def curve_aucs(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    orders: torch.Tensor,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    mode: str = "deletion",
    batch_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(aucs (N,), curves (N, steps + 1)): the probability of ``targets`` as pixels change in
    ``orders`` (N, H*W; pixel indices, first changed first), in ``steps`` equal chunks; the area
    under each curve over the share changed (0 .. 1). Batched.

    ``deletion``: each image's pixels become ``fill_images`` (a low AUC: the map found what the
    model needs). ``insertion``: the fill's pixels become the image's, starting from the fill
    (a high AUC: the first pixels put back restore the class)."""
    if mode not in CURVE_MODES:
        raise ConvlensError(f"mode must be deletion or insertion, got {mode!r}", parameter="mode")
    images = to_float(images).float()
    count, _, height, width = images.shape
    pixels = height * width
    changed = torch.round(torch.linspace(0, pixels, steps + 1)).long()  # (S,) pixels changed per point
    rank = torch.empty(count, pixels, dtype=torch.long)
    rank.scatter_(1, orders.long(), torch.arange(pixels).expand(count, pixels).contiguous())
    mask = (rank[:, None, :] < changed[None, :, None]).view(count, steps + 1, 1, height, width).float()
    filled = fill_images(images, fill)
    start, end = (images, filled) if mode == "deletion" else (filled, images)
    batch = start[:, None] * (1 - mask) + end[:, None] * mask  # (N, S, C, H, W)
    batch = batch.flatten(0, 1)
    device = model_device(model)
    chunks = []
    with eval_mode(model), torch.no_grad():
        for first in range(0, batch.shape[0], batch_size):
            chunks.append(torch.softmax(model(batch[first : first + batch_size].to(device)).float(), 1).cpu())
    probabilities = torch.cat(chunks).view(count, steps + 1, -1)
    curves = probabilities.gather(2, targets.long().view(count, 1, 1).expand(count, steps + 1, 1))[..., 0]
    aucs = torch.trapezoid(curves, changed.float() / pixels, dim=1)
    return aucs, curves


def map_orders(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, H*W) pixel orders, highest value first, ties broken at random (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([pixel_order(m, generator) for m in maps])


def random_orders(count: int, pixels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(pixels, generator=generator) for _ in range(count)])


def mean_interval(values: torch.Tensor, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean. One value has no interval: low and high
    are NaN, so no verdict can pass on a single image."""
    from scipy.stats import t

    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    mean = float(values.mean()) if values.numel() else float("nan")
    if values.numel() < 2:
        return mean, float("nan"), float("nan")
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
            reinitialize(named[stage])
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
    mode: str = "deletion",
):
    """(random (N,), brightness (N,)) ``mode`` AUCs (``curve_aucs``): random order averaged over
    ``repeats`` seeded orders per image; brightness (the map that copies the image) for comparison.
    ``with_curves``: and their mean curves, ``{"random": (S,), "brightness": (S,)}``."""
    count, _, height, width = images.shape
    orders = random_orders(count * repeats, height * width, seed)
    many = images.repeat(repeats, 1, 1, 1)
    random, random_curves = curve_aucs(model, many, targets.repeat(repeats), orders, fill, steps, mode)
    bright, bright_curves = curve_aucs(
        model, images, targets, map_orders(images.sum(dim=1), seed), fill, steps, mode
    )
    found = random.view(repeats, count).mean(dim=0), bright
    if with_curves:
        return (*found, {"random": random_curves.mean(dim=0), "brightness": bright_curves.mean(dim=0)})
    return found


def _compared(aucs: torch.Tensor, reference: torch.Tensor, keep: torch.Tensor) -> tuple[float, float, float]:
    """(mean, low, high) of the per-image ``aucs - reference`` over the kept images."""
    return mean_interval((aucs - reference)[keep])


def curve_result(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    references: dict,
    mode: str = "deletion",
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
) -> dict:
    """One method's ``mode`` curves on ``images`` from its ``maps`` (N, H, W), blank maps left out,
    against ``references`` (``{"random": (N,), "brightness": (N,)}``): the per-image difference's mean
    and t interval against each. The verdict is against random order: deletion passes when the whole
    interval of (map − random) lies below 0, insertion when it lies above 0."""
    keep = torch.tensor([not is_blank(m) for m in maps])
    aucs, curve = torch.full((images.shape[0],), float("nan")), torch.full((steps + 1,), float("nan"))
    if keep.any():
        aucs[keep], curves = curve_aucs(
            model, images[keep], targets[keep], map_orders(maps[keep], seed), fill, steps, mode
        )
        curve = curves.mean(dim=0)
    mean, low, high = _compared(aucs, references["random"], keep)
    versus, versus_low, versus_high = _compared(aucs, references["brightness"], keep)
    verdict = verdict_below(low, high) if mode == "deletion" else verdict_below(-high, -low)
    return {
        "verdict": verdict,
        "auc": float(aucs[keep].mean()) if keep.any() else None,
        "random_auc": float(references["random"][keep].mean()) if keep.any() else None,
        "brightness_auc": float(references["brightness"][keep].mean()) if keep.any() else None,
        "difference": _finite(mean),  # map − random: below 0 is better for deletion, above for insertion
        "interval": [_finite(low), _finite(high)],
        "vs_brightness": {
            "difference": _finite(versus),
            "interval": [_finite(versus_low), _finite(versus_high)],
        },
        "images": int(keep.sum()),
        "blank": int((~keep).sum()),
        "per_image": [_finite(v) for v in aucs.tolist()],
        "curve": [_finite(v) for v in curve.tolist()],  # mean probability at each step
    }


def method_faithfulness(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method,
    references: dict,
    fill: str = DEFAULT_FILL,
    steps: int = CURVE_STEPS,
    seed: int = 0,
    randomization_images: int = 16,
    **options,
) -> dict:
    """One method on ``images`` (N, C, H, W) for classes ``targets``, as JSON-ready numbers.

    ``references``: ``{"deletion": {"random", "brightness"}, "insertion": {...}}``, per-image AUCs
    (``reference_aucs``). Deletion and insertion (``curve_result``): each image's AUC with the
    method's map (ties at random) against the references, mean difference with its t interval.
    Randomization: Spearman of the unsigned map (``unsigned_map``) of the trained model and of the
    fully re-initialized one (``randomized_copy``) on the first ``randomization_images``, mean and
    interval (``verdict_below`` PASS_SPEARMAN). An image whose map is blank (constant) is left out
    of either check and counted.

    The verdict combines deletion and randomization (``combined_verdict``); insertion is reported
    beside it, with its own noise-aware verdict, but does not decide.
    """
    shape = tuple(images.shape[-2:])
    results = [attribution_result(model, image, method, int(t), seed=seed + i, **options)
               for i, (image, t) in enumerate(zip(images, targets, strict=True))]  # fmt: skip
    maps = torch.stack(
        [torch.as_tensor(getattr(r, "map", r)).detach().float().cpu().reshape(shape) for r in results]
    )
    measured = {
        mode: curve_result(model, images, targets, maps, references[mode], mode, fill, steps, seed)
        for mode in CURVE_MODES
    }
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
    randomization = verdict_below(rho_low, rho_high, PASS_SPEARMAN)
    return {
        "method": method_name(method),
        "stage": getattr(results[0], "stage", None),  # where a stage-taking method looked
        "verdict": combined_verdict(measured["deletion"]["verdict"], randomization),
        "images": int(images.shape[0]),
        **measured,
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
