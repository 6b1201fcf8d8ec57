"""Checkpoints: tensors in safetensors, everything else in JSON beside them. Nothing is unpickled.

``NAME.safetensors`` holds the model weights under ``model.`` (and, for a resumable
checkpoint, the optimizer and RNG state under ``state.``); ``NAME.json`` holds how to
rebuild the model, the class names, normalization, training config, metrics, data
fingerprint, versions and the SHA-256 of the tensor file. ``save_checkpoint`` commits both with
one atomic rename of the JSON (its docstring has the protocol), so a kill at any point leaves
the previous checkpoint or the new one, whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
from pathlib import Path

import torch

from convlens.checkpoint_schema import FORMAT  # one definition, beside the schema that checks it
from convlens.errors import ConvlensError, printable, refuse_pickle, shown
from convlens.storage import atomic_write, fsync_dir, remove_quietly, remove_stale_temp_files


def versions() -> dict:
    from convlens import __version__

    return {"convlens": __version__, "torch": torch.__version__, "python": platform.python_version()}


# Called between the steps of ``save_checkpoint`` with (step, JSON path); tests set it to
# simulate a kill at each point. Steps: "start", "staged", "committed", "renamed", "done".
save_step = None


def _step(name: str, json_path: Path) -> None:
    if save_step is not None:
        save_step(name, json_path)


def _staged_name(stem: str, sha256: str) -> str:
    """The content-named tensor file of a checkpoint being saved: ``NAME.<sha16>.safetensors``."""
    return f"{stem}.{sha256[:16]}.safetensors"


def _staged_files(folder: Path, stem: str) -> list[Path]:
    pattern = re.compile(rf"{re.escape(stem)}\.[0-9a-f]{{16}}\.safetensors")
    return [p for p in folder.glob(f"{stem}.*.safetensors") if pattern.fullmatch(p.name)]


def tensor_file(json_path: Path, meta: dict) -> Path:
    """The tensor file a checkpoint's JSON commits to.

    Normally ``weights.file`` (``NAME.safetensors``); after a kill between the JSON's commit and
    the final rename, the content-named ``NAME.<sha16>.safetensors`` the JSON's SHA-256 names.
    """
    named = json_path.with_name(meta["weights"]["file"])
    sha = meta["weights"].get("sha256")
    if isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha) and named.suffix == ".safetensors":
        staged = named.with_name(_staged_name(named.stem, sha))
        if staged.is_file():
            return staged
    return named


def _committed_sha(json_path: Path) -> str | None:
    try:
        return json.loads(json_path.read_text())["weights"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tidy_checkpoint(path: str | Path) -> None:
    """Clear what a killed ``save_checkpoint`` of ``PATH`` left: temp files, tensors written but
    never committed, and a committed ``PATH.<sha16>.safetensors`` not yet renamed (step 4 is
    finished). Only a writer holding the run folder (``convlens.runlock``) may call this."""
    stem = Path(path).with_suffix("")
    folder, json_path = stem.parent, stem.with_suffix(".json")
    if not folder.is_dir():
        return
    for name in (json_path.name, stem.name + ".safetensors"):
        remove_stale_temp_files(folder, name)
    staged_temp = re.compile(rf"\.{re.escape(stem.name)}\.[0-9a-f]{{16}}\.safetensors\..+\.tmp")
    for stale in folder.glob(f".{stem.name}.*.tmp"):
        if staged_temp.fullmatch(stale.name):
            remove_quietly(stale)  # a content-named write killed before its rename
    committed = _committed_sha(json_path)
    for staged in _staged_files(folder, stem.name):
        remove_stale_temp_files(folder, staged.name)
        if committed is not None and staged.name == _staged_name(stem.name, committed):
            os.replace(staged, stem.with_suffix(".safetensors"))  # finish the killed save's step 4
            fsync_dir(folder)
        else:
            remove_quietly(staged)  # written by a save killed before its commit


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    metadata: dict,
    state_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``PATH.safetensors`` + ``PATH.json`` with one atomic commit; returns the JSON path.

    ``metadata`` must carry at least ``class_names``; the model's own ``arguments`` are added.
    The protocol (a kill at any point leaves the previous or the new checkpoint, whole):

    1. ``tidy_checkpoint``: clear what a killed save left;
    2. write the tensors to ``PATH.<sha16>.safetensors`` (temp file, fsync, rename, fsync folder);
    3. **commit**: rename the new ``PATH.json`` into place (it holds the tensors' SHA-256; a
       reader finds them under the content name until step 4) and fsync the folder;
    4. rename ``PATH.<sha16>.safetensors`` over ``PATH.safetensors``, fsync the folder.
    """
    from safetensors.torch import save as save_tensors

    names = metadata.get("class_names") if isinstance(metadata, dict) else None
    classes = getattr(model, "num_classes", None)
    if (
        not isinstance(names, list | tuple)
        or not all(isinstance(name, str) for name in names)
        or (classes is not None and len(names) != classes)
    ):  # else the checkpoint is written and cannot be loaded
        raise ConvlensError(
            f"metadata must hold class_names, a list of {classes or 'K'} strings (one per output)",
            parameter="metadata",
        )
    stem = Path(path).with_suffix("")
    folder, json_path = stem.parent, stem.with_suffix(".json")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (state_tensors or {}).items():
        tensors[f"state.{key}"] = value.detach().cpu().contiguous()
    blob = save_tensors(tensors)
    sha = hashlib.sha256(blob).hexdigest()
    meta = {
        "format": FORMAT,
        "model": model.arguments,
        "input_shape": list(model.in_shape),
        "versions": versions(),
        **metadata,
        "weights": {
            "file": stem.name + ".safetensors",
            "sha256": sha,
            "tensors": len(tensors),
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    tidy_checkpoint(stem)
    _step("start", json_path)
    staged = folder / _staged_name(stem.name, sha)
    atomic_write(staged, blob)
    _step("staged", json_path)
    atomic_write(json_path, (json.dumps(meta, indent=2) + "\n").encode())
    _step("committed", json_path)
    os.replace(staged, stem.with_suffix(".safetensors"))
    fsync_dir(folder)
    _step("renamed", json_path)
    for leftover in _staged_files(folder, stem.name):
        remove_quietly(leftover)  # the previous commit's, when a kill came between its 3 and 4
    _step("done", json_path)
    return json_path


def _run_checkpoint(folder: Path) -> Path:
    """A run folder's ``model.json``; while training has not finished (or was killed before
    writing it), its ``best.json`` or ``last.json``, with a warning saying so."""
    model = folder / "model.json"
    if model.is_file():
        return model
    for name, what in (("best", "the best epoch so far"), ("last", "the last epoch saved")):
        fallback = folder / f"{name}.json"
        if fallback.is_file():
            logging.getLogger("convlens").warning(
                "%s has no model.json (training is running or was interrupted); using %s.json, %s",
                printable(folder),
                name,
                what,
            )
            return fallback
    return model


def resolve_checkpoint(path: str | Path) -> Path:
    """RUN_DIR, RUN_DIR/NAME.json or RUN_DIR/NAME.safetensors → the JSON path; refuses pickles."""
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise ConvlensError(
            f"path must be a run folder or a checkpoint's .json, got {shown(path)}",
            parameter="path",
        )
    path = Path(path)
    refuse_pickle(path, "convlens checkpoints are NAME.safetensors + NAME.json")
    if path.is_dir():
        path = _run_checkpoint(path)
    elif path.suffix == ".safetensors":
        staged = re.fullmatch(r"(.+)\.[0-9a-f]{16}\.safetensors", path.name)
        path = path.with_name(staged.group(1) + ".json") if staged else path.with_suffix(".json")
    if not path.is_file():
        raise ConvlensError(
            f"{path}: no checkpoint here (expected a run folder or a .json written by convlens train)"
        )
    return path


def read_metadata(path: str | Path) -> dict:
    """Read a checkpoint's JSON and check it against the schema (without loading tensors).

    ``checkpoint_schema`` bounds its size and nesting and checks the type and range of every
    field the loader uses, so nothing is built from a field that is not what it claims.
    """
    from convlens.checkpoint_schema import check_metadata, load_json

    json_path = resolve_checkpoint(path)
    return check_metadata(json_path, load_json(json_path))


def _tensor_bytes_limit(model: torch.nn.Module) -> int:
    """The largest tensor file a model of this size may come with: its weights, up to three
    times as much optimizer state for resuming, and 64 MiB for the rest."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 4 * weights + 64 * 2**20


def _read_tensors(json_path: Path, meta: dict, limit: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint whose JSON passed the schema: size bounded by ``limit``, and
    the SHA-256 checked before safetensors parses a byte."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from convlens.checkpoint_schema import check_weights_file

    check_weights_file(json_path, meta["weights"]["file"])
    weights_path = tensor_file(json_path, meta)  # the committed tensors, also mid-save
    where = printable(weights_path)
    if not weights_path.is_file():
        raise ConvlensError(f"{where}: missing tensor file for checkpoint {printable(json_path)}")
    size = weights_path.stat().st_size
    if limit is not None and size > limit:
        raise ConvlensError(
            f"{where}: {size:,} bytes, more than the {limit:,} a {meta['model']['name']} of this size "
            f"may need; not the tensor file of {printable(json_path.name)}"
        )
    digest, blob = hashlib.sha256(), bytearray()
    with weights_path.open("rb") as file:
        while chunk := file.read(2**24):
            digest.update(chunk)
            blob += chunk
    if digest.hexdigest() != meta["weights"].get("sha256"):
        raise ConvlensError(
            f"{where}: tensors do not match {printable(json_path.name)} (SHA-256 differs: modified or "
            "replaced after saving)"
        )
    try:
        return load_tensors(bytes(blob))
    except SafetensorError as exc:
        raise ConvlensError(f"{where}: not a valid safetensors file ({exc})") from None


def _build(json_path: Path, arguments: dict, device: str | None = None) -> torch.nn.Module:
    """``create_model`` from checked arguments; on ``"meta"`` it allocates nothing."""
    from contextlib import nullcontext

    from convlens.models import create_model

    try:
        with torch.device(device) if device else nullcontext():
            return create_model(
                arguments["name"],
                arguments["in_shape"],
                arguments["num_classes"],
                arguments.get("mean"),
                arguments.get("std"),
                **arguments.get("options", {}),
            )
    except ConvlensError as exc:
        raise ConvlensError(f"{printable(json_path)}: {exc}") from None


_FIELDS = " (model.in_shape, model.num_classes or model.options differ from the saved tensors)"


def _check_fit(where: str, name: str, expected: dict, weights: dict[str, torch.Tensor]) -> None:
    """The saved tensors are exactly the model's: same names, shapes and dtypes."""
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        which = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise ConvlensError(f"{where}: tensors do not fit model {name!r}: {which}{_FIELDS}")
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape or tensor.dtype != expected[key].dtype:
            raise ConvlensError(
                f"{where}: tensor {key!r} is {tuple(tensor.shape)} {tensor.dtype}, model "
                f"{name!r} expects {tuple(expected[key].shape)} {expected[key].dtype}{_FIELDS}"
            )


def _check_finite(where: str, weights: dict[str, torch.Tensor]) -> None:
    """A NaN or infinite weight makes every prediction NaN: refuse it on load, however the file
    came to hold it (a matching SHA-256 only says it is the file that was saved)."""
    for key, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConvlensError(
                f"{where}: tensor {key!r} holds NaN or infinite values (a diverged or damaged "
                "training); a model with them predicts nothing"
            )


def read_checkpoint(path: str | Path) -> tuple[Path, torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """(JSON path, model in eval mode, metadata, the ``state.`` tensors saved for resuming).

    The low level under ``Run.open`` and ``load_checkpoint``: every check happens here.
    """
    json_path = resolve_checkpoint(path)
    meta = read_metadata(json_path)
    arguments = meta["model"]
    where = printable(json_path)
    # On the meta device first: sizes every tensor without allocating, so a huge input shape or
    # a model that does not fit the tensors is refused before anything real is built.
    try:
        shapes = _build(json_path, arguments, "meta")
    except ConvlensError:
        raise
    except Exception:  # a plugin model that cannot be built on "meta": the real build decides
        shapes = None
    tensors = _read_tensors(json_path, meta, _tensor_bytes_limit(shapes) if shapes is not None else None)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    if shapes is not None:
        _check_fit(where, arguments["name"], shapes.state_dict(), weights)
    model = _build(json_path, arguments)
    _check_fit(where, arguments["name"], model.state_dict(), weights)
    if len(meta["class_names"]) != model.num_classes:
        raise ConvlensError(
            f"{where}: {len(meta['class_names'])} class names for a model with {model.num_classes} outputs"
        )
    _check_finite(where, weights)
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
