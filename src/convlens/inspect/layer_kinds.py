"""One table of layer kinds: what each kind of stage is, for every part of convlens that asks.

A kind is registered once, by module class, and declares everything the inside view needs:

- ``role``: one word for what it does (``convolution``, ``relu``, ``max_pool``, ...); the
  explorer picks its explanation by role, so a face needs no torch class names;
- ``arithmetic``: how one output cell is recomputed by hand (``convlens.inspect.cells``);
- ``geometry``: how it moves the receptive field (``convlens.inspect.geometry``);
- ``mixes_channels``: whether an output channel reads every input channel (a function of the
  module where it depends on it: a depthwise convolution does not);
- ``rectifies``: whether its output is rectified (ReLU): Grad-CAM's default stage is the last
  rectified one, where negative evidence has been thrown away;
- ``grad_cam_target``: whether Grad-CAM may look at its output map, and whether the default
  stage may move past it (a stage that keeps positions cell by cell: ReLU, pooling, BatchNorm);
- ``hyperparameters``: the numbers the model card quotes (kernel, stride, filters, ...);
- ``affine``: whether its output is an affine function of its input when the model predicts
  (eval mode): feature visualization of a stage with only affine kinds before it has an exact,
  closed-form optimum instead of a gradient search.

Cell arithmetic, receptive fields, layer facts, attribution and the explorer's network view all
read this table, so a new kind (an activation, say) is one ``register_layer_kind`` call; the
transposed convolution and upsampling of segmentation decoders are ``convlens.inspect.upsampling``. A module the table does not know keeps one rule everywhere: it is
a ``block`` if it has weights (else ``other``), its facts are those of its parts, the receptive
field walks its children, and it has no cell arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect.cells import (
    Arithmetic,
    adaptive_avg_pool_cell,
    avg_pool_cell,
    batchnorm_cell,
    conv_cell,
    flatten_cell,
    linear_cell,
    max_pool_cell,
    normalize_cell,
    relu_cell,
)
from convlens.inspect.geometry import (
    Geometry,
    conv_padding,
    conv_window,
    flattens,
    pool_geometry,
    pool_window,
    same_cells,
    whole_input,
)
from convlens.inspect.upsampling import LAYER_KINDS as UPSAMPLING_KINDS
from convlens.models._registry import Normalize
from convlens.models.calls import CALLS, register_call, unregister_call
from convlens.registry import Registry

# how a kind advances the receptive-field walk; None: the rule for modules the table does not know
GeometryStep = Callable[[nn.Module, Geometry], None]

# roles of stages that are not one registered kind
SOFTMAX_ROLE, BLOCK_ROLE, OTHER_ROLE = "softmax", "block", "other"


@dataclass(frozen=True)
class LayerKind:
    """Everything convlens needs to know about one kind of layer (see the module's docstring)."""

    module_type: type[nn.Module]
    role: str
    arithmetic: Arithmetic | None = None  # None: the stage has no cell arithmetic
    geometry: GeometryStep | None = None
    mixes_channels: bool | Callable[[nn.Module], bool] = False
    rectifies: bool = False
    grad_cam_target: bool = False
    hyperparameters: Callable[[nn.Module], dict] | None = None  # LayerFacts fields, e.g. kernel
    affine: bool = False  # an affine function of its input in eval mode (conv, linear, BatchNorm, ...)
    calls: tuple = ()  # functions (or tensor-method names) a traced graph runs as this kind's module

    def describe(self) -> dict:
        """JSON-ready facts for ``convlens methods`` and ``GET /api/registry`` (``mixes_channels``
        is null where it depends on the module, as for a convolution's groups)."""
        mixes = self.mixes_channels
        return {
            "role": self.role,
            "has_arithmetic": self.arithmetic is not None,
            "mixes_channels": mixes if isinstance(mixes, bool) else None,
            "rectifies": self.rectifies,
            "grad_cam_target": self.grad_cam_target,
            "affine": self.affine,
        }

    def mixes(self, module: nn.Module) -> bool:
        """Whether this module's output channels each read every input channel."""
        declared = self.mixes_channels
        return bool(declared(module) if callable(declared) else declared)


# name → LayerKind, on the one Registry every extension point uses (help, listing, unregister)
LAYER_KINDS = Registry("layer kind")


def register_layer_kind(
    module_type: type[nn.Module],
    *,
    role: str,
    arithmetic: Arithmetic | None = None,
    geometry: GeometryStep | None = None,
    mixes_channels: bool | Callable[[nn.Module], bool] = False,
    rectifies: bool = False,
    grad_cam_target: bool = False,
    hyperparameters: Callable[[nn.Module], dict] | None = None,
    affine: bool = False,
    name: str | None = None,
    help: str | None = None,
    calls: dict[Callable | str, Callable[..., nn.Module | None]] | None = None,
) -> LayerKind:
    """Declare the kind of every module of class ``module_type`` (and of its subclasses that have
    no kind of their own). ``name`` defaults to the class name (give one when two classes share
    it); ``mixes_channels`` may be a function of the module. ``calls`` keys the kind by function
    too: in a traced model (``convlens.models.traced``) a call of each function (or tensor
    method, by name) becomes the module its builder returns from the call's arguments, e.g.
    ``{torch.sigmoid: lambda input: Sigmoid()}``. Returns the kind."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConvlensError(
            f"module_type must be a torch.nn.Module subclass, got {module_type!r}", parameter="module_type"
        )
    if not isinstance(role, str) or not role.isidentifier() or role in (SOFTMAX_ROLE, BLOCK_ROLE, OTHER_ROLE):
        raise ConvlensError(
            f"role must be one word such as 'activation' (not softmax, block or other), got {role!r}",
            parameter="role",
        )
    for name_, value in (
        ("arithmetic", arithmetic),
        ("geometry", geometry),
        ("hyperparameters", hyperparameters),
    ):
        if value is not None and not callable(value):
            raise ConvlensError(f"{name_} must be a function or None, got {value!r}", parameter=name_)
    for name_, value in (
        ("mixes_channels", mixes_channels),
        ("rectifies", rectifies),
        ("grad_cam_target", grad_cam_target),
        ("affine", affine),
    ):
        if not isinstance(value, bool) and not (name_ == "mixes_channels" and callable(value)):
            raise ConvlensError(f"{name_} must be true or false, got {value!r}", parameter=name_)
    if calls is not None and not (isinstance(calls, dict) and all(callable(b) for b in calls.values())):
        raise ConvlensError(f"calls must map functions to module builders, got {calls!r}", parameter="calls")
    taken = [getattr(target, "__name__", target) for target in calls or () if target in CALLS]
    if taken:
        raise ConvlensError(f"calls: {', '.join(map(str, taken))} already run as a module", parameter="calls")
    if _registered(module_type) is not None:
        raise ConvlensError(
            f"module_type {module_type.__name__} already has a layer kind", parameter="module_type"
        )
    kind = LayerKind(
        module_type,
        role,
        arithmetic,
        geometry,
        mixes_channels,
        rectifies,
        grad_cam_target,
        hyperparameters,
        affine,
        tuple(calls or ()),
    )
    for target, build in (calls or {}).items():
        register_call(target, build)
    summary = help or ((module_type.__doc__ or "").strip().splitlines() or [role])[0]
    LAYER_KINDS.register(name or module_type.__name__, kind, label=role, help=summary)
    return kind


def unregister_layer_kind(module_type: type[nn.Module]) -> None:
    """Forget ``module_type``'s kind (a test that registers a toy kind cleans up with this)."""
    for entry in LAYER_KINDS:
        if entry.function.module_type is module_type:
            for target in entry.function.calls:
                unregister_call(target)
            LAYER_KINDS.unregister(entry.name)


def _registered(module_type: type) -> LayerKind | None:
    return next((e.function for e in LAYER_KINDS if e.function.module_type is module_type), None)


def layer_kind(module: nn.Module) -> LayerKind | None:
    """The kind of ``module``: its class's, else the nearest base class's; None if the table
    does not know it (a block of layers, or a layer convlens has no entry for)."""
    for cls in type(module).__mro__:
        found = _registered(cls)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class StageTraits:
    """What a face needs to know about one stage, decided by the table (``stage_traits``)."""

    role: str
    mixes_channels: bool  # each output channel reads every input channel
    rectifies: bool  # the stage is, or contains, a rectifier
    grad_cam_target: bool  # Grad-CAM may look at this stage's output map


def _any_part(module: nn.Module, fact: Callable[[LayerKind, nn.Module], bool]) -> bool:
    """``fact`` of a known module; for an unknown one (a block), whether any of its parts has it."""
    kind = layer_kind(module)
    if kind is not None:
        return fact(kind, module)
    return any(_any_part(child, fact) for child in module.children())


def mixes_channels(module: nn.Module | None) -> bool:
    """Whether each output channel reads every input channel (a convolution, a block with one, a
    linear layer) rather than only its own (ReLU, pooling, BatchNorm, a depthwise convolution).
    ``None`` is the softmax, which reads every logit."""
    return True if module is None else _any_part(module, LayerKind.mixes)


def rectifies(module: nn.Module) -> bool:
    """Whether the stage is, or contains, a rectifier (a residual block ending in a ReLU)."""
    return _any_part(module, lambda kind, _: kind.rectifies)


def stage_role(module: nn.Module | None) -> str:
    """The role of a stage's module; ``None`` is the softmax over the logits."""
    if module is None:
        return SOFTMAX_ROLE
    kind = layer_kind(module)
    if kind is not None:
        return kind.role
    return BLOCK_ROLE if any(True for _ in module.parameters()) else OTHER_ROLE


def stage_traits(module: nn.Module | None, output_shape: tuple[int, ...]) -> StageTraits:
    """Role and flags of one stage whose output (without the batch) has ``output_shape``.

    Grad-CAM may target a stage with a feature map (C, H, W) whose kind allows it; a module the
    table does not know is allowed too (Grad-CAM works on any map; only its default stage stays
    on known kinds, ``convlens.inspect.attribution.grad_cam_stage``).
    """
    if module is None:
        return StageTraits(SOFTMAX_ROLE, True, False, False)
    kind = layer_kind(module)
    spatial = len(output_shape) == 3
    return StageTraits(
        role=stage_role(module),
        mixes_channels=mixes_channels(module),
        rectifies=rectifies(module),
        grad_cam_target=spatial and (kind is None or kind.grad_cam_target),
    )


# --- the built-in kinds -----------------------------------------------------------------------


def _conv_groups_mix(module: nn.Conv2d) -> bool:
    return module.groups == 1 or module.groups < module.in_channels  # depthwise: groups == channels


def _conv_facts(module: nn.Conv2d) -> dict:
    kernel = tuple(int(k) for k in module.kernel_size)
    return {
        "kernel": kernel,
        "stride": tuple(int(s) for s in module.stride),
        "padding": conv_padding(module),
        "filters": module.out_channels,
        "weights_per_filter": module.in_channels // module.groups * kernel[0] * kernel[1],
        "bias": module.bias is not None,
    }


def _pool_facts(module: nn.Module) -> dict:
    kernel, stride, (pad_rows, pad_cols), _ = pool_geometry(module)
    return {"kernel": kernel, "stride": stride, "padding": (pad_rows, pad_rows, pad_cols, pad_cols)}


def _linear_facts(module: nn.Linear) -> dict:
    return {
        "filters": module.out_features,
        "weights_per_filter": module.in_features,
        "bias": module.bias is not None,
    }


register_layer_kind(Normalize, role="normalize", arithmetic=normalize_cell, geometry=same_cells, affine=True)
register_layer_kind(
    nn.Conv2d,
    role="convolution",
    help="a 2-D convolution: each output cell is one kernel times the window under it, summed over the input channels, plus a bias",
    arithmetic=conv_cell,
    geometry=conv_window,
    mixes_channels=_conv_groups_mix,
    grad_cam_target=True,
    hyperparameters=_conv_facts,
    affine=True,
)
register_layer_kind(
    nn.BatchNorm2d,
    role="batchnorm",
    help="batch normalization: each channel shifted and scaled by its running mean and variance, then by learned gamma and beta",
    arithmetic=batchnorm_cell,
    geometry=same_cells,
    grad_cam_target=True,
    affine=True,
)
# after a flatten, BatchNorm1d keeps the walk's rule for layers with weights: it sees every unit
register_layer_kind(
    nn.BatchNorm1d,
    role="batchnorm",
    arithmetic=batchnorm_cell,
    affine=True,
    help="batch normalization of units (after a flatten): shifted and scaled like BatchNorm2d's channels",
)
register_layer_kind(
    nn.ReLU,
    role="relu",
    help="rectifier: max(0, x) cell by cell; negative evidence becomes 0",
    arithmetic=relu_cell,
    geometry=same_cells,
    rectifies=True,
    grad_cam_target=True,
)
register_layer_kind(
    nn.MaxPool2d,
    role="max_pool",
    help="max pooling: the largest value in each window, channel by channel",
    arithmetic=max_pool_cell,
    geometry=pool_window,
    grad_cam_target=True,
    hyperparameters=_pool_facts,
)
register_layer_kind(
    nn.AvgPool2d,
    role="avg_pool",
    help="average pooling: the mean of each window, channel by channel",
    arithmetic=avg_pool_cell,
    geometry=pool_window,
    grad_cam_target=True,
    hyperparameters=_pool_facts,
    affine=True,
)
register_layer_kind(
    nn.AdaptiveAvgPool2d,
    role="global_pool",
    help="adaptive average pooling: the mean of each region of the whole map, channel by channel",
    arithmetic=adaptive_avg_pool_cell,
    geometry=whole_input,
    affine=True,
)
register_layer_kind(
    nn.AdaptiveMaxPool2d,
    role="global_pool",
    geometry=whole_input,
    help="adaptive max pooling: the largest value of each region of the whole map, channel by channel",
)
register_layer_kind(
    nn.Flatten,
    role="flatten",
    arithmetic=flatten_cell,
    geometry=flattens,
    affine=True,
    help="flatten: the maps' cells laid out as one vector of units, channel after channel",
)
register_layer_kind(
    nn.Linear,
    role="fully_connected",
    help="fully connected: each unit a weighted sum of every input unit, plus a bias",
    arithmetic=linear_cell,
    geometry=whole_input,
    mixes_channels=True,
    hyperparameters=_linear_facts,
    affine=True,
)
# they pass values through when the model predicts: Grad-CAM's default may look past them
for _passing, _role, _help in (
    (
        nn.Dropout,
        "dropout",
        "dropout: zeroes random units while training; passes values through when predicting",
    ),
    (
        nn.Dropout2d,
        "dropout",
        "dropout: zeroes random channels while training; passes values through when predicting",
    ),
    (nn.Identity, "identity", "identity: passes values through"),
):
    register_layer_kind(
        _passing, role=_role, geometry=same_cells, grad_cam_target=True, affine=True, help=_help
    )
for _kind in UPSAMPLING_KINDS:  # a segmentation decoder's layers (convlens.inspect.upsampling)
    register_layer_kind(**_kind)
