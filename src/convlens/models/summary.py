"""Parameter counts and FLOPs per image, for `convlens models` and the model card."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Floating-point operations of one forward pass (a multiply-add counts 2), via torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, *in_shape))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
