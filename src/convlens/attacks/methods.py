"""The attacks themselves: FGSM and PGD on a batch of images, built on Captum, and their registry.

Models take pixels in [0, 1] and normalize inside, so ε is in pixel units (ε = 8/255 means
"every pixel moves by at most 8 grey levels") and the adversarial image is clipped to
[0, 1] — a real image. The perturbation maths is Captum's (``captum.robust.FGSM``/``PGD``);
this module adds the loss on logits, batching, input checks and the numbers a learner reads.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConvlensError
from convlens.registry import Registry

MAX_STEPS = 1_000  # PGD steps: robustness benchmarks use at most this many; more never ends on a CPU
# fgsm and pgd register at the end of this module; a new attack is one function and one line
ATTACKS = Registry("attack", shared_inputs=("model", "images", "labels", "target", "batch_size", "progress"))

# progress(done, total, what): called as a long computation advances; the last call has done == total
Progress = Callable[[int, int, str], None]


@dataclass
class AttackResult:
    """Clean vs adversarial predictions of one attack on a batch of images."""

    method: str  # "fgsm" or "pgd"
    eps: float  # L∞ budget in pixel units ([0, 1])
    steps: int  # gradient steps (1 for FGSM)
    step_size: float  # size of each step (= eps for FGSM)
    target: int | None  # the class a targeted attack pushes towards; None: untargeted
    labels: torch.Tensor  # (N,) true classes
    clean_predictions: torch.Tensor  # (N,)
    adversarial_predictions: torch.Tensor  # (N,)
    clean_confidences: torch.Tensor  # (N,) softmax probability of the predicted class
    adversarial_confidences: torch.Tensor  # (N,)
    clean_images: torch.Tensor = field(repr=False)  # (N, C, H, W) in [0, 1]
    adversarial_images: torch.Tensor = field(repr=False)  # (N, C, H, W) in [0, 1]

    @property
    def label(self) -> str:
        """How tables and plots name this attack, e.g. "FGSM" or "PGD-10"."""
        return attack_label(self.method, self.steps)

    @property
    def perturbations(self) -> torch.Tensor:
        """adversarial - clean, (N, C, H, W)."""
        return self.adversarial_images - self.clean_images

    @property
    def clean_accuracy(self) -> float:
        return _fraction(self.clean_predictions == self.labels)

    @property
    def adversarial_accuracy(self) -> float:
        return _fraction(self.adversarial_predictions == self.labels)

    @property
    def max_linf(self) -> float:
        """Largest pixel change over all images: never above eps."""
        return float(self.perturbations.abs().max()) if self.labels.numel() else 0.0

    @property
    def mean_l2(self) -> float:
        """Mean over images of the perturbation's Euclidean length (pixel units)."""
        if not self.labels.numel():
            return 0.0
        return float(self.perturbations.flatten(1).norm(dim=1).mean())

    @property
    def flipped(self) -> torch.Tensor:
        """(N,) bool: correct before the attack, wrong after."""
        return (self.clean_predictions == self.labels) & (self.adversarial_predictions != self.labels)

    @property
    def target_success_rate(self) -> float | None:
        """Among images not already of the target class: the fraction now predicted as the target."""
        if self.target is None:
            return None
        others = self.labels != self.target
        return _fraction(self.adversarial_predictions[others] == self.target)

    def summary(self) -> dict:
        """The numbers (no tensors), ready for JSON."""
        return {
            "method": self.method,
            "label": self.label,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "target": self.target,
            "images": int(self.labels.numel()),
            "clean_accuracy": self.clean_accuracy,
            "adversarial_accuracy": self.adversarial_accuracy,
            "mean_confidence_clean": mean_or_zero(self.clean_confidences),
            "mean_confidence_adversarial": mean_or_zero(self.adversarial_confidences),
            "max_linf": self.max_linf,
            "mean_l2": self.mean_l2,
            "flipped": int(self.flipped.sum()),
            "target_success_rate": self.target_success_rate,
        }


def attack_label(method: str, steps: int) -> str:
    """An attack's display name: its registered label, with the step count if it iterates."""
    entry = ATTACKS.get(method)
    return f"{entry.label}-{steps}" if entry.accepts("steps") else entry.label


def _fraction(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else 0.0


def mean_or_zero(values: torch.Tensor) -> float:
    """The mean of ``values``; 0 for none (an empty batch has no confidence to average)."""
    return float(values.mean()) if values.numel() else 0.0


def _per_image_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    # One loss per image (not the batch mean): Captum sums them, so each image's gradient
    # does not shrink with the batch size.
    return F.cross_entropy(logits, classes, reduction="none")  # (B,)


def check_eps(eps: float, parameter: str = "eps") -> float:
    """ε must be a pixel distance in [0, 1]."""
    if (
        isinstance(eps, bool)
        or not isinstance(eps, int | float)
        or not math.isfinite(eps)
        or not 0 <= eps <= 1
    ):
        raise ConvlensError(
            f"{parameter} must be between 0 and 1 (pixel units, e.g. 0.1), got {eps}", parameter=parameter
        )
    return float(eps)


def check_inputs(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reject images the model does not take, or that are not pixels in [0, 1], and labels that
    are not one class index of the model per image."""
    from convlens.predict import check_images

    expected = tuple(getattr(model, "in_shape", ()))
    if (
        isinstance(images, torch.Tensor)
        and images.ndim == 4
        and expected
        and tuple(images.shape[1:]) != expected
    ):
        shape = "x".join(map(str, images.shape[1:]))
        raise ConvlensError(
            f"images are {shape}, the model takes {'x'.join(map(str, expected))} (C x H x W)",
            parameter="images",
        )
    images = check_images(model, images)  # float32, as the weights
    classes = getattr(model, "num_classes", None)
    if (
        not isinstance(labels, torch.Tensor)
        or labels.ndim != 1
        or labels.dtype in (torch.bool,)
        or labels.is_floating_point()
        or labels.is_complex()
    ):
        raise ConvlensError("labels must be a 1-D tensor of class indices (int64)", parameter="labels")
    if images.shape[0] != labels.shape[0]:
        raise ConvlensError(f"{images.shape[0]} images but {labels.shape[0]} labels", parameter="labels")
    if labels.numel() and (int(labels.min()) < 0 or (classes is not None and int(labels.max()) >= classes)):
        raise ConvlensError(
            f"labels must be class indices 0..{(classes or 1) - 1}, got {int(labels.min())}..{int(labels.max())}",
            parameter="labels",
        )
    if not images.is_floating_point() or (
        images.numel() and (float(images.min()) < 0 or float(images.max()) > 1)
    ):
        raise ConvlensError(
            "images must be float pixels in [0, 1] (use convlens.data.to_float)", parameter="images"
        )
    return images


def _check_target(model: nn.Module, target: int | None) -> None:
    classes = getattr(model, "num_classes", None)
    if target is not None and (
        isinstance(target, bool)
        or not isinstance(target, int)
        or target < 0
        or (classes is not None and target >= classes)
    ):
        raise ConvlensError(
            f"target must be a class index 0..{(classes or 1) - 1}, got {target}", parameter="target"
        )


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probabilities = torch.softmax(model(images).float(), dim=1)  # (B, classes)
    confidence, predicted = probabilities.max(dim=1)
    return predicted, confidence


def _run(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    perturb,
    target: int | None,
    batch_size: int,
    progress: Progress | None = None,
    what: str = "attack",
) -> tuple[torch.Tensor, ...]:
    """Attack in batches; returns (adversarial images, clean/adv predictions and confidences).

    ``progress(images done, images, what)`` is called after every batch.

    The attack runs on a channels_last copy of the model in eval mode: channels_last weights
    and inputs make the input-gradient convolutions up to 2x faster on CPU (PERF-NOTES), and
    the copy leaves the caller's model, its weights and its train/eval mode untouched.
    """
    working = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    device = next(working.parameters()).device
    adversarial, outputs = [], {"cp": [], "cc": [], "ap": [], "ac": []}
    for first in range(0, images.shape[0], batch_size):
        clean = images[first : first + batch_size].to(device)  # (B, C, H, W)
        clean = clean.contiguous(memory_format=torch.channels_last)
        classes = labels[first : first + batch_size].to(device)  # (B,)
        if target is not None:
            classes = torch.full_like(classes, target)
        with warnings.catch_warnings():  # Captum warns that it turns on input gradients; intended
            warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
            adv = perturb(working, clean, classes, target is not None).detach()  # (B, C, H, W)
        for key, batch in (("c", clean), ("a", adv)):
            predicted, confidence = _predict(working, batch)
            outputs[key + "p"].append(predicted.cpu())
            outputs[key + "c"].append(confidence.cpu())
        adversarial.append(adv.cpu().contiguous())
        if progress is not None:
            progress(min(first + batch_size, images.shape[0]), images.shape[0], what)
    cat = torch.cat
    return (
        cat(adversarial),
        cat(outputs["cp"]),
        cat(outputs["cc"]),
        cat(outputs["ap"]),
        cat(outputs["ac"]),
    )


def _result(method, eps, steps, step_size, target, images, labels, run) -> AttackResult:
    adversarial, clean_pred, clean_conf, adv_pred, adv_conf = run
    return AttackResult(
        method=method,
        eps=eps,
        steps=steps,
        step_size=step_size,
        target=target,
        labels=labels.cpu(),
        clean_predictions=clean_pred,
        adversarial_predictions=adv_pred,
        clean_confidences=clean_conf,
        adversarial_confidences=adv_conf,
        clean_images=images.cpu(),
        adversarial_images=adversarial,
    )


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    target: int | None = None,
    batch_size: int = 250,
    progress: Progress | None = None,
) -> AttackResult:
    """Fast Gradient Sign Method: one step of size ε along the sign of the loss gradient.

    Untargeted: raise the loss of the true label. Targeted (``target`` = a class): lower the
    loss of that class. Every pixel moves by exactly ε, unless clipping to [0, 1] stops it
    or its gradient is exactly zero.
    """
    from captum.robust import FGSM

    eps = check_eps(eps)
    images = check_inputs(model, images, labels)
    _check_target(model, target)

    def perturb(working, clean, classes, targeted):
        attack = FGSM(working, loss_func=_per_image_loss, lower_bound=0.0, upper_bound=1.0)
        attack.zero_thresh = 0.0  # textbook FGSM: only an exactly-zero gradient leaves a pixel alone
        return attack.perturb(clean, epsilon=eps, target=classes, targeted=targeted)

    run = _run(model, images, labels, perturb, target, batch_size, progress, f"FGSM ε={eps:g}")
    return _result("fgsm", eps, 1, eps, target, images, labels, run)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    target: int | None = None,
    random_start: bool = False,
    batch_size: int = 250,
    progress: Progress | None = None,
) -> AttackResult:
    """Projected Gradient Descent (Madry et al.): ``steps`` FGSM steps, each projected back
    into the L∞ ball of radius ε and into [0, 1]. Default step size 2.5·ε/steps, the paper's choice.
    """
    from captum.robust import PGD

    eps = check_eps(eps)
    images = check_inputs(model, images, labels)
    _check_target(model, target)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConvlensError(f"steps must be a positive integer, got {steps!r}", parameter="steps")
    if steps > MAX_STEPS:
        raise ConvlensError(f"steps must be at most {MAX_STEPS:,}, got {steps:,}", parameter="steps")
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ConvlensError(
            f"step_size must be a non-negative number, got {step_size}", parameter="step_size"
        )

    def perturb(working, clean, classes, targeted):
        attack = PGD(working, loss_func=_per_image_loss, lower_bound=0.0, upper_bound=1.0)
        attack.fgsm.zero_thresh = 0.0
        return attack.perturb(
            clean,
            radius=eps,
            step_size=step_size,
            step_num=steps,
            target=classes,
            targeted=targeted,
            random_start=random_start,
        )

    # Captum draws the random start from the global generator: seed it, without disturbing the caller's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        run = _run(model, images, labels, perturb, target, batch_size, progress, f"PGD-{steps} ε={eps:g}")
    return _result("pgd", eps, steps, step_size, target, images, labels, run)


def attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str = "fgsm",
    eps: float = 0.1,
    steps: int = 10,
    target: int | None = None,
    progress: Progress | None = None,
) -> AttackResult:
    """Run the registered attack ``method`` (fgsm, pgd, ...) — what the CLI and the web page call.

    Options an attack does not take (``steps`` for FGSM, ``progress`` for a plugin) are left out;
    ``progress(images done, images, what)`` follows the batches.
    """
    entry = ATTACKS.get(method)
    result = entry.call(model, images, labels, eps=eps, steps=steps, target=target, progress=progress)
    if progress is not None and not entry.accepts("progress"):
        progress(images.shape[0], images.shape[0], entry.label)
    return result


ATTACKS.register("fgsm", fgsm, label="FGSM", help="Fast Gradient Sign Method: one step of size ε")
ATTACKS.register(
    "pgd", pgd, label="PGD", help="Projected Gradient Descent: iterated FGSM steps, kept within ε"
)
