"""One channel of one stage, seen from every side: the neuron panel's data.

``neuron(model, stage, channel, image, test_images)`` gathers what a learner asks of a unit:

- what it is: its stage's layer kind, and whether it is dead (never above 0 on the test images
  although its stage is rectified);
- how it computes: its kernel (the convolution's weights for this output channel, and the bias;
  for a ReLU, BatchNorm or pooling stage, those of the convolution feeding it), its feature map
  on the image and the arithmetic of its strongest cell (``cell_arithmetic``);
- what it responds to: the optimum of its centre unit (``unit_optimum``), the regularised
  visualization of the whole channel (``regularised_visualization``) beside the best test image's
  activation, and the top and bottom test-image patches, cropped to the receptive field of their
  strongest cell (``neuron_patches``);
- where it matters: ablation and Grad-CAM's share (``neuron_effects``);
- what feeds it: the channels of the previous stage with the most kernel weight.

Every part comes from one core function; the faces (CLI, report, explorer) only lay it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect._stages import (
    SOFTMAX,
    as_batch,
    eval_mode,
    find_stage,
    is_spatial_stage,
    model_stages,
    stage_inputs,
)
from convlens.inspect.arithmetic import cell_arithmetic
from convlens.inspect.cells import Cell
from convlens.inspect.featureviz import RegularisedVisualization, regularised_visualization
from convlens.inspect.filters import conv_filters
from convlens.inspect.hooks import StageRecorder
from convlens.inspect.layer_kinds import layer_kind, mixes_channels, rectifies, stage_role
from convlens.inspect.neuron_effects import (
    Ablation,
    GradCamShare,
    SampleAblation,
    ablation,
    grad_cam_share,
    sample_ablation,
)
from convlens.inspect.neuron_patches import Patch, StagePeaks, extreme_patches, stage_peaks
from convlens.inspect.receptive_field import ReceptiveField, receptive_fields
from convlens.inspect.unit_optimum import UnitOptimum, unit_optimum
from convlens.models.traced import INPUT

TOP_PATCHES = 9  # a 3 x 3 grid, as Zeiler & Fergus show them
FEEDERS = 6  # previous-stage channels listed as feeding the unit
FEEDER_MEASURE = "sum of |kernel weight| over the window"
# stages that keep each channel's values apart and never make a value negative: a map after a
# ReLU stays rectified through them
_SIGN_KEEPING_ROLES = ("max_pool", "avg_pool", "global_pool")


@dataclass
class NeuronKernel:
    """The convolution weights that compute the channel."""

    stage: str  # the convolution's stage ("conv2", or "block1.conv2" inside a composite stage)
    weight: torch.Tensor  # (C_in / groups, kH, kW)
    bias: float | None
    input_stage: str | None  # the stage whose channels it reads (None: inside a composite stage)
    input_channels: list[int]  # which channels of ``input_stage`` weight[i] reads


@dataclass
class Feeder:
    """A channel of the previous stage and how strongly the kernel reads it."""

    stage: str
    channel: int
    strength: float  # sum of |weight| of its kernel slice (FEEDER_MEASURE)
    weight_sum: float  # sum of the signed weights: > 0 mostly excites, < 0 mostly inhibits


@dataclass
class Neuron:
    """Everything the neuron panel shows of ``channel`` of ``stage`` (see the module docstring)."""

    stage: str
    channel: int
    kind: str  # the stage's role in the layer-kind table: convolution, relu, max_pool, ...
    channels: int  # how many channels the stage has
    map_size: tuple[int, int]  # (h, w) of the stage's feature map
    dead: bool | None  # never above 0 on the test images; None: not rectified, or no test images
    kernel: NeuronKernel | None  # None: no convolution computes this channel alone
    feeders: list[Feeder]
    feature_map: torch.Tensor  # (h, w) on the image
    strongest: tuple[int, int]  # (row, col) of the map's largest value on the image
    cell: Cell  # the arithmetic of that cell
    receptive_field: tuple[int, int, int, int]  # input rows top..bottom, cols left..right it sees
    ablation: Ablation | None  # None: a per-pixel (segmentation) model
    grad_cam: GradCamShare | None
    image_count: int = 0  # test images scanned (0: none given)
    top_patches: list[Patch] = field(default_factory=list)
    bottom_patches: list[Patch] = field(default_factory=list)
    sample_ablation: SampleAblation | None = None
    optimum: UnitOptimum | None = None  # what the centre unit responds to most, when asked for
    visualization: RegularisedVisualization | None = None  # the whole channel's legible picture, when asked

    @property
    def dead_label(self) -> str | None:
        """What a face shows for a dead channel (None for a live one)."""
        if not self.dead:
            return None
        return f"dead: never above 0 on the {self.image_count} test images"


def neuron_stages(model: nn.Module) -> list[str]:
    """The stages whose channels have a panel: those with a feature map, after the input's
    normalization (a flat stage's units and the softmax's classes have no map)."""
    return [name for name, shape in _map_shapes(model).items() if shape is not None]


def _map_shapes(model: nn.Module) -> dict[str, tuple[int, int, int] | None]:
    """Each stage's feature-map shape (C, h, w), or None where it has none to show."""
    from convlens.inspect.receptive_field import stage_output_shapes

    _, stages, _ = stage_output_shapes(model, "neurons")
    return {
        name: shape if len(shape) == 3 and stage_role(module) != "normalize" else None
        for name, module, shape in stages
    }


def check_neuron_stage(model: nn.Module, stage: str) -> tuple[int, int, int]:
    """The stage's map shape (C, h, w) after checking that ``stage`` has channels with a panel; a
    ConvlensError naming the parameter and its valid values otherwise."""
    if not isinstance(stage, str):
        raise ConvlensError(f"stage must be a stage name, got {type(stage).__name__}", parameter="stage")
    shapes = _map_shapes(model)
    valid = ", ".join(name for name, shape in shapes.items() if shape is not None) or "none"
    if stage not in shapes:
        names = ", ".join([*shapes, SOFTMAX])
        raise ConvlensError(f"unknown stage {stage!r}; this model's stages are: {names}", parameter="stage")
    if shapes[stage] is None:
        raise ConvlensError(
            f"stage {stage!r} has no channels to visualize; choose one of: {valid}", parameter="stage"
        )
    return shapes[stage]


def check_neuron(model: nn.Module, stage: str, channel: int) -> tuple[int, int, int]:
    """The stage's map shape (C, h, w) after checking ``stage`` and ``channel``; a ConvlensError
    naming the parameter and its valid values otherwise."""
    shape = check_neuron_stage(model, stage)
    count = shape[0]
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < count:
        raise ConvlensError(
            f"channel must be 0..{count - 1} for stage {stage!r}, got {channel!r}", parameter="channel"
        )
    return shape


def previous_stage(model: nn.Module, stage: str) -> str | None:
    """The one stage ``stage`` reads: its graph input, or the stage before it in a chain. None for
    the first stage, and for a merge (an addition or concatenation reads several)."""
    reads = stage_inputs(model)
    if reads is not None:
        sources = reads.get(stage) or ()
        return sources[0] if len(sources) == 1 and sources[0] != INPUT else None
    names = [name for name, _ in model_stages(model)]
    position = names.index(stage)
    return names[position - 1] if position > 0 else None


def source_convolution(model: nn.Module, stage: str) -> str | None:
    """The stage whose convolution computes ``stage``'s channels: the stage itself if it is (or
    ends in) one, else the nearest one back through stages that keep channels apart (ReLU,
    BatchNorm, pooling). None if a merge or a channel-mixing layer without a convolution comes first."""
    name: str | None = stage
    while name is not None:
        module = find_stage(model, name)
        if is_spatial_stage(module):
            return name
        if mixes_channels(module) or len((stage_inputs(model) or {}).get(name) or ()) > 1:
            return None
        name = previous_stage(model, name)
    return None


def is_rectified(model: nn.Module, stage: str) -> bool:
    """Whether ``stage``'s values cannot be negative: it rectifies, or it pools a rectified map."""
    name: str | None = stage
    while name is not None:
        module = find_stage(model, name)
        if rectifies(module):
            return True
        kind = layer_kind(module)
        if kind is None or kind.role not in _SIGN_KEEPING_ROLES:
            return False
        name = previous_stage(model, name)
    return False


def neuron_kernel(model: nn.Module, stage: str, channel: int) -> NeuronKernel | None:
    """The weights and bias of the convolution that computes ``channel`` of ``stage`` (None where
    no single convolution does, e.g. after an addition)."""
    source = source_convolution(model, stage)
    if source is None:
        return None
    conv = conv_filters(model, source)[-1]  # a composite stage: its last convolution makes the output
    out_channels = conv.weight.shape[0]
    if channel >= out_channels:
        return None
    per_group = conv.weight.shape[1]
    group = channel // (out_channels // conv.groups)
    own_conv = conv.stage == source  # the stage is the convolution: its input is the previous stage
    return NeuronKernel(
        stage=conv.stage,
        weight=conv.weight[channel].clone(),
        bias=float(conv.bias[channel]) if conv.bias is not None else None,
        input_stage=(previous_stage(model, source) or INPUT) if own_conv else None,
        input_channels=list(range(group * per_group, (group + 1) * per_group)),
    )


def feeders(kernel: NeuronKernel | None, count: int = FEEDERS) -> list[Feeder]:
    """The ``count`` input channels with the most kernel weight (FEEDER_MEASURE), strongest first."""
    if kernel is None or kernel.input_stage is None:
        return []
    weight = kernel.weight.double()  # (C_in / groups, kH, kW)
    strength = weight.abs().sum(dim=(1, 2))
    signed = weight.sum(dim=(1, 2))
    order = strength.argsort(descending=True)[:count].tolist()
    return [
        Feeder(kernel.input_stage, kernel.input_channels[i], float(strength[i]), float(signed[i]))
        for i in order
    ]


def _feature_map(model: nn.Module, image: torch.Tensor, stage: str, channel: int) -> torch.Tensor:
    batch, _ = as_batch(model, image)
    if batch.shape[0] != 1:
        raise ConvlensError(f"image: a neuron is shown on one image, got a batch of {batch.shape[0]}")
    with eval_mode(model), torch.no_grad(), StageRecorder(model, [stage]) as recorder:
        model(batch)
    return recorder.outputs[stage][0, channel].cpu()  # (h, w)


def _field(model: nn.Module, stage: str) -> ReceptiveField | None:
    """The stage's receptive field; None for a model seen through hooks (no graph to walk)."""
    try:
        return next(f for f in receptive_fields(model) if f.stage == stage)
    except ConvlensError:
        return None


def neuron(
    model: nn.Module,
    stage: str,
    channel: int,
    image: torch.Tensor,
    test_images: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    *,
    k: int = TOP_PATCHES,
    peaks: StagePeaks | None = None,
    optimum: bool = False,
    optimum_steps: int = 200,
    visualization: bool = False,
    visualization_steps: int = 256,
) -> Neuron:
    """``channel`` of ``stage`` on ``image`` (C, H, W): kernel, feature map, strongest cell's
    arithmetic, feeders, ablation and Grad-CAM share; with ``test_images`` (N, C, H, W) also the
    top and bottom ``k`` patches, whether it is dead and the ablation over them (accuracy with
    ``test_labels``). ``peaks``: a ``stage_peaks`` scan of ``test_images`` already made (the
    explorer keeps one per stage). ``optimum``: add what the channel's centre unit responds to
    most (``unit_optimum``: exact for a stage affine in the pixels, else a gradient search that
    starts from the best test image too, ``optimum_steps`` long), the slowest part, so off unless
    asked for. ``visualization``: add the regularised visualization of the whole channel
    (``regularised_visualization``, ``visualization_steps`` long, with the best of ``test_images``
    beside it), as slow and off for the same reason."""
    count, height, width = check_neuron(model, stage, channel)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConvlensError(f"k must be a whole number >= 0, got {k!r}", parameter="k")
    for name, steps in (("optimum_steps", optimum_steps), ("visualization_steps", visualization_steps)):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConvlensError(f"{name} must be a whole number >= 1, got {steps!r}", parameter=name)
    feature_map = _feature_map(model, image, stage, channel)
    strongest = divmod(int(feature_map.flatten().argmax()), width)
    receptive = _field(model, stage)
    image_size = tuple(as_batch(model, image)[0].shape[-2:])
    region = (
        receptive.region(*strongest, image_size)
        if receptive is not None
        else (0, image_size[0] - 1, 0, image_size[1] - 1)
    )
    kernel = neuron_kernel(model, stage, channel)
    found = Neuron(
        stage=stage,
        channel=channel,
        kind=stage_role(find_stage(model, stage)),
        channels=count,
        map_size=(height, width),
        dead=None,
        kernel=kernel,
        feeders=feeders(kernel),
        feature_map=feature_map,
        strongest=strongest,
        cell=cell_arithmetic(model, image, stage, channel, *strongest),
        receptive_field=region,
        ablation=ablation(model, stage, channel, image),
        grad_cam=grad_cam_share(model, stage, channel, image),
    )
    if test_images is not None:
        if peaks is None:
            peaks = stage_peaks(model, test_images, stage)
        elif peaks.stage != stage or peaks.image_count != test_images.shape[0]:
            raise ConvlensError(
                f"peaks: a scan of stage {peaks.stage!r} over {peaks.image_count} images, "
                f"not of {stage!r} over these {test_images.shape[0]}",
                parameter="peaks",
            )
        found.image_count = peaks.image_count
        found.top_patches = extreme_patches(test_images, peaks, receptive, channel, k, largest=True)
        found.bottom_patches = extreme_patches(test_images, peaks, receptive, channel, k, largest=False)
        if is_rectified(model, stage):
            found.dead = bool(peaks.values[:, channel].max() <= 0)
        found.sample_ablation = sample_ablation(model, stage, channel, test_images, test_labels)
    if optimum:
        found.optimum = unit_optimum(model, stage, channel, images=test_images, steps=optimum_steps)
    if visualization:
        found.visualization = regularised_visualization(
            model, stage, channel, images=test_images, steps=visualization_steps
        )
    return found
