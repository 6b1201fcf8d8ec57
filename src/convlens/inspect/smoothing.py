"""SmoothGrad (Smilkov et al. 2017): saliency averaged over noisy copies of the image.

A ReLU network's gradient jumps from pixel to pixel, so one saliency map is speckled; the mean
of |gradient| over copies with Gaussian noise added keeps what is stable nearby. The noise is
drawn from a seeded generator on the CPU, so a map is the same on any device.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.inspect._stages import eval_mode
from convlens.inspect.attribution_base import (
    Attribution,
    check_count,
    check_number,
    chunk_size,
    input_attribution,
    prepare,
)

SMOOTHGRAD_SAMPLES = 32  # noisy copies; Smilkov et al. see the map settle by about 50
SMOOTHGRAD_NOISE = 0.15  # noise sigma as a share of the image's range (their 10-20%)


def smoothgrad_noise(
    image: torch.Tensor, samples: int = SMOOTHGRAD_SAMPLES, noise: float = SMOOTHGRAD_NOISE, seed: int = 0
) -> torch.Tensor:
    """The noise SmoothGrad adds to ``image`` (1, C, H, W): (samples, C, H, W), Gaussian with sigma
    ``noise`` times the image's range (max - min; the pixel range 1 for a flat image)."""
    check_count("samples", samples)
    check_number("noise", noise, 0.0)
    spread = float(image.max() - image.min()) or 1.0
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn((samples, *image.shape[1:]), generator=generator)  # (S, C, H, W) on the CPU
    return (draws * (noise * spread)).to(image)


def smoothgrad(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    samples: int = SMOOTHGRAD_SAMPLES,
    noise: float = SMOOTHGRAD_NOISE,
    seed: int = 0,
) -> Attribution:
    """The mean |gradient| of the target's logit over ``samples`` copies of the image with
    Gaussian noise (sigma = ``noise`` x the image's range, drawn from ``seed``).

    ``raw`` (C, H, W) is that mean; the map sums it over channels, as saliency's does.
    """
    with eval_mode(model):
        batch, target, probability = prepare(model, image, target)
        offsets = smoothgrad_noise(batch.detach(), samples, noise, seed)  # (S, C, H, W)
        total = torch.zeros_like(batch[0])  # (C, H, W)
        step = chunk_size(batch[0].numel())
        for start in range(0, samples, step):
            noisy = (batch.detach() + offsets[start : start + step]).requires_grad_()  # (s, C, H, W)
            with torch.enable_grad():
                scores = model(noisy)[:, target]  # (s,): copies are independent in eval mode
                (gradient,) = torch.autograd.grad(scores.sum(), noisy)
            total += gradient.abs().sum(dim=0)
    return input_attribution("smoothgrad", (total / samples).detach().cpu(), target, probability)
