"""``import_file``: one entry point that picks the import route from what the user names.

``convlens import MODEL`` and Python callers name a model the way they have it: a ``.pt2``
program, an ``.onnx`` file, a Python factory ``FILE.py:FUNCTION``, or a weights file with the
architecture it fits. The route is decided from that name alone, before any file is read, and a
flag that does not belong to the route is refused rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convlens.errors import ConvlensError, printable
from convlens.imports.user_code import build_from_factory, is_reference

WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
ROUTES = (
    "a torch.export program (.pt2), an ONNX file (.onnx), a Python factory FILE.py:FUNCTION "
    "(with trust_code), or weights (.safetensors, .pt, .pth) with arch"
)


def route_of(model: str | Path, arch: str | None = None) -> str:
    """``program``, ``onnx``, ``factory`` or ``weights``: how ``model`` is read."""
    if is_reference(model):
        return "factory"
    suffix = Path(str(model)).suffix.lower()
    if suffix == ".pt2":
        return "program"
    if suffix == ".onnx":
        return "onnx"
    if suffix in WEIGHTS_SUFFIXES or arch is not None:
        return "weights"
    raise ConvlensError(f"model {printable(str(model))}: expected {ROUTES}", parameter="model")


def _refuse(flag: str, value, route: str) -> None:
    if value not in (None, False):
        raise ConvlensError(f"{flag}: only for {route}", parameter=flag)


def import_file(
    model: str | Path,
    run_dir: str | Path,
    *,
    arch: str | None = None,
    weights: str | Path | None = None,
    trust_code: bool = False,
    class_names: Sequence[str] | str | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data: str | Path | None = None,
    overwrite: bool = False,
):
    """Import the model ``model`` names as the run folder ``run_dir``; returns an ``ImportResult``.

    ``arch`` is for a weights file; ``weights`` (a state_dict loaded into the module) and
    ``trust_code`` are for a factory. The preprocessing (``class_names``, ``input_shape``,
    ``mean``/``std``, or ``data``) is the same for every route."""
    from convlens.imports.core import import_model, import_weights
    from convlens.imports.weights_file import read_weights

    route = route_of(model, arch)
    preprocessing = {
        "class_names": class_names,
        "input_shape": input_shape,
        "mean": mean,
        "std": std,
        "data": data,
        "overwrite": overwrite,
    }
    if route != "factory":
        _refuse("trust_code", trust_code, "a Python factory FILE.py:FUNCTION (the only route that runs code)")
        _refuse(
            "weights", weights, "a Python factory FILE.py:FUNCTION (a program or ONNX file holds its weights)"
        )
    if route != "weights":
        _refuse(
            "arch",
            arch,
            "a weights file (.safetensors, .pt, .pth); this route reads the architecture from the file",
        )
    if route == "weights":
        if arch is None:
            raise ConvlensError(
                f"arch is needed for the weights file {printable(str(model))}: resnet18, resnet34 or mobilenet_v2",
                parameter="arch",
            )
        return import_weights(model, arch, run_dir, **preprocessing)
    if route == "program":
        from convlens.imports.exported import import_program

        return import_program(model, run_dir, **preprocessing)
    if route == "onnx":
        from convlens.imports.onnx_graph import import_onnx

        return import_onnx(model, run_dir, **preprocessing)
    module, provenance = build_from_factory(str(model), trust_code)
    if weights is not None:
        state = read_weights(weights)
        try:
            problems = module.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape
            reason = printable(str(exc)).splitlines()[-1].strip()[:200]
            raise ConvlensError(
                f"weights {printable(str(weights))}: does not fit {provenance['factory']}() ({reason})",
                parameter="weights",
            ) from None
        if problems.missing_keys or problems.unexpected_keys:
            keys = (problems.missing_keys or problems.unexpected_keys)[:3]
            what = "missing" if problems.missing_keys else "unexpected"
            raise ConvlensError(
                f"weights {printable(str(weights))}: does not fit {provenance['factory']}() ({what}: {', '.join(keys)})",
                parameter="weights",
            )
        provenance["weights"] = Path(weights).name
    return import_model(
        module, run_dir, provenance={"route": "python factory", **provenance}, **preprocessing
    )
