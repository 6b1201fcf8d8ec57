"""`convlens import`: weights a user brings, as a run folder every command opens. The work is in convlens.imports."""

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
    weights: Path = typer.Argument(
        ...,
        help="Weights: a .safetensors file or a .pt/.pth state_dict (read with weights_only=True; "
        "nothing else is unpickled).",
    ),
    arch: str = typer.Option(
        ..., "--arch", help="Architecture with torchvision's key names: resnet18, resnet34 or mobilenet_v2."
    ),
    run_dir: Path = typer.Option(..., "--out", "-o", help="Run folder to write."),
    data: str = typer.Option(
        None, "--data", "-d", help="Data set (built-in name or path): class names, input shape and mean/std."
    ),
    class_names: str = typer.Option(None, "--class-names", help="Class names in output order: a,b,c."),
    input_shape: str = typer.Option(
        None, "--input-shape", help="C,H,W of the images the model takes (1 or 3 channels), e.g. 3,224,224."
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
        help="Print {run, checkpoint, arch, class_names, input_shape, normalization, loaded_tensors, weights}.",
    ),
) -> None:
    """Import weights trained elsewhere (e.g. a fine-tuned torchvision ResNet) as a convlens run.

    The weights' key names must be torchvision's for --arch (conv1, bn1, layer1.0.conv1, ..., fc);
    a state_dict saved under "state_dict" or "model", or with DataParallel's "module." prefix,
    is unwrapped. Every key must fit: a missing, unexpected or mis-shaped tensor is named, and
    nothing is written. The run opens with predict, eval, explain, attack, report and serve.

    Examples:

      convlens import resnet18-xray.pth --arch resnet18 --data xrays/ --out runs/xray

      convlens import model.safetensors --arch resnet18 --class-names cat,dog,bird
        --input-shape 3,224,224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out runs/pets
    """
    from convlens.imports import import_weights

    if data is None and (class_names is None or input_shape is None):
        raise ConvlensError("--data, or both --class-names and --input-shape, are needed")
    result = import_weights(
        weights,
        arch,
        run_dir,
        class_names=class_names,
        input_shape=_numbers(input_shape, "--input-shape", int),
        mean=_numbers(mean, "--mean"),
        std=_numbers(std, "--std"),
        data=data,
        overwrite=overwrite,
    )
    if as_json:
        return print_json(result.to_json())
    prep = result.preprocessing
    normalized = (
        f"mean {', '.join(f'{v:g}' for v in prep.mean)}, std {', '.join(f'{v:g}' for v in prep.std)} ({prep.source})"
        if prep.mean is not None
        else prep.source
    )
    for line in (
        f"wrote {printable(result.checkpoint.parent)}: {result.arch}, {result.loaded} tensors loaded from "
        f"{printable(weights.name)}",
        f"  classes        {', '.join(printable(n) for n in result.class_names)}",
        f"  input          {'x'.join(map(str, prep.input_shape))} (C x H x W), pixels in [0, 1]",
        f"  normalization  {normalized}",
    ):
        out.print(line, markup=False, soft_wrap=True)
    return None
