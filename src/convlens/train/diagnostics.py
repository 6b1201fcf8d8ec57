"""After training: what might be wrong with the model, in sentences a person can act on.

Printed after ``convlens train`` and stored in ``model.json`` (``diagnostics``), so the report
and the explorer's model card show them too. Each finding says what was measured, on which
images, and what to try.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from convlens.data import to_float
from convlens.data.bundle import IGNORE_INDEX

DEAD_SHARE_WARNING = 0.25  # a quarter of a stage's channels dead: worth a warning, not a note
COLLAPSED = 0.99  # a stage whose outputs are 99 % zeros barely passes anything on
IMBALANCE = 3.0  # largest class / smallest class in the training split
OVERFIT_GAP = 0.10  # train accuracy above validation accuracy by 10 points
SAMPLE = 1_000  # images the activation statistics look at


@dataclass
class Diagnostic:
    kind: str  # dead-channels, collapsed-stage, rollback, class-imbalance, overfitting, selection, chance
    severity: str  # "warning" or "note"
    message: str  # what was measured
    action: str  # what to try

    def to_json(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def relu_statistics(model: nn.Module, images: torch.Tensor, batch_size: int = 100) -> dict[str, dict]:
    """Per ReLU stage: how many channels never fire (stay 0) on ``images``, and the share of zeros."""
    stages = [(name, module) for name, module in model.stages() if isinstance(module, nn.ReLU)]
    if not stages or images.shape[0] == 0:
        return {}
    device = next(model.parameters()).device
    fired: dict[str, torch.Tensor] = {}
    zeros = dict.fromkeys((name for name, _ in stages), 0)
    total = dict.fromkeys((name for name, _ in stages), 0)

    def recorder(name: str):
        def hook(module, inputs, output):  # output (B, C, H, W) or (B, F)
            channels = output.transpose(0, 1).reshape(output.shape[1], -1)  # (C, everything else)
            positive = (channels > 0).any(dim=1).cpu()
            fired[name] = positive if name not in fired else fired[name] | positive
            zeros[name] += int((output == 0).sum())
            total[name] += output.numel()

        return hook

    was_training = model.training
    model.eval()
    handles = [module.register_forward_hook(recorder(name)) for name, module in stages]
    try:
        for first in range(0, images.shape[0], batch_size):
            model(to_float(images[first : first + batch_size]).to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {
        name: {
            "channels": int(fired[name].numel()),
            "dead": [int(i) for i in torch.nonzero(~fired[name]).flatten()],
            "zero_share": zeros[name] / max(total[name], 1),
        }
        for name, _ in stages
    }


def diagnose(
    model: nn.Module,
    images: torch.Tensor,
    split_name: str,
    history: list[dict],
    rollbacks: list[dict],
    train_labels: torch.Tensor,
    class_names: list[str],
    selection: dict,
) -> list[Diagnostic]:
    """Every finding about a trained model; ``images`` are held-out images (validation if any)."""
    found: list[Diagnostic] = []
    sample = images[:SAMPLE]
    for stage, stats in relu_statistics(model, sample).items():
        dead, channels = len(stats["dead"]), stats["channels"]
        if stats["zero_share"] >= COLLAPSED:
            found.append(
                Diagnostic(
                    "collapsed-stage",
                    "warning",
                    f"{stage} outputs are {100 * stats['zero_share']:.1f} % zeros on {sample.shape[0]} "
                    f"{split_name} images: the model barely passes anything through this stage, so "
                    "explanations of it mean little",
                    "train again with a lower learning rate or with BatchNorm (model option batchnorm=true)",
                )
            )
        elif dead:
            shown = ", ".join(map(str, stats["dead"][:8])) + (" ..." if dead > 8 else "")
            found.append(
                Diagnostic(
                    "dead-channels",
                    "warning" if dead >= DEAD_SHARE_WARNING * channels else "note",
                    f"{stage}: {dead} of {channels} channels never fire (stay 0) on {sample.shape[0]} "
                    f"{split_name} images (channels {shown})",
                    "dead channels learn nothing; a lower learning rate or BatchNorm usually revives them",
                )
            )
    for event in rollbacks:
        found.append(
            Diagnostic(
                "rollback",
                "warning",
                f"epoch {event['epoch']}: {event['reason']}; rolled back to epoch {event['rolled_back_to']} "
                f"and lowered the peak learning rate to {event['peak_lr']:.3g}",
                "if this happens often, train with a lower learning rate",
            )
        )
    masks = train_labels.ndim == 3  # segmentation: classes are counted in pixels
    values = train_labels.reshape(-1).long()
    if masks:
        values = values[values != IGNORE_INDEX]
    counts = torch.bincount(values, minlength=len(class_names))[: len(class_names)]
    if int(counts.min()) > 0 and float(counts.max()) / float(counts.min()) >= IMBALANCE:
        big, small = int(counts.argmax()), int(counts.argmin())
        unit = "pixels" if masks else "images"
        found.append(
            Diagnostic(
                "class-imbalance",
                "note",
                f"class imbalance: {class_names[big]!r} has {int(counts[big])} training {unit}, "
                f"{class_names[small]!r} {int(counts[small])} ({float(counts[big] / counts[small]):.1f}x)",
                "read the per-class IoU, not only the pixel accuracy; the loss weights the small classes up"
                if masks
                else "read the per-class recall, not only the accuracy; add images of the small classes if you can",
            )
        )
    if history:
        last = history[-1]
        held_out = last.get("val_accuracy", last.get("test_accuracy"))
        if held_out is not None and last["train_accuracy"] - held_out > OVERFIT_GAP:
            found.append(
                Diagnostic(
                    "overfitting",
                    "warning",
                    f"train accuracy {100 * last['train_accuracy']:.1f} % vs {100 * held_out:.1f} % on "
                    f"{split_name} images: the model memorizes its training images",
                    "more images or augmentation help; so does a smaller model or fewer epochs",
                )
            )
        # (pixel accuracy has no such chance level: the background alone may cover 90 % of pixels)
        if not masks and held_out is not None and held_out <= 1 / len(class_names) + 0.05:
            found.append(
                Diagnostic(
                    "chance",
                    "warning",
                    f"{split_name} accuracy {100 * held_out:.1f} % is close to guessing "
                    f"({100 / len(class_names):.1f} % for {len(class_names)} classes)",
                    "check that the class folders really differ; try a lower learning rate or more epochs",
                )
            )
    if selection.get("worse_last"):
        found.append(
            Diagnostic("selection", "warning", selection["reason"], "model.* holds the better epoch")
        )
    return found
