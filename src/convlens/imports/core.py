"""The routes that build a convlens model directly, and the run folder every route writes.

``import_weights`` (a state_dict with torchvision's key names plus ``arch``) and ``import_model``
(a module in memory) live here with what every route shares: ``ImportResult`` and ``write_run``,
which commits the model with its preprocessing atomically. The routes that read a file's graph
(``exported``, ``onnx_graph``) and the one that runs the user's factory (``user_code``) build on
these; ``convlens.imports`` re-exports them all (see its docstring for the routes).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError, printable
from convlens.imports.graph_route import graph_of_module
from convlens.imports.preprocessing import (
    Preprocessing,
    resolve_preprocessing,
)
from convlens.imports.weights_file import read_weights


@dataclass
class ImportResult:
    """What an import wrote: the checkpoint, the architecture, and which tensors it loaded."""

    checkpoint: Path  # the run folder's model.json
    arch: str
    preprocessing: Preprocessing
    class_names: list[str]
    loaded: int  # tensors copied from the weights
    sources: dict = field(default_factory=dict)  # {"weights": path} or {"model": class name}

    @property
    def stages(self) -> int:
        """How many stages a graph run's model has (0 for one of convlens's families)."""
        meta = json.loads(self.checkpoint.read_text(encoding="utf-8"))
        return len(meta["model"].get("options", {}).get("graph", {}).get("stages", []))

    def to_json(self) -> dict:
        return {
            "run": str(self.checkpoint.parent),
            "checkpoint": str(self.checkpoint),
            "arch": self.arch,
            "class_names": self.class_names,
            "input_shape": list(self.preprocessing.input_shape),
            "normalization": self.preprocessing.to_json(),
            "loaded_tensors": self.loaded,
            **self.sources,
        }


# --------------------------------------------------------------------------------- the model


def torchvision_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """The torchvision-layout family whose key names are exactly ``state``'s (None: none is)."""
    from convlens.models import create_model
    from convlens.models.torchvision_layout import TORCHVISION_FAMILIES, own_keys

    keys = set(state)
    for name in sorted(TORCHVISION_FAMILIES):
        with torch.device("meta"):  # names only: allocates nothing
            if set(own_keys(create_model(name, (3, 32, 32), 2))) == keys:
                return name
    return None


def _check_head(arch: str, state: Mapping[str, torch.Tensor], classes: int, channels: int) -> None:
    """The class count and input channels the weights were trained for, named as such."""
    from convlens.models.torchvision_layout import TORCHVISION_FAMILIES

    head = state.get(f"{TORCHVISION_FAMILIES[arch]}.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != classes:
        raise ConvlensError(
            f"class_names: {classes} given, but the weights' {TORCHVISION_FAMILIES[arch]} has "
            f"{head.shape[0]} outputs (one per class); give {head.shape[0]} class names",
            parameter="class_names",
        )
    stem = next((v for k, v in state.items() if k in ("conv1.weight", "features.0.0.weight")), None)
    if stem is not None and stem.ndim == 4 and stem.shape[1] != channels:
        raise ConvlensError(
            f"input_shape has {channels} channel(s), but the weights' first convolution takes "
            f"{stem.shape[1]}",
            parameter="input_shape",
        )


def check_arch(arch: str) -> str:
    """``arch`` must name a family with torchvision's key names; the error lists them."""
    from convlens.models.torchvision_layout import TORCHVISION_FAMILIES

    if arch not in TORCHVISION_FAMILIES:
        raise ConvlensError(
            f"arch must be one of {', '.join(sorted(TORCHVISION_FAMILIES))} (torchvision's key names), "
            f"got {printable(repr(arch))}",
            parameter="arch",
        )
    return arch


def build_torchvision(
    arch: str, state: Mapping[str, torch.Tensor], prep: Preprocessing, class_names, source: str
):
    """A convlens model of family ``arch`` holding ``state`` (torchvision key names): (model,
    tensors loaded). ``source`` names the weights in messages: the file, or the model's class."""
    from convlens.models import create_model
    from convlens.models.torchvision_layout import load_torchvision_weights

    check_arch(arch)
    _check_head(arch, state, len(class_names), prep.input_shape[0])  # named as classes and channels
    model = create_model(arch, prep.input_shape, len(class_names), *prep.model_normalization())
    try:
        load_torchvision_weights(model, state)
    except ConvlensError as exc:
        found = torchvision_arch(state)
        hint = f"; the keys are {found}'s (choose with arch)" if found and found != arch else ""
        raise ConvlensError(f"{source}: {str(exc).removeprefix('state_dict ')}{hint}") from None
    # the family's modules under torchvision's names, traced: every convolution, addition and
    # activation a stage of its own, the weights keeping their keys
    body = nn.Sequential(OrderedDict((n, m) for n, m in model.body.named_children() if n != "normalize"))
    built, loaded, _ = graph_of_module(body, prep, class_names, source)
    return built, loaded


def _normalize_keys(model: nn.Module) -> set[str]:
    from convlens.models import Normalize

    return {
        f"{name}.{buffer}" if name else buffer
        for name, module in model.named_modules()
        if isinstance(module, Normalize)
        for buffer, _ in module.named_buffers(recurse=False)
    }


def rebuild_staged(model: nn.Module, prep: Preprocessing, class_names):
    """A StagedModel from ``create_model`` rebuilt from its own arguments with ``prep``'s input
    shape and mean/std: (model, tensors loaded). Its weights must fit unchanged."""
    from convlens.models import create_model

    arguments = dict(model.arguments)
    if arguments.get("name") is None:
        raise ConvlensError(
            "model: this StagedModel was not built by convlens.create_model, so its family is not known; "
            "build it with create_model, or pass a plain nn.Module (it is traced to a graph)",
            parameter="model",
        )
    if len(class_names) != model.num_classes:
        raise ConvlensError(
            f"class_names: {len(class_names)} given, the model has {model.num_classes} outputs",
            parameter="class_names",
        )
    shape, (mean, std) = prep.input_shape, prep.model_normalization()
    rebuilt = create_model(
        arguments["name"], shape, model.num_classes, mean, std, **arguments.get("options", {})
    )
    skip = _normalize_keys(rebuilt)
    weights = {k: v for k, v in model.state_dict().items() if k not in skip}
    expected = {k: v for k, v in rebuilt.state_dict().items() if k not in skip}
    wrong = [k for k in expected if k not in weights or weights[k].shape != expected[k].shape]
    if wrong or set(weights) - set(expected):
        raise ConvlensError(
            f"input_shape {list(shape)}: the model's weights do not fit {arguments['name']} at this size "
            f"({', '.join(wrong[:3]) or 'different tensors'}); give the shape it was built for, {list(model.in_shape)}",
            parameter="input_shape",
        )
    rebuilt.load_state_dict(weights, strict=False)
    return rebuilt, len(weights)


# ------------------------------------------------------------------------------ the run folder


def write_run(
    run_dir: str | Path,
    model,
    prep: Preprocessing,
    class_names: list[str],
    facts: dict,
    imported: dict,
    overwrite: bool = False,
) -> Path:
    """Commit ``model`` as ``RUN_DIR/model.*`` with the facts every face reads; the JSON path."""
    from convlens.checkpoint import save_checkpoint
    from convlens.runlock import RunLock
    from convlens.storage import remove_quietly

    model.eval()
    with torch.no_grad():
        try:
            model(torch.zeros(1, *prep.input_shape))  # (1, C, H, W): the size must go through
        except RuntimeError as exc:
            raise ConvlensError(
                f"input_shape {list(prep.input_shape)} is too small for {imported['arch']} "
                f"({printable(exc).splitlines()[0][:120]})",
                parameter="input_shape",
            ) from None
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConvlensError(f"run_dir {printable(run_dir)}: is a file, not a folder", parameter="run_dir")
    with RunLock(run_dir):
        held = [run_dir / f"{name}.json" for name in ("model", "best", "last")]
        if any(p.is_file() for p in held) and not overwrite:
            raise ConvlensError(
                f"run_dir {printable(run_dir)}: already holds a run; pass overwrite=True to replace it",
                parameter="run_dir",
            )
        for stale in held[1:]:  # a replaced run's other checkpoints would speak for another model
            remove_quietly(stale)
            remove_quietly(stale.with_suffix(".safetensors"))
        return save_checkpoint(
            run_dir / "model",
            model,
            {
                "class_names": class_names,
                "normalization": prep.to_json(),
                "dataset": facts,
                "imported": imported,
            },
        )


def import_weights(
    weights: str | Path,
    arch: str,
    run_dir: str | Path,
    class_names: Sequence[str] | str | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data: str | Path | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """``convlens import``: a state_dict or safetensors file with torchvision's key names, as a run folder."""
    check_arch(arch)  # before any file is read
    prep, names, facts = resolve_preprocessing(class_names, input_shape, mean, std, data)
    state = read_weights(weights)
    model, loaded = build_torchvision(arch, state, prep, names, printable(weights))
    imported = {"route": "state_dict", "arch": arch, "weights": Path(weights).name, "loaded_tensors": loaded}
    json_path = write_run(run_dir, model, prep, names, facts, imported, overwrite)
    return ImportResult(json_path, arch, prep, names, loaded, {"weights": str(weights)})


def import_model(
    model: nn.Module,
    run_dir: str | Path,
    class_names: Sequence[str] | str | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data: str | Path | None = None,
    overwrite: bool = False,
    provenance: Mapping | None = None,
) -> ImportResult:
    """``Run.from_model``: a model object in memory, as a run folder (see the module docstring).
    ``provenance`` is recorded with the import (a factory's file and digest)."""
    from convlens.models import StagedModel

    if not isinstance(model, nn.Module):
        raise ConvlensError(f"model must be a torch.nn.Module, got {type(model).__name__}", parameter="model")
    if isinstance(model, StagedModel):
        shape = model.in_shape if input_shape is None and data is None else input_shape
        prep, names, facts = resolve_preprocessing(class_names, shape, mean, std, data)
        if mean is None and data is None:  # the model's own normalize stage stays, and the run says so
            arguments = model.arguments
            own = arguments.get("mean"), arguments.get("std")
            if None not in own:
                prep = Preprocessing(
                    prep.input_shape, tuple(own[0]), tuple(own[1]), "the model's normalize stage"
                )
        built, loaded = rebuild_staged(model, prep, names)
        arch = built.arguments["name"]
    else:
        prep, names, facts = resolve_preprocessing(class_names, input_shape, mean, std, data)
        arch = torchvision_arch(model.state_dict())
        if arch is not None:  # a torchvision model: its family checks the head and stem by name
            built, loaded = build_torchvision(arch, model.state_dict(), prep, names, type(model).__name__)
        else:
            built, loaded, _ = graph_of_module(model, prep, names, type(model).__name__)
            arch = "graph"
    imported = {
        "route": "model object",
        "arch": arch,
        "class": type(model).__name__,
        "loaded_tensors": loaded,
        **dict(provenance or {}),
    }
    json_path = write_run(run_dir, built, prep, names, facts, imported, overwrite)
    return ImportResult(json_path, arch, prep, names, loaded, {"model": type(model).__name__})
