"""Checkpoints: tensors in safetensors, everything else in JSON beside them. Nothing is unpickled.

``NAME.safetensors`` holds the model weights under ``model.`` (and, for a resumable
checkpoint, the optimizer and RNG state under ``state.``); ``NAME.json`` holds how to
rebuild the model, the class names, normalization, training config, metrics, data
fingerprint, versions and the SHA-256 of the tensor file. Both are written to a temp
file and renamed, the JSON last, so a crash never leaves a checkpoint that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import threading
from pathlib import Path

import torch

from convlens.errors import ConvlensError, refuse_pickle

FORMAT = "convlens-checkpoint/1"


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``).

    Elsewhere it is set and restored under a lock, so two writers in this process never race.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path`` and rename it: readers never see half a file.

    The temp file is created 0600; it gets the mode the user's umask asks for before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as tmp:
        try:
            tmp.write(data)
            tmp.flush()
            if hasattr(os, "fchmod"):  # POSIX; Windows has no mode bits to honour
                os.fchmod(tmp.fileno(), new_file_mode())
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def versions() -> dict:
    from convlens import __version__

    return {"convlens": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    metadata: dict,
    state_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``PATH.safetensors`` + ``PATH.json`` atomically; returns the JSON path.

    ``metadata`` must carry at least ``class_names``; the model's own ``arguments`` are added.
    """
    from safetensors.torch import save as save_tensors

    stem = Path(path).with_suffix("")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (state_tensors or {}).items():
        tensors[f"state.{key}"] = value.detach().cpu().contiguous()
    blob = save_tensors(tensors)
    meta = {
        "format": FORMAT,
        "model": model.arguments,
        "input_shape": list(model.in_shape),
        "versions": versions(),
        **metadata,
        "weights": {
            "file": stem.name + ".safetensors",
            "sha256": hashlib.sha256(blob).hexdigest(),
            "tensors": len(tensors),
        },
    }
    atomic_write(stem.with_suffix(".safetensors"), blob)
    atomic_write(stem.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return stem.with_suffix(".json")


def resolve_checkpoint(path: str | Path) -> Path:
    """RUN_DIR, RUN_DIR/NAME.json or RUN_DIR/NAME.safetensors → the JSON path; refuses pickles."""
    path = Path(path)
    refuse_pickle(path, "convlens checkpoints are NAME.safetensors + NAME.json")
    if path.is_dir():
        path = path / "model.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise ConvlensError(
            f"{path}: no checkpoint here (expected a run folder or a .json written by convlens train)"
        )
    return path


def read_metadata(path: str | Path) -> dict:
    """Read and check a checkpoint's JSON (without loading tensors)."""
    json_path = resolve_checkpoint(path)
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConvlensError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConvlensError(f"{json_path}: not a convlens checkpoint (expected format {FORMAT!r})")
    for key in ("model", "class_names", "weights"):
        if key not in meta:
            raise ConvlensError(f"{json_path}: checkpoint JSON is missing {key!r}")
    return meta


def _read_tensors(json_path: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    weights_path = json_path.with_name(meta["weights"]["file"])
    if not weights_path.is_file():
        raise ConvlensError(f"{weights_path}: missing tensor file for checkpoint {json_path}")
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["weights"].get("sha256"):
        raise ConvlensError(
            f"{weights_path}: tensors do not match {json_path.name} (SHA-256 differs: modified or "
            "replaced after saving)"
        )
    try:
        return load_tensors(blob)
    except SafetensorError as exc:
        raise ConvlensError(f"{weights_path}: not a valid safetensors file ({exc})") from None


def read_checkpoint(path: str | Path) -> tuple[Path, torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """(JSON path, model in eval mode, metadata, the ``state.`` tensors saved for resuming).

    The low level under ``Run.open`` and ``load_checkpoint``: every check happens here.
    """
    from convlens.models import create_model

    json_path = resolve_checkpoint(path)
    meta = read_metadata(json_path)
    arguments = meta["model"]
    try:
        model = create_model(
            arguments["name"],
            arguments["in_shape"],
            arguments["num_classes"],
            arguments.get("mean"),
            arguments.get("std"),
            **arguments.get("options", {}),
        )
    except ConvlensError as exc:
        raise ConvlensError(f"{json_path}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise ConvlensError(f"{json_path}: model arguments are incomplete ({exc})") from None
    tensors = _read_tensors(json_path, meta)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        which = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise ConvlensError(f"{json_path}: tensors do not fit model {arguments['name']!r}: {which}")
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape or tensor.dtype != expected[key].dtype:
            raise ConvlensError(
                f"{json_path}: tensor {key!r} is {tuple(tensor.shape)} {tensor.dtype}, model "
                f"{arguments['name']!r} expects {tuple(expected[key].shape)} {expected[key].dtype}"
            )
    if len(meta["class_names"]) != model.num_classes:
        raise ConvlensError(
            f"{json_path}: {len(meta['class_names'])} class names for a model with "
            f"{model.num_classes} outputs"
        )
    model.load_state_dict(weights)
    model.eval()
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    return json_path, model, meta, state


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, metadata dict)`` of a checkpoint: a run folder or its ``NAME.json``.

    Kept for scripts that want the raw JSON; ``convlens.Run.open(path)`` gives the same model
    with typed fields (class names, input shape, metrics, history, paths) and the methods the
    faces use (``data()``, ``predict()``).
    """
    _, model, meta, _ = read_checkpoint(path)
    return model, meta


def split_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer's state into tensors (for safetensors) and plain values (for JSON), so resuming needs no pickle."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict, plain: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in plain["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})
