"""Families laid out as torchvision lays them out, so a torchvision checkpoint loads key for key.

A practitioner's fine-tuned ResNet or MobileNet arrives as a ``state_dict`` whose keys are
torchvision's module paths (``layer1.0.conv1.weight``, ``features.3.conv.1.0.weight``). The
families in ``torchvision_resnet`` and ``torchvision_mobilenet`` build exactly that module tree
under the ``StagedModel``'s ``body``, after convlens' own ``normalize`` stage, so loading is a
prefix: torchvision key ``K`` is convlens key ``body.K``. Nothing from torchvision is imported
(its wheels do not install beside the pinned CPU torch) and nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.models._registry import StagedModel

PREFIX = "body."  # where StagedModel keeps its stages: torchvision key K is body.K here
# registered names whose body has torchvision's key names → the module path of their classifier
# layer (what holds one row per class, so a class count that does not fit is named as such)
TORCHVISION_FAMILIES: dict[str, str] = {}


class BlockStages(StagedModel):
    """A StagedModel whose containers are opened into their blocks when a learner points at stages.

    torchvision groups blocks in ``nn.Sequential`` containers (``layer1`` holds two residual
    blocks, ``features`` nineteen). The module tree keeps those containers, so the weights keep
    torchvision's names, while ``stages()`` lists each block on its own (``layer1.0``,
    ``features.3``): the unit a learner asks about, and the name torchvision's feature
    extraction gives it. Running the stages one after another is still the model.
    """

    def __init__(
        self,
        stages: Sequence[tuple[str, nn.Module]],
        in_shape: tuple[int, int, int],
        num_classes: int,
        containers: Sequence[str],
    ) -> None:
        super().__init__(stages, in_shape, num_classes)
        self.containers = tuple(containers)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """normalize, then torchvision's modules with each container opened: conv1, ..., layer1.0, ..., fc."""
        opened = []
        for name, module in self.body.named_children():
            if name in self.containers:
                opened += [(f"{name}.{index}", block) for index, block in module.named_children()]
            else:
                opened.append((name, module))
        return opened


@dataclass
class WeightsReport:
    """What loading a torchvision-named state_dict did: every key sorted into one list."""

    loaded: list[str] = field(default_factory=list)  # torchvision names copied into the model
    missing: list[str] = field(default_factory=list)  # the model's, absent from the file
    unexpected: list[str] = field(default_factory=list)  # the file's, absent from the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    # (key, shape in the file, shape the model expects)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problem(self) -> str:
        """One line naming the first few keys that do not fit (empty when everything fits)."""
        parts = []
        if self.mismatched:
            shown = ", ".join(
                f"{key} is {'x'.join(map(str, got)) or 'a scalar'}, expected {'x'.join(map(str, want)) or 'a scalar'}"
                for key, got, want in self.mismatched[:3]
            )
            parts.append(f"{len(self.mismatched)} of a different shape ({shown})")
        for what, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f", ... ({len(keys) - 4} more)" if len(keys) > 4 else ""
                parts.append(f"{len(keys)} {what} ({', '.join(keys[:4])}{more})")
        return "; ".join(parts)


def own_keys(model: StagedModel) -> dict[str, torch.Tensor]:
    """The model's state_dict under torchvision's names: the body's keys without ``body.``;
    the normalize stage's mean and std have no torchvision counterpart and are left out."""
    return {
        key[len(PREFIX) :]: value
        for key, value in model.state_dict().items()
        if key.startswith(PREFIX) and not key.startswith(PREFIX + "normalize.")
    }


def load_torchvision_weights(
    model: StagedModel, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> WeightsReport:
    """Copy a state_dict with torchvision's key names into ``model``; returns what was loaded.

    ``strict`` (the default) refuses any missing, unexpected or mis-shaped key, naming a few,
    and then copies nothing: a checkpoint that half fits is a different network. With
    ``strict=False`` every key that fits is copied and the report says what was not.
    """
    if not isinstance(model, StagedModel) or model.arguments.get("name") not in TORCHVISION_FAMILIES:
        families = ", ".join(sorted(TORCHVISION_FAMILIES))
        raise ConvlensError(
            f"model: torchvision's key names fit only the families built with them ({families}); "
            f"got {type(model).__name__} {model.arguments.get('name', '') if isinstance(model, StagedModel) else ''}".rstrip(),
            parameter="model",
        )
    expected = own_keys(model)
    report = WeightsReport()
    fitting = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ConvlensError(
                f"state_dict: {key!r} holds a {type(tensor).__name__}, not a tensor", parameter="state_dict"
            )
        if key not in expected:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(expected[key].shape):
            report.mismatched.append((key, tuple(tensor.shape), tuple(expected[key].shape)))
        else:
            fitting[key] = tensor
    report.missing = [key for key in expected if key not in state_dict]
    if strict and not report.complete:
        name = model.arguments.get("name", "this model")
        raise ConvlensError(f"state_dict does not fit {name}: {report.problem()}", parameter="state_dict")
    with torch.no_grad():
        for key, tensor in fitting.items():
            # num_batches_tracked is int64 in torchvision too; the others become the model's float dtype
            expected[key].copy_(tensor.to(dtype=expected[key].dtype))
            report.loaded.append(key)
    return report
