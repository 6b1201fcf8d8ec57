"""How a page colours feature maps: the library's colour limits (``views.plots.colours``) as JSON,
for a whole stage and for each of its channels.

A face only maps values to colours with these limits; choosing them (robust percentiles, the
diverging map for signed stages, the sequential one for magnitudes) happens here, once, so the
explorer's maps read exactly like the CLI's and the report's figures.
"""

from __future__ import annotations

import torch

from convlens.views.plots.colours import MAGNITUDE, Limits, colour_limits, symmetric_limits


def limits_json(limits: Limits) -> dict:
    """``Limits`` as the page reads them: ``low``/``high`` at the ends of the colour bar,
    ``signed`` picks the diverging map (else the sequential one), ``note`` says what was clipped."""
    return {
        "low": limits.vmin,
        "high": limits.vmax,
        "signed": limits.signed,
        "map": "diverging" if limits.signed else "sequential",
        "low_clipped": limits.low_clipped,
        "high_clipped": limits.high_clipped,
        "clipped": limits.clipped,
        "note": limits.note,
    }


def map_limits(values: torch.Tensor, signed: bool | None = None) -> dict:
    """The robust colour limits of one map (an attribution, a set of kernels) as JSON."""
    return limits_json(colour_limits(values, signed=signed))


def bound_limits(bound: float) -> dict:
    """Limits of a known size, ±``bound`` (an attack's ε), as JSON."""
    return limits_json(symmetric_limits(bound))


def neuron_limits(activation: str, plane: torch.Tensor) -> dict:
    """The colour limits of one neuron of the learning playground over the plane: tanh is signed
    in [-1, 1] and sigmoid lies in [0, 1], so those ranges are fixed (maps compare across epochs);
    ReLU and linear neurons are unbounded, so their limits come from their own values (robust;
    a linear neuron's signed)."""
    if activation == "tanh":
        return bound_limits(1.0)
    if activation == "sigmoid":
        return limits_json(Limits(0.0, 1.0, MAGNITUDE))
    return map_limits(plane, signed=activation == "linear")


def stage_limits(output: torch.Tensor) -> dict:
    """``{"limits", "channel_limits"}`` of one stage's output (C, H, W) or (F,).

    ``limits`` is one range for the whole stage, so channels can be compared; ``channel_limits``
    (None for a flat stage) one range per channel, so a weak channel beside a strong one still
    shows its pattern. Every channel keeps the stage's map: a channel that happens to be all
    positive in a signed stage (a convolution) is still drawn diverging around 0.
    """
    whole = colour_limits(output)
    channels = None
    if output.ndim == 3:
        channels = [limits_json(_channel_limits(channel, whole)) for channel in output]
    return {"limits": limits_json(whole), "channel_limits": channels}


def _channel_limits(channel: torch.Tensor, whole: Limits) -> Limits:
    """A channel's own range; a constant channel (a dead ReLU channel: all 0) keeps the stage's,
    so its zeros look like the zeros of every other map instead of a made-up middle colour."""
    own = colour_limits(channel, signed=whole.signed)
    finite = channel[torch.isfinite(channel)]
    constant = finite.numel() == 0 or bool(finite.max() == finite.min())
    return whole if constant else own
