"""Reading a weights file a user brings, without unpickling anything but tensors.

A ``.safetensors`` file is parsed by safetensors; a ``.pt``/``.pth`` state_dict goes through
``torch.load(..., weights_only=True)``, whose unpickler refuses every Python object but tensors
and plain containers (a whole pickled model, a custom class). Training scripts often save
``{"model": state_dict, "epoch": ...}`` or ``{"state_dict": ...}``, and data-parallel training
prefixes every key with ``module.``: both are unwrapped.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from convlens.errors import ConvlensError, printable

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")  # read with torch.load(weights_only=True) only
NESTING_KEYS = ("state_dict", "model")  # training scripts save {"model": state_dict, "epoch": ...}
MAX_NESTING = 3
# a ResNet-34 is 87 MB of float32; with optimizer state a training checkpoint is about 3x its weights
MAX_WEIGHTS_BYTES = 2 * 2**30


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a PyTorch state_dict (``torch.load`` with
    ``weights_only=True``), unwrapped from ``{"state_dict": ...}`` / ``{"model": ...}`` and from
    the ``module.`` prefix data-parallel training adds."""
    path = Path(path)
    where = printable(path)
    if not path.is_file():
        raise ConvlensError(f"{where}: no such file (expected a .safetensors or .pt/.pth state_dict)")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ConvlensError(
            f"{where}: {path.stat().st_size:,} bytes, over the {MAX_WEIGHTS_BYTES // 2**30} GiB limit for weights "
            "convlens imports"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            state = load(path.read_bytes())
        except (SafetensorError, ValueError, OSError) as exc:
            raise ConvlensError(f"{where}: not a valid safetensors file ({printable(exc)})") from None
    elif suffix in TORCH_SUFFIXES:
        state = _torch_load(path)
    else:
        raise ConvlensError(
            f"{where}: expected weights as a .safetensors file or a {', '.join(TORCH_SUFFIXES)} state_dict"
        )
    return _unwrap(where, state)


def _torch_load(path: Path):
    where = printable(path)
    with path.open("rb") as file:
        magic = file.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch.save writes a zip (or, before 1.6, a pickle)
        raise ConvlensError(f"{where}: not a PyTorch state_dict (neither a torch.save zip nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any Python object but tensors and plain containers; torch names it
        named = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line]
        detail = f" ({printable(named[0])[:160]})" if named else ""
        raise ConvlensError(
            f"{where}: holds Python objects besides tensors, which convlens does not unpickle "
            f"(save model.state_dict() instead of the model){detail}"
        ) from None
    except Exception as exc:  # torch.load of a file that is not a checkpoint fails in many ways
        reason = printable(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConvlensError(f"{where}: not a PyTorch state_dict ({reason})") from None


def _unwrap(where: str, state) -> dict[str, torch.Tensor]:
    for _ in range(MAX_NESTING):
        if not isinstance(state, Mapping) or all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        nested = next((state[k] for k in NESTING_KEYS if isinstance(state.get(k), Mapping)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, Mapping) or not state:
        raise ConvlensError(f"{where}: not a state_dict (expected a mapping of names to tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConvlensError(
                f"{where}: not a state_dict: {printable(repr(key))[:80]} holds a {type(value).__name__}, "
                "not a tensor"
            )
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)
