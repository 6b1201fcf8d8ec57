"""Activations: what every stage of a model outputs for an image, read with forward hooks.

Hooks are registered on each ``stages()`` module for one forward pass and always removed
in ``finally``, so an explanation never leaves a model slower or holding tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import SOFTMAX, as_batch, eval_mode, find_stage, kind_name, model_stages


@dataclass
class StageActivation:
    """One stage's output: (C, H, W) / (F,) for a single image, with a leading N for a batch."""

    name: str
    kind: str  # the layer type, e.g. "Conv2d", "ReLU", "MaxPool2d", "Softmax"
    output: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape)


@dataclass
class Activations:
    """Every stage's output for an image (or batch), in forward order, ending with ``softmax``."""

    input: torch.Tensor  # (C, H, W) or (N, C, H, W), pixels in [0, 1]
    stages: list[StageActivation] = field(default_factory=list)
    logits: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (classes,) or (N, classes)
    probabilities: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def __getitem__(self, name: str) -> torch.Tensor:
        for stage in self.stages:
            if stage.name == name:
                return stage.output
        names = ", ".join(s.name for s in self.stages)
        raise ConvlensError(f"unknown stage {name!r}; this model's stages are: {names}")

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    @property
    def prediction(self) -> int | list[int]:
        """The predicted class index (one per image for a batch)."""
        top = self.probabilities.argmax(dim=-1)
        return int(top) if top.ndim == 0 else top.tolist()


class StageRecorder:
    """Forward hooks that keep the output (and with ``with_inputs`` the input) of chosen stages.

    Use as a context manager: the hooks are removed on exit even when the forward pass
    raises. Recorded tensors are copies, so a later in-place layer (``ReLU(inplace=True)``)
    cannot change what was recorded; inputs are copied before the stage runs for the same
    reason. With ``keep_graph`` outputs stay attached to autograd (feature visualization
    differentiates through them) and are not copied.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str] | None = None,
        keep_graph: bool = False,
        with_inputs: bool = False,
    ) -> None:
        self.keep_graph = keep_graph
        self.with_inputs = with_inputs
        stages = model_stages(model)
        chosen = [n for n, _ in stages] if names is None else list(names)
        self.modules = [(name, find_stage(model, name)) for name in chosen]
        self.inputs: dict[str, torch.Tensor] = {}
        self.all_inputs: dict[str, tuple[torch.Tensor, ...]] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> StageRecorder:
        try:
            for name, module in self.modules:
                if self.with_inputs:
                    self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
                self._handles.append(module.register_forward_hook(self._output_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _input_hook(self, name: str):
        def keep(module: nn.Module, inputs: tuple) -> None:
            tensors = tuple(x.detach().clone() for x in inputs if isinstance(x, torch.Tensor))
            self.inputs[name] = tensors[0]
            self.all_inputs[name] = tensors  # an addition or a concatenation reads several

        return keep

    def _output_hook(self, name: str):
        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.outputs[name] = output if self.keep_graph else output.detach().clone()

        return keep


def activations(model: nn.Module, image: torch.Tensor) -> Activations:
    """Every stage's output for one image (C, H, W) or a batch (N, C, H, W), plus the softmax."""
    batch, single = as_batch(model, image)
    with eval_mode(model), torch.no_grad(), StageRecorder(model) as recorder:
        logits = model(batch)  # (N, classes)
    logits, batch = logits.cpu(), batch.cpu()  # explanations are data: hand them out on the CPU
    # over the class axis: (N, classes), or (N, classes, H, W) for a segmentation model's pixels
    probabilities = torch.softmax(logits.float(), dim=1)
    stages = []
    for name, module in recorder.modules:
        output = recorder.outputs[name].cpu()
        stages.append(StageActivation(name, kind_name(module), output[0] if single else output))
    stages.append(StageActivation(SOFTMAX, "Softmax", probabilities[0] if single else probabilities))
    return Activations(
        input=batch[0] if single else batch,
        stages=stages,
        logits=logits[0] if single else logits,
        probabilities=probabilities[0] if single else probabilities,
    )
