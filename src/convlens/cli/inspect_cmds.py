"""Inside-view commands: explain, convolve, features. Numbers come from convlens.inspect; this draws them."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli import app
from convlens.cli.render import err, out, print_json
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
        raise ConvlensError(f"{option}: expected {names} as {count} whole numbers, got {text!r}")
    return values


def parse_target(text: str | None, class_names: list[str]) -> int | None:
    """A class index or a class name; range is checked where the model's outputs are known."""
    if text is None:
        return None
    if text in class_names:
        return class_names.index(text)
    try:
        return int(text)
    except ValueError:
        raise ConvlensError(
            f"--target: {text!r} is neither a class index nor a class name ({', '.join(class_names)})"
        ) from None


def _fmt(value: float) -> str:
    return f"{value + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0


def _grid_text(values, padding=None) -> str:
    rows = []
    for r, row in enumerate(values.tolist()):
        cells = []
        for c, v in enumerate(row):
            cells.append(f"{'pad' if padding is not None and bool(padding[r][c]) else _fmt(v):>8}")
        rows.append(" ".join(cells))
    return "\n".join(rows)


def arithmetic_lines(cell) -> list[str]:
    """A cell's arithmetic as plain text lines, one step per line."""
    where = f"{cell.stage} ({cell.kind}) cell channel {cell.channel}, row {cell.row}, col {cell.col}"
    lines = [where]
    if cell.kind == "conv":
        for index, channel in enumerate(cell.input_channels):
            lines += [
                f"input channel {channel}: patch rows {cell.rows[0]}..{cell.rows[-1]}, cols {cell.cols[0]}..{cell.cols[-1]}",
                _grid_text(cell.patch[index], cell.padding[index].tolist()),
                "x kernel",
                _grid_text(cell.kernel[index]),
                f"= products, summing to {_fmt(float(cell.channel_sums[index]))}",
                _grid_text(cell.products[index]),
            ]
        sums = " + ".join(_fmt(float(s)) for s in cell.channel_sums[:16])
        more = " + ..." if len(cell.channel_sums) > 16 else ""
        lines.append(f"total = {sums}{more} + bias {_fmt(cell.bias)} = {_fmt(cell.total)}")
    elif cell.kind == "relu":
        lines.append(f"max(0, {_fmt(cell.before)}) = {_fmt(cell.after)}")
    elif cell.kind == "max-pool":
        lines += [_grid_text(cell.window, cell.padding.tolist())]
        lines.append(f"max = {_fmt(cell.total)} at input row {cell.winner[0]}, col {cell.winner[1]}")
    elif cell.kind == "avg-pool":
        lines += [_grid_text(cell.window, cell.padding.tolist())]
        lines.append(f"sum {_fmt(cell.sum)} / {cell.divisor:g} = {_fmt(cell.total)}")
    elif cell.kind == "batchnorm":
        lines.append(
            f"({_fmt(cell.before)} - mean {_fmt(cell.mean)}) / sqrt(var {_fmt(cell.var)} + {cell.eps:g}) "
            f"= {_fmt(cell.normalized)}; x gamma {_fmt(cell.gamma)} + beta {_fmt(cell.beta)} = {_fmt(cell.total)}"
        )
    elif cell.kind == "normalize":
        lines.append(
            f"({_fmt(cell.before)} - mean {_fmt(cell.mean)}) / std {_fmt(cell.std)} = {_fmt(cell.total)}"
        )
    elif cell.kind == "flatten":
        lines.append(f"value {_fmt(cell.total)} from input (channel, row, col) = {cell.source}")
    elif cell.kind == "linear":
        lines.append("largest contributions (input x weight):")
        for i in cell.top_inputs:
            lines.append(
                f"  input {i}: {_fmt(float(cell.inputs[i]))} x {_fmt(float(cell.weights[i]))} = {_fmt(float(cell.products[i]))}"
            )
        lines.append(
            f"sum of all {len(cell.inputs)} products {_fmt(cell.total - cell.bias)} + bias {_fmt(cell.bias)} = {_fmt(cell.total)}"
        )
    elif cell.kind == "softmax":
        lines.append("logits: " + ", ".join(_fmt(v) for v in cell.logits.tolist()))
        lines.append("exp(logit - max): " + ", ".join(_fmt(v) for v in cell.exp.tolist()))
        lines.append(f"sum = {_fmt(cell.exp_sum)}")
        lines.append(
            f"p(class {cell.channel}) = {_fmt(float(cell.exp[cell.channel]))} / {_fmt(cell.exp_sum)} = {_fmt(cell.total)}"
        )
    lines.append(f"the layer's own output: {_fmt(cell.output)}")
    return lines


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    image: str = typer.Argument(..., help=IMAGE_HELP),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for the PNGs (required unless --at)."),
    stage: str = typer.Option(None, "--stage", help="Only this stage's feature maps; Grad-CAM looks here."),
    target: str = typer.Option(
        None, "--target", help="Class index or name to explain (default: the prediction)."
    ),
    at: str = typer.Option(None, "--at", help="C,ROW,COL: print the arithmetic of this cell of --stage."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Show what a trained model computes for one image: feature maps, filters, Grad-CAM, probabilities.

    Examples:

      convlens explain runs/mnist digit.png --out explain/

      convlens explain runs/mnist digit.png --stage conv1 --at 3,10,12
    """
    from convlens.checkpoint import load_checkpoint
    from convlens.inspect import SOFTMAX, as_dict, cell_arithmetic, find_stage, picture_for_model

    model, meta = load_checkpoint(run_dir)
    if stage is not None and stage != SOFTMAX:
        find_stage(model, stage)  # an unknown name fails first, listing the valid ones
    pixels = picture_for_model(image, tuple(meta["input_shape"]))  # (C, H, W)
    class_names = meta["class_names"]
    target_index = parse_target(target, class_names)
    if at is not None:
        if stage is None:
            raise ConvlensError("--at needs --stage: the stage whose cell to explain (e.g. --stage conv1)")
        channel, row, col = (
            parse_ints(at, 3, "--at", "C,ROW,COL") if "," in at and at.count(",") == 2 else _flat_cell(at)
        )
        cell = cell_arithmetic(model, pixels, stage, channel, row, col)
        if as_json:
            return print_json(as_dict(cell))
        out.print("\n".join(arithmetic_lines(cell)), markup=False, soft_wrap=True)
        return None
    if out_dir is None:
        raise ConvlensError(
            "--out: give a folder for the pictures (or use --at to print one cell's arithmetic)"
        )
    summary = _write_explanation(model, meta, pixels, image, out_dir, stage, target_index)
    if as_json:
        return print_json(summary)
    _print_explanation(summary, class_names)
    return None


def _flat_cell(text: str) -> tuple[int, int, int]:
    (unit,) = parse_ints(text, 1, "--at", "C,ROW,COL (or one unit index for flat stages)")
    return unit, 0, 0


def _write_explanation(model, meta, pixels, image, out_dir: Path, stage, target) -> dict:
    from convlens.inspect import activations, conv_filters, grad_cam, receptive_fields
    from convlens.inspect import figures as fig
    from convlens.inspect._stages import find_stage, is_spatial_stage

    class_names = meta["class_names"]
    result = activations(model, pixels)
    files = [fig.input_figure(pixels, out_dir / "input.png", f"input: {Path(str(image)).name}")]
    for entry in result.stages:
        if entry.output.ndim == 3 and (stage is None or entry.name == stage):
            files.append(
                fig.feature_maps_figure(
                    entry.output, entry.name, entry.kind, out_dir / f"stage-{entry.name}.png"
                )
            )
    for filters in (
        conv_filters(model)
        if stage is None
        else [f for f in conv_filters(model) if f.stage.split(".")[0] == stage]
    ):
        files.append(
            fig.filters_figure(filters.weight, filters.stage, out_dir / f"filters-{filters.stage}.png")
        )
    cam_stage = stage if stage is not None and is_spatial_stage(find_stage(model, stage)) else None
    files.append(fig.probabilities_figure(result.probabilities, class_names, out_dir / "probabilities.png"))
    attribution = None
    if any(is_spatial_stage(m) for _, m in model.stages()):
        attribution = grad_cam(model, pixels, target=target, stage=cam_stage)
        name = class_names[attribution.target]
        files.append(fig.attribution_figure(pixels, attribution, name, out_dir / "gradcam.png"))
    elif target is not None:
        from convlens.inspect import saliency

        saliency(model, pixels, target=target)  # checks the target like Grad-CAM would
    predicted = int(result.probabilities.argmax())
    return {
        "prediction": {
            "class": class_names[predicted],
            "index": predicted,
            "probability": float(result.probabilities[predicted]),
        },
        "probabilities": {name: float(p) for name, p in zip(class_names, result.probabilities, strict=True)},
        "grad_cam": None
        if attribution is None
        else {"stage": attribution.stage, "target": attribution.target},
        "stages": [
            {
                "stage": f.stage,
                "kind": f.kind,
                "output_shape": list(f.output_shape),
                "parameters": f.parameters,
                "receptive_field": "whole image" if f.whole_image else f"{f.size[0]}x{f.size[1]}",
                "jump": None if f.whole_image else list(f.jump),
            }
            for f in receptive_fields(model)
        ],
        "files": [str(p) for p in files],
    }


def _print_explanation(summary: dict, class_names: list[str]) -> None:
    from rich.table import Table

    table = Table(title="stages", title_justify="left")
    for column in ("stage", "kind", "output", "parameters", "receptive field", "jump"):
        table.add_column(column, justify="right" if column in ("parameters", "jump") else "left")
    for row in summary["stages"]:
        table.add_row(
            row["stage"], row["kind"], "x".join(map(str, row["output_shape"])), f"{row['parameters']:,}",
            row["receptive_field"], "x".join(map(str, row["jump"])) if row["jump"] else "-",
        )  # fmt: skip
    out.print(table)
    p = summary["prediction"]
    out.print(f"prediction: [bold]{p['class']}[/] ({100 * p['probability']:.1f} %)")
    out.print(f"wrote {len(summary['files'])} pictures to {Path(summary['files'][0]).parent}")


@app.command()
def convolve(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    kernel: str = typer.Option(
        "edge",
        "--kernel",
        "-k",
        help="edge, sobel-x, sobel-y, laplacian, blur, sharpen, identity, or a matrix like '1,0,-1;2,0,-2'.",
    ),
    stride: int = typer.Option(1, "--stride", help="Step between kernel positions."),
    padding: int = typer.Option(0, "--padding", help="Rings of zeros added around the image."),
    at: str = typer.Option(None, "--at", help="ROW,COL: show how this output cell is computed."),
    out_file: Path = typer.Option(None, "--out", "-o", help="PNG with the input, kernel and feature map."),
    as_json: bool = typer.Option(False, "--json", help='Print {"output": [[...]], "at": {...}}.'),
) -> None:
    """Slide a kernel over a picture by hand and see the feature map (and one cell's arithmetic).

    Examples:

      convlens convolve smiley --kernel edge --at 2,2 --out smiley-edges.png

      convlens convolve xray --kernel sobel-x --stride 2 --out xray-edges.png
    """
    from convlens.inspect import convolve as run_convolution
    from convlens.inspect import load_picture

    if out_file is not None and out_file.suffix.lower() != ".png":
        raise ConvlensError(f"--out: expected a .png file name, got {str(out_file)!r}")
    result = run_convolution(load_picture(image), kernel, stride=stride, padding=padding)
    cell = result.cell(*parse_ints(at, 2, "--at", "ROW,COL")) if at is not None else None
    written = None
    if out_file is not None:
        from convlens.inspect import figures

        written = figures.convolution_figure(result, out_file, (cell.row, cell.col) if cell else None)
    if as_json:
        at_json = None
        if cell is not None:
            at_json = {
                "row": cell.row,
                "col": cell.col,
                "patch": cell.patch.tolist(),
                "padding": cell.padding.tolist(),
                "kernel": cell.kernel.tolist(),
                "products": cell.products.tolist(),
                "sum": cell.sum,
            }
        return print_json(
            {"output": result.output.tolist(), "at": at_json, "file": str(written) if written else None}
        )
    height, width = result.output.shape
    out.print(
        f"{tuple(result.image.shape)} image * {tuple(result.kernel.shape)} kernel "
        f"(stride {stride}, padding {padding}) → {height}x{width} feature map, "
        f"values {_fmt(float(result.output.min()))}..{_fmt(float(result.output.max()))}",
        soft_wrap=True,
    )
    if max(height, width) <= 16 and cell is None:
        out.print(_grid_text(result.output), markup=False)
    if cell is not None:
        out.print(
            "\n".join(
                [
                    f"cell ({cell.row}, {cell.col}): image rows {cell.rows[0]}..{cell.rows[-1]}, cols {cell.cols[0]}..{cell.cols[-1]}",
                    "patch", _grid_text(cell.patch, cell.padding.tolist()), "x kernel", _grid_text(cell.kernel),
                    "= products", _grid_text(cell.products), f"sum = {_fmt(cell.sum)}",
                ]
            ),
            markup=False,
        )  # fmt: skip
    if written:
        err.print(f"wrote {written}")
    return None


@app.command()
def features(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    stage: str = typer.Option(
        ..., "--stage", help="Stage whose channels to visualize (or softmax: classes)."
    ),
    channels: str = typer.Option(
        None, "--channels", help="Comma-separated channels (default: all, up to 64)."
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for features-STAGE.png."),
    steps: int = typer.Option(256, "--steps", help="Optimization steps."),
    top_k: int = typer.Option(6, "--top-k", help="Test images per channel that excite it most (0: none)."),
    as_json: bool = typer.Option(False, "--json", help="Print activations, top image indices and the file."),
) -> None:
    """What each channel looks for: an optimized image per channel, next to the test images that excite it most.

    Example:  convlens features runs/mnist --stage conv2 --channels 0,1,2,3 --out features/
    """
    from convlens.checkpoint import checkpoint_data, load_checkpoint
    from convlens.data import to_float
    from convlens.inspect import feature_visualization, top_activating_images
    from convlens.inspect import figures as fig

    model, meta = load_checkpoint(run_dir)
    chosen = None
    if channels is not None:
        chosen = list(parse_ints(channels, channels.count(",") + 1, "--channels", "channel numbers"))
    if top_k < 0:
        raise ConvlensError(f"--top-k: expected 0 or more, got {top_k}")
    if chosen is None:
        from convlens.inspect import receptive_field

        count = receptive_field(model, stage).output_shape[0]
        if count > 64:
            raise ConvlensError(f"stage {stage!r} has {count} channels; pick up to 64 with --channels")
    visualization = feature_visualization(model, stage, chosen, steps=steps)
    top = images = None
    if top_k:
        try:
            dataset, _ = checkpoint_data(meta)
        except ConvlensError as exc:
            err.print(f"no top images: the training data is not available ({exc})", markup=False)
        else:
            top = top_activating_images(model, dataset.test_images, stage, visualization.channels, k=top_k)
            images = to_float(dataset.test_images[top.indices.flatten()]).view(
                *top.indices.shape, *meta["input_shape"]
            )
    path = fig.feature_visualization_figure(
        visualization, images, None if top is None else top.scores, out_dir / f"features-{stage}.png"
    )
    if as_json:
        return print_json(
            {
                "stage": stage,
                "channels": visualization.channels,
                "activation": visualization.activation.tolist(),
                "top_images": None if top is None else top.indices.tolist(),
                "top_scores": None if top is None else top.scores.tolist(),
                "file": str(path),
            }
        )
    out.print(f"wrote {path}")
    return None
