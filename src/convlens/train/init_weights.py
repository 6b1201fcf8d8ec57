"""Fine-tune from weights: start a new model from a trained run or a safetensors file.

Transfer learning with few images starts from a network that already learned edges and
strokes elsewhere. ``initialise`` copies every tensor whose name and shape match the new model
and leaves the rest as freshly initialised: when the classes differ that is the classifier head
(the last linear layer, whose shape no longer fits). What was loaded, what was re-initialised and
which of the source's tensors went unused, and why, is an ``InitReport``, recorded in every
checkpoint of the run (``init``) so a face can show it.

The normalization is the new data's, never the source's: a convlens model takes pixels in
[0, 1] and standardizes them with its first stage, and the source's kernels were learned on
standardized inputs (mean 0, std 1 per channel on *its* data). Standardizing the new data
with its own statistics feeds the backbone inputs on the scale it learned on; the source's
mean and std applied to other data would not (Fashion-MNIST under MNIST's statistics has a mean
of +0.5, not 0).

``WarmUp`` is the frozen-backbone warm-up: for the first ``freeze_epochs`` epochs only the head
(the re-initialised tensors and the last linear layer) trains; the loaded backbone has no
gradient, so SGD leaves it and its momentum untouched, while the OneCycle schedule counts every
step as usual. Which epoch is frozen follows from the epoch number alone, so a resumed run
freezes exactly as the uninterrupted one.

Nothing is unpickled: a run is read by ``convlens.checkpoint`` (its SHA-256 checked), a bare
file by safetensors.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError, printable, refuse_pickle

EXPECTED = "a run folder written by convlens train, its NAME.json, or a .safetensors weights file"
CHECKPOINT_NAMES = ("model.json", "best.json", "last.json")


def _fail(message: str) -> ConvlensError:
    return ConvlensError(f"init: {message}", parameter="init")


def check_init(path) -> str | None:
    """Check that ``init`` names something weights can be read from; returns it as a string.

    Only the cheap part (the path, the checkpoint's JSON, a safetensors header): it runs before
    the data are loaded and before anything is written, so a typo costs milliseconds.
    """
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise _fail(f"expected {EXPECTED}, got {path!r}")
    where = Path(path)
    shown = printable(path)
    try:
        refuse_pickle(where, "give a convlens run folder or a .safetensors file")
    except ConvlensError as exc:
        raise _fail(str(exc)) from None
    if not where.exists():
        raise _fail(f"{shown} does not exist (expected {EXPECTED})")
    if where.is_dir():
        if not any((where / name).is_file() for name in CHECKPOINT_NAMES):
            raise _fail(f"{shown} is not a convlens run (no model.json in it; expected {EXPECTED})")
    elif where.suffix == ".json" or (where.suffix == ".safetensors" and where.with_suffix(".json").is_file()):
        _checkpoint_json(where)
    elif where.suffix == ".safetensors":
        _safetensors_keys(where)
    else:
        raise _fail(f"{shown} is not a run folder or a weights file (expected {EXPECTED})")
    return str(path)


def _checkpoint_json(path: Path) -> dict:
    from convlens.checkpoint import read_metadata

    try:
        return read_metadata(path)
    except ConvlensError as exc:
        raise _fail(str(exc)) from None


def graph_of_init(path) -> dict:
    """The layers of the imported model ``path`` names (a graph run): what ``model="graph"``
    trains, so a model brought with ``convlens import`` is fine-tuned as itself."""
    where = Path(path) if path is not None else None
    meta = None
    if where is not None and where.is_dir():
        where = next((where / name for name in CHECKPOINT_NAMES if (where / name).is_file()), where)
    if (
        where is not None
        and where.suffix in (".json", ".safetensors")
        and where.with_suffix(".json").is_file()
    ):
        meta = _checkpoint_json(where.with_suffix(".json"))
    if meta is None or meta["model"].get("name") != "graph":
        raise ConvlensError(
            "model: graph takes its layers from init=RUN, a run made by convlens import (or "
            "Run.from_model) from a model you brought",
            parameter="model",
        )
    return meta["model"]["options"]["graph"]


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return list(file.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(f"{printable(path)}: not a valid safetensors file ({printable(exc)})") from None


@dataclass
class InitSource:
    """The weights a new model starts from, read and checked."""

    path: str
    tensors: dict[str, torch.Tensor]
    model: str | None = None  # the source run's model name; None for a bare weights file
    class_names: list[str] | None = None


def read_init(path: str, limit_bytes: int) -> InitSource:
    """The tensors of a run (via ``convlens.checkpoint``) or of a bare safetensors file.

    A bare file holding a convlens checkpoint's tensors (``model.``/``state.`` prefixes) gives its
    ``model.`` tensors without the prefix. ``limit_bytes`` bounds a bare file's size.
    """
    from convlens.checkpoint import read_checkpoint

    where = Path(check_init(path))
    if where.is_dir() or where.suffix == ".json" or where.with_suffix(".json").is_file():
        try:
            _, model, meta, _ = read_checkpoint(where)
        except ConvlensError as exc:
            raise _fail(str(exc)) from None
        tensors = {name: tensor.detach() for name, tensor in model.state_dict().items()}
        return InitSource(str(path), tensors, meta["model"]["name"], list(meta["class_names"]))
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    size = where.stat().st_size
    if size > limit_bytes:
        raise _fail(
            f"{printable(path)}: {size:,} bytes, more than the {limit_bytes:,} weights for this model may need"
        )
    try:
        tensors = load_file(str(where))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(f"{printable(path)}: not a valid safetensors file ({printable(exc)})") from None
    if any(key.startswith("model.") for key in tensors):
        tensors = {key[len("model.") :]: value for key, value in tensors.items() if key.startswith("model.")}
    return InitSource(str(path), tensors)


@dataclass
class InitReport:
    """What ``initialise`` did, tensor by tensor; ``to_json()`` goes into every checkpoint."""

    source: str
    source_model: str | None  # None: a bare weights file
    loaded: list[str] = field(default_factory=list)  # model tensors copied from the source
    # model tensors left freshly initialised: {"tensor", "reason": "shape" | "missing", shapes}
    reinitialised: list[dict] = field(default_factory=list)
    # source tensors not used: {"tensor", "reason": "shape" | "not in model" | "normalization"}
    skipped: list[dict] = field(default_factory=list)
    warm_up: list[str] = field(default_factory=list)  # parameters that train while the backbone is frozen

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One readable sentence: how many loaded, which re-initialised, which skipped and why."""
        return describe_init(self.to_json())


def describe_init(report: dict) -> str:
    """The sentence of an ``InitReport``'s JSON (as a checkpoint records it), grouped by reason.

    A source tensor skipped for its shape is the same tensor re-initialised in the model, so it
    is named once."""
    total = len(report["loaded"]) + len(report["reinitialised"])
    what = f" ({report['source_model']})" if report["source_model"] else ""
    parts = [
        f"initialised from {printable(report['source'])}{what}: loaded {len(report['loaded'])} of {total} tensors"
    ]
    renewed = {entry["tensor"] for entry in report["reinitialised"]}
    groups = [
        ("re-initialised, shape differs", [e for e in report["reinitialised"] if e["reason"] == "shape"]),
        (
            "re-initialised, not in the source",
            [e for e in report["reinitialised"] if e["reason"] == "missing"],
        ),
        (
            "skipped, shape differs",
            [e for e in report["skipped"] if e["reason"] == "shape" and e["tensor"] not in renewed],
        ),
        ("skipped, not in this model", [e for e in report["skipped"] if e["reason"] == "not in model"]),
        (
            "skipped, the new data's normalization is kept",
            [e for e in report["skipped"] if e["reason"] == "normalization"],
        ),
    ]
    for label, entries in groups:
        if entries:
            parts.append(f"{label}: " + ", ".join(_entry(e) for e in entries))
    return "; ".join(parts)


def _entry(entry: dict) -> str:
    if entry["reason"] == "shape":
        return f"{entry['tensor']} {tuple(entry['source_shape'])} -> {tuple(entry['model_shape'])}"
    return entry["tensor"]


def _reason(entry: dict) -> str:
    if entry["reason"] == "shape":
        return (
            f"shape {tuple(entry['source_shape'])} in the source, {tuple(entry['model_shape'])} in the model"
        )
    return {"missing": "not in the source", "not in model": "not in this model"}.get(
        entry["reason"], entry["reason"]
    )


def _normalization_buffers(model: nn.Module) -> set[str]:
    from convlens.models import Normalize

    return {
        f"{name}.{buffer}" if name else buffer
        for name, module in model.named_modules()
        if isinstance(module, Normalize)
        for buffer in ("mean", "std")
    }


def _linear_tensors(model: nn.Module) -> dict[str, str]:
    """Tensor name → its Linear module's name, for every Linear layer, in forward order."""
    return {
        f"{name}.{tensor}": name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        for tensor, _ in module.named_parameters(recurse=False)
    }


def initialise(model: nn.Module, source: InitSource, model_name: str) -> InitReport:
    """Copy every tensor of ``source`` whose name and shape fit ``model``; report the rest.

    A source of another model family is refused (naming both) unless its tensors line up with
    this one's everywhere but the classifier head; a source of which nothing fits is refused.
    """
    state = model.state_dict()
    normalization = _normalization_buffers(model)
    linear = _linear_tensors(model)
    report = InitReport(source.path, source.model)
    for name, tensor in state.items():
        if name in normalization:
            continue
        found = source.tensors.get(name)
        if found is None:
            report.reinitialised.append({"tensor": name, "reason": "missing"})
        elif found.shape != tensor.shape:
            shapes = {"source_shape": list(found.shape), "model_shape": list(tensor.shape)}
            report.reinitialised.append({"tensor": name, "reason": "shape", **shapes})
        else:
            report.loaded.append(name)
    for name, found in source.tensors.items():
        if name in normalization:
            report.skipped.append({"tensor": name, "reason": "normalization"})
        elif name not in state:
            report.skipped.append({"tensor": name, "reason": "not in model"})
        elif found.shape != state[name].shape:
            shapes = {"source_shape": list(found.shape), "model_shape": list(state[name].shape)}
            report.skipped.append({"tensor": name, "reason": "shape", **shapes})
    _refuse_misfit(report, source, model_name, linear)
    with torch.no_grad():
        for name in report.loaded:
            state[name].copy_(source.tensors[name])  # state_dict tensors share the model's storage
    last_linear = list(dict.fromkeys(linear.values()))[-1:]  # the classifier layer's module name
    parameters = dict(model.named_parameters())
    head = {e["tensor"] for e in report.reinitialised} | {t for t, m in linear.items() if m in last_linear}
    report.warm_up = [name for name in parameters if name in head]
    return report


def _refuse_misfit(report: InitReport, source: InitSource, model_name: str, linear: dict) -> None:
    """Another model family only when every tensor but the head lines up; never nothing loaded."""
    shown = printable(source.path)
    if source.model is not None and source.model != model_name:
        misfits = [e for e in report.reinitialised if e["reason"] != "shape" or e["tensor"] not in linear]
        misfits += [e for e in report.skipped if e["reason"] == "not in model"]
        if misfits or not report.loaded:
            first = (misfits or report.reinitialised)[0]
            raise _fail(
                f"{shown} holds a {source.model} model, the new model is a {model_name}, and their tensors "
                f"do not line up ({first['tensor']}: {_reason(first)}); choose model {source.model!r} or "
                "weights of the same layers"
            )
    if not report.loaded:
        first = (report.reinitialised or [{"tensor": "(none)", "reason": "missing"}])[0]
        raise _fail(
            f"no tensor of {shown} fits a {model_name} for this data (e.g. {first['tensor']}: "
            f"{_reason(first)}); is it weights of this model?"
        )


def init_model(model: nn.Module, init_path: str, model_name: str) -> dict:
    """Read ``init_path`` and ``initialise`` ``model`` from it; returns the report's JSON."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return initialise(model, read_init(init_path, 4 * weights + 64 * 2**20), model_name).to_json()


class WarmUp:
    """The frozen-backbone warm-up: before each epoch, ``set(epoch)`` freezes or frees the backbone."""

    def __init__(self, model: nn.Module, freeze_epochs: int, init: dict | None, distributed: bool) -> None:
        self.freeze_epochs = freeze_epochs if init else 0
        if self.freeze_epochs and distributed:
            raise ConvlensError(
                "freeze_epochs: a frozen warm-up cannot run with several processes (their gradients are "
                "averaged over a fixed set of parameters); train it in one process",
                parameter="freeze_epochs",
            )
        head = set(init["warm_up"]) if init else set()
        self.backbone = [p for name, p in model.named_parameters() if name not in head]

    def set(self, epoch: int) -> None:
        """Freeze the backbone through epoch ``freeze_epochs``, then train everything."""
        if not self.freeze_epochs:
            return
        frozen = epoch <= self.freeze_epochs
        for parameter in self.backbone:
            parameter.requires_grad_(not frozen)
