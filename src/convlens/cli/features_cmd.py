"""The `features` command: what each channel looks for, drawn from convlens.inspect's feature visualization."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.inspect_cmds import parse_ints
from convlens.cli.render import StepProgress, err, out, print_json
from convlens.errors import ConvlensError

LINEAR_STAGE = (
    "{stage} is linear in the pixels, so the input that excites one of its units most is the sign "
    "pattern of its kernel: 1 where the weight is positive, 0 where negative (the whole-image "
    "optimum, --mean, would be a nearly flat square)"
)


@app.command()
def features(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    stage: str = typer.Option(
        ..., "--stage", help="Stage whose channels to visualize (or softmax: classes)."
    ),
    channels: str = typer.Option(
        None, "--channels", help="Comma-separated channels (default: all, up to 64)."
    ),
    out_dir: Path = typer.Option(
        None, "--out", "-o", help="Folder for features-STAGE.png (default: RUN_DIR/features)."
    ),
    steps: int = typer.Option(256, "--steps", help="Optimization steps."),
    top_k: int = typer.Option(
        6, "--top-k", "-k", help="Test images per channel that excite it most (0: none)."
    ),
    unit: bool | None = typer.Option(
        None,
        "--unit/--mean",
        help="--unit: optimize the centre unit of each channel's map, shown cropped to its receptive "
        "field beside the best test patch (units-STAGE.png); --mean: the channel's mean over the "
        "whole image (features-STAGE.png). Default: --unit for a stage linear in the pixels (conv1: "
        "its unit optimum is the kernel's sign pattern, its mean's a nearly flat square), --mean "
        "otherwise.",
        show_default=False,
    ),
    regularised: bool = typer.Option(
        False,
        "--regularised",
        help="A legible picture rather than the strongest: random start, jitter, scale and rotation "
        "at every step; its activation is shown beside the best test image's.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print activations, top image indices and the file."),
) -> None:
    """What each channel looks for: an optimized image per channel, next to the test images that excite it most.

    The optimized image starts from each channel's best test image among others, so it never
    ends below it; a dead channel (no test image turns it on) is labelled dead. A stage linear in
    the pixels (conv1) shows what one unit responds to (--unit) unless --mean or --regularised.

    Examples:

      convlens features runs/mnist --stage relu2          (writes runs/mnist/features/features-relu2.png)

      convlens features runs/mnist --stage conv2 --channels 0,1,2,3 --out features/

      convlens features runs/mnist --stage conv1   (each kernel's sign pattern: what one unit detects; units-conv1.png)

      convlens features runs/mnist --stage conv1 --mean   (the whole-image optimum: a nearly flat square per channel)

      convlens features runs/mnist --stage relu2 --channels 0,1,2,3 --regularised
    """
    from convlens.run import Run

    run = Run.open(run_dir)
    model = run.model
    chosen = None
    if channels is not None:
        chosen = list(parse_ints(channels, channels.count(",") + 1, "--channels", "channel numbers"))
    if top_k < 0:
        raise ConvlensError(f"--top-k: expected 0 or more, got {top_k}")
    if unit and regularised:
        raise ConvlensError("--unit and --regularised: pick one (a unit's optimum is not regularised)")
    if unit is None:  # a linear stage's channel optimum is nearly flat; its unit's is the kernel
        from convlens.inspect import is_affine_stage

        unit = not regularised and is_affine_stage(model, stage)
    if chosen is None:
        from convlens.inspect import receptive_field

        count = receptive_field(model, stage).output_shape[0]
        if count > 64:
            raise ConvlensError(f"stage {stage!r} has {count} channels; pick up to 64 with --channels")
        if unit:
            chosen = list(range(count))
    try:
        test_images = run.data()[0].test_images
    except ConvlensError as exc:
        test_images = None
        err.print(f"no test images: the training data is not available ({exc})", markup=False)
    if out_dir is None:
        out_dir = run.folder / "features"
    if unit:
        return _unit_features(model, stage, chosen, test_images, steps, out_dir, as_json)
    return _channel_features(model, stage, chosen, test_images, steps, top_k, regularised, out_dir, as_json)


def _channel_features(model, stage, chosen, test_images, steps, top_k, regularised, out_dir, as_json) -> None:
    from convlens.inspect import feature_visualization
    from convlens.inspect.analyses import top_activating_pictures
    from convlens.views import plots

    with StepProgress(f"features {stage}") as bar:
        visualization = feature_visualization(
            model, stage, chosen, steps=steps, progress=bar, images=test_images, regularised=regularised
        )
    top = images = None
    if top_k and test_images is not None:
        found = top_activating_pictures(model, test_images, stage, visualization.channels, top_k)
        top, images = found.top, found.pixels
    dead = None if top is None else [top.dead_label(row) for row in range(len(top.channels))]
    figure = plots.feature_visualization(visualization, images, None if top is None else top.scores, dead)
    path = plots.save_png(figure, out_dir / f"features-{stage}.png")
    best = visualization.best_image_activation
    if as_json:
        return print_json(
            {
                "stage": stage,
                "channels": visualization.channels,
                "activation": visualization.activation.tolist(),
                "best_image_activation": None if best is None else best.tolist(),
                "regularised": visualization.regularised,
                "top_images": None if top is None else top.indices.tolist(),
                "top_scores": None if top is None else top.scores.tolist(),
                "dead": dead,
                "closed_form": visualization.closed_form,
                "file": str(path),
            }
        )
    for row, channel in enumerate(visualization.channels):
        label = dead[row] if dead else None
        if label:
            out.print(f"channel {channel}: {label}", markup=False)
        elif regularised and best is not None:
            out.print(
                f"channel {channel}: {float(visualization.activation[row]):.3g} "
                f"(best test image: {float(best[row]):.3g})",
                markup=False,
            )
    out.print(f"wrote {path}")
    return None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _unit_features(model, stage, chosen, test_images, steps, out_dir, as_json) -> None:
    from convlens.data import to_float
    from convlens.inspect import unit_optimum
    from convlens.views import plots
    from convlens.views.plots.unit_optima import unit_optima

    with StepProgress(f"unit optima {stage}") as bar:
        optima = []
        for done, channel in enumerate(chosen):
            optima.append(unit_optimum(model, stage, channel, images=test_images, steps=steps))
            bar(done + 1, len(chosen), f"{stage}: channel {channel}")
    best = None
    if test_images is not None:
        best = to_float(test_images[[optimum.best_image_index for optimum in optima]])
    path = plots.save_png(unit_optima(optima, best), out_dir / f"units-{stage}.png")
    if as_json:
        keys = (
            "channel",
            "cell",
            "window",
            "activation",
            "best_image_activation",
            "best_image_index",
            "dead",
        )
        # activations to 4 decimals: float32 carries no more that means anything here
        rows = [
            {
                key: _rounded(getattr(optimum, key)) if "activation" in key else getattr(optimum, key)
                for key in keys
            }
            for optimum in optima
        ]
        return print_json(
            {"stage": stage, "closed_form": optima[0].closed_form, "units": rows, "file": str(path)}
        )
    if optima[0].closed_form:
        out.print(LINEAR_STAGE.format(stage=stage), markup=False)
    for optimum in optima:
        top, left, bottom, right = optimum.window
        line = f"channel {optimum.channel}: {optimum.activation:.3g} in rows {top}..{bottom - 1}, cols {left}..{right - 1}"
        if optimum.best_image_index is not None:
            line += f" (best test image #{optimum.best_image_index}: {optimum.best_image_activation:.3g})"
        out.print(line + (", dead on the test images" if optimum.dead else ""), markup=False)
    out.print(f"wrote {path}")
    return None
