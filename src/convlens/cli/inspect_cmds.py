"""Inside-view commands: explain and convolve (features lives in features_cmd). Numbers come from convlens.inspect."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.explain_output import check_cam_stage, print_explanation, write_explanation
from convlens.cli.render import (
    err,
    grid_text,
    help_from,
    number,
    out,
    print_json,
    shift_warning,
    steps_text,
)
from convlens.cli.segment_cmds import PIXEL_HELP
from convlens.errors import ConvlensError

IMAGE_HELP = (
    "Image or DICOM file, or a built-in picture: smiley, digits:N, astronaut, chelsea, coffee, camera, xray."
)


def parse_ints(text: str, count: int, option: str, names: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        plural = "" if count == 1 else "s"
        raise ConvlensError(f"{option}: expected {names} as {count} whole number{plural}, got {text!r}")
    return values


def _method_help() -> str:
    """The attribution methods, from the registry (a registered plugin too)."""
    from convlens.inspect import ATTRIBUTIONS

    return (
        f"Attribution method: {', '.join(ATTRIBUTIONS.names())} (see `convlens methods`). Default: the one "
        "measured most faithful on this run (measured once, stored in RUN_DIR/faithfulness.json)."
    )


@app.command(cls=help_from(method=_method_help))
def explain(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    image: str = typer.Argument(..., help=IMAGE_HELP),
    out_dir: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for the PNGs (default: RUN_DIR/explain; with --at nothing is written).",
    ),
    stage: str = typer.Option(
        None,
        "--stage",
        help="Only this stage's feature maps and filters (and --at's cell); the attribution stays where it "
        "is (see --cam-stage).",
    ),
    cam_stage: str = typer.Option(
        None,
        "--cam-stage",
        help="Stage Grad-CAM looks at (default: the measured default, else the last rectified stage; with no "
        "--method: Grad-CAM). Rectified stages (after a ReLU, e.g. relu2, pool2) come first; a stage before "
        "a ReLU (conv1, conv2) weighs evidence the network throws away. A wrong name lists them.",
    ),
    target: str = typer.Option(
        None, "--target", help="Class index or name to explain (default: the prediction)."
    ),
    method: str = typer.Option(
        None, "--method", help="Attribution method (default: the one measured most faithful on this run)."
    ),
    at: str = typer.Option(
        None,
        "--at",
        help="C,ROW,COL (channel, row, column; one index for flat stages): print the arithmetic of "
        "this cell of --stage to the terminal, writing no files.",
    ),
    invert: bool = typer.Option(
        False,
        "--invert",
        help="Explain 1 − pixels: dark-on-light images (a pen digit on paper) for a light-on-dark model.",
    ),
    pixel: str = typer.Option(None, "--pixel", help=PIXEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Show what a trained model computes for one image: feature maps, filters, an attribution map, probabilities.

    With no --method the attribution is the method measured most faithful on this run (deletion
    against random order, weight randomization; measured once, stored with the run), and the output
    says why it was chosen, or that no method passed.

    A segmentation run is explained one output pixel at a time: --pixel ROW,COL.

    An image far from the training images (a photo for a digit model, or inverted colours)
    gets a one-line warning on stderr; --json carries the check as "shift".

    Examples:

      convlens explain runs/mnist digit.png                 (PNGs in runs/mnist/explain/)

      convlens explain runs/mnist digit.png --out explain/

      convlens explain runs/mnist digit.png --stage conv1 --at 3,10,12

      convlens explain runs/mnist digit.png --method grad-cam --cam-stage relu2

      convlens explain runs/scenes photo.png --pixel 20,31 --out explain/
    """
    from convlens.inspect import ATTRIBUTIONS, SOFTMAX, as_dict, cell_arithmetic, find_stage
    from convlens.run import Run
    from convlens.views.arithmetic import arithmetic_steps

    if method is not None:
        ATTRIBUTIONS.get(method)  # an unknown method fails before anything is loaded
    run = Run.open(run_dir)
    model = run.model
    if run.task == "segmentation":
        if pixel is None:
            raise ConvlensError(
                f"{run.name} is a segmentation run (a class per pixel): explain one pixel with --pixel ROW,COL"
            )
        from convlens.cli.segment_cmds import explain_segmentation_pixel

        if stage is not None and cam_stage is None:
            raise ConvlensError(
                "--stage: a pixel's explanation draws no feature maps; name Grad-CAM's stage with --cam-stage"
            )
        return explain_segmentation_pixel(run, image, pixel, out_dir, cam_stage, target, invert, as_json)
    if pixel is not None:
        raise ConvlensError(f"--pixel: {run.name} is a classification run (a class per image); drop --pixel")
    if stage is not None and stage != SOFTMAX:
        find_stage(model, stage)  # an unknown name fails first, listing the valid ones
    cam_stage = check_cam_stage(model, method, cam_stage)
    if cam_stage is not None and method is None:
        method = "grad-cam"  # a stage was named: the method that looks at it
    found = run.input(image, invert=invert)  # the one input pipeline, as predict and the explorer
    pixels, shift = found.pixels, found.shift_json()  # (C, H, W)
    shift_warning(found.source, shift, invert)
    class_names = run.class_names
    target_index = run.class_index(target)  # checked against the classes before any file is written
    if at is not None:
        if stage is None:
            raise ConvlensError("--at needs --stage: the stage whose cell to explain (e.g. --stage conv1)")
        channel, row, col = _cell(at)
        cell = cell_arithmetic(model, pixels, stage, channel, row, col)
        steps = arithmetic_steps(cell, class_names, max_channels=None)  # the terminal shows every channel
        if as_json:
            return print_json({**as_dict(cell), "steps": steps, "shift": shift})
        out.print(steps_text(steps), markup=False, soft_wrap=True)
        return None
    if out_dir is None:
        out_dir = run.folder / "explain"
    summary = write_explanation(run, pixels, image, out_dir, stage, target_index, method, cam_stage)
    summary["shift"] = shift
    if as_json:
        return print_json(summary)
    print_explanation(summary, model)
    return None


def _cell(text: str) -> tuple[int, int, int]:
    """``--at``: C,ROW,COL, or one unit index for a flat stage (fc, flatten). The error names
    both counts: "5,3" is neither."""
    if text.count(",") == 2:
        return parse_ints(text, 3, "--at", "C,ROW,COL")
    if "," not in text:
        (unit,) = parse_ints(text, 1, "--at", "one unit index (a flat stage) or C,ROW,COL")
        return unit, 0, 0
    raise ConvlensError(
        f"--at: expected C,ROW,COL as 3 whole numbers (or 1, a unit index, for a flat stage), got {text!r}"
    )


@app.command()
def convolve(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    kernel: str = typer.Option(
        "edge",
        "--kernel",
        help="edge, sobel-x, sobel-y, laplacian, blur, sharpen, identity, or a matrix like '1,0,-1;2,0,-2' "
        "(at most 7x7).",
    ),
    stride: int = typer.Option(1, "--stride", help="Step between kernel positions."),
    padding: int = typer.Option(0, "--padding", help="Rings of zeros added around the image (0..7)."),
    at: str = typer.Option(
        None,
        "--at",
        help="ROW,COL: show how this output cell is computed (no C: the picture is one grayscale "
        "channel; explain's --at is C,ROW,COL).",
    ),
    out_file: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="PNG with the input, kernel and feature map (default: none, print only; no run folder here).",
    ),
    as_json: bool = typer.Option(False, "--json", help='Print {"output": [[...]], "at": {...}}.'),
) -> None:
    """Slide a kernel over a picture by hand and see the feature map (and one cell's arithmetic).

    The picture is converted to one grayscale channel, so cells are ROW,COL.

    Examples:

      convlens convolve smiley --kernel edge --at 2,2 --out smiley-edges.png

      convlens convolve xray --kernel sobel-x --stride 2 --out xray-edges.png
    """
    from convlens.inspect import as_dict, load_picture
    from convlens.inspect import convolve as run_convolution
    from convlens.views.arithmetic import convolution_steps

    if out_file is not None and out_file.suffix.lower() != ".png":
        raise ConvlensError(f"--out: expected a .png file name, got {str(out_file)!r}")
    result = run_convolution(load_picture(image), kernel, stride=stride, padding=padding)
    cell = result.cell(*parse_ints(at, 2, "--at", "ROW,COL")) if at is not None else None
    written = None
    if out_file is not None:
        from convlens.views import plots

        figure = plots.convolution(result, (cell.row, cell.col) if cell else None)
        written = plots.save_png(figure, out_file)
    if as_json:
        return print_json(
            {
                "output": result.output.tolist(),
                "at": as_dict(cell) if cell is not None else None,
                "file": str(written) if written else None,
            }
        )
    height, width = result.output.shape
    out.print(
        f"{tuple(result.image.shape)} image * {tuple(result.kernel.shape)} kernel "
        f"(stride {stride}, padding {padding}) → {height}x{width} feature map, "
        f"values {number(float(result.output.min()))}..{number(float(result.output.max()))}",
        soft_wrap=True,
    )
    if max(height, width) <= 16 and cell is None:
        out.print(grid_text(result.output.tolist()), markup=False)
    if cell is not None:
        out.print(steps_text(convolution_steps(cell)), markup=False, soft_wrap=True)
    if written:
        err.print(f"wrote {written}")
    return None
