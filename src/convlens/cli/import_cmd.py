"""`convlens import`: a model a user brings, as a run folder every command opens. The work is in convlens.imports."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import out, print_json
from convlens.errors import ConvlensError, printable


def _numbers(text: str | None, flag: str, kind: type = float) -> list | None:
    """A comma-separated list of numbers; the library checks how many and which values."""
    if text is None:
        return None
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise ConvlensError(f"{flag} must be comma-separated {what}, got {text!r}") from None


@app.command("import")
def import_command(
    model: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="The model: a torch.export program (.pt2), an ONNX file (.onnx), a Python factory "
        "FILE.py:FUNCTION (with --trust-code), or weights (.safetensors, .pt, .pth state_dict) with --arch.",
    ),
    run_dir: Path = typer.Option(..., "--out", "-o", help="Run folder to write."),
    arch: str = typer.Option(
        None,
        "--arch",
        help="For a weights file: the architecture with torchvision's key names (resnet18, resnet34, mobilenet_v2).",
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Allow running the Python file of a FILE.py:FUNCTION factory (once: the run keeps its graph, not the code).",
    ),
    weights: Path = typer.Option(
        None,
        "--weights",
        help="For a factory: a state_dict (.safetensors, .pt, .pth) to load into its module.",
    ),
    data: str = typer.Option(
        None, "--data", "-d", help="Data set (built-in name or path): class names, input shape and mean/std."
    ),
    class_names: str = typer.Option(None, "--class-names", help="Class names in output order: a,b,c."),
    input_shape: str = typer.Option(
        None,
        "--input-shape",
        help="C,H,W of the images the model takes (1 or 3 channels), e.g. 3,224,224; a .pt2 or .onnx "
        "file with a fixed input size gives it.",
    ),
    mean: str = typer.Option(
        None,
        "--mean",
        help="Per-channel mean the weights expect, in [0, 1] pixel units (ImageNet: 0.485,0.456,0.406); "
        "default: the data set's with --data, else none (pixels in [0, 1] as they are).",
    ),
    std: str = typer.Option(
        None, "--std", help="Per-channel standard deviation, with --mean (ImageNet: 0.229,0.224,0.225)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print {run, checkpoint, arch, class_names, input_shape, normalization, loaded_tensors, ...}.",
    ),
) -> None:
    """Import a model trained elsewhere as a convlens run: every command then opens it.

    Four routes, chosen from MODEL: a torch.export program (.pt2) or an ONNX file is converted
    from its graph without running any code; a Python factory FILE.py:FUNCTION runs your code
    (only with --trust-code) and its module is traced; a weights file needs --arch and
    torchvision's key names (conv1, bn1, layer1.0.conv1, ..., fc). The run keeps the model as a
    graph of known layers plus safetensors weights, checked to give the original's outputs, so
    opening it later runs no code and unpickles nothing. A layer convlens cannot save is named,
    and nothing is written.

    Examples:

      convlens import resnet18-xray.pth --arch resnet18 --data xrays/ --out runs/xray

      convlens import model.pt2 --class-names cat,dog,bird --out runs/pets

      convlens import net.onnx --class-names normal,pneumonia --mean 0.5 --std 0.25 --out runs/cxr

      convlens import mynet.py:build --trust-code --weights mynet.pth --class-names a,b
        --input-shape 1,64,64 --out runs/mine
    """
    from convlens.imports import import_file, route_of

    try:
        route = route_of(model, arch)
        shape = _numbers(input_shape, "--input-shape", int)
        if data is None and class_names is None:
            raise ConvlensError("--data or --class-names is needed (the model's classes, in output order)")
        if data is None and shape is None and route in ("weights", "factory"):
            raise ConvlensError("--input-shape is needed with --class-names (or give --data)")
        result = import_file(
            model,
            run_dir,
            arch=arch,
            weights=weights,
            trust_code=trust_code,
            class_names=class_names,
            input_shape=shape,
            mean=_numbers(mean, "--mean"),
            std=_numbers(std, "--std"),
            data=data,
            overwrite=overwrite,
        )
    except ConvlensError as exc:
        if exc.parameter in ("model", "program"):  # the positional argument, not a --model flag
            raise ConvlensError(exc.with_name("MODEL")) from None
        raise
    if as_json:
        return print_json(result.to_json())
    prep = result.preprocessing
    normalized = (
        f"mean {', '.join(f'{v:g}' for v in prep.mean)}, std {', '.join(f'{v:g}' for v in prep.std)} ({prep.source})"
        if prep.mean is not None
        else prep.source
    )
    kind = result.arch if result.arch != "graph" else f"a graph of {result.stages} stages"
    for line in (
        f"wrote {printable(result.checkpoint.parent)}: {kind}, {result.loaded} tensors loaded from "
        f"{printable(Path(str(model)).name)}",
        f"  classes        {', '.join(printable(n) for n in result.class_names)}",
        f"  input          {'x'.join(map(str, prep.input_shape))} (C x H x W), pixels in [0, 1]",
        f"  normalization  {normalized}",
    ):
        out.print(line, markup=False, soft_wrap=True)
    return None
