"""The learning playground, headless: `convlens playground DATASET`."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import StepProgress, err, out, print_json
from convlens.errors import ConvlensError

STRIP_FRAMES = {".png": 6, ".gif": 24}  # a strip one can read side by side; a GIF that moves smoothly


def parse_hidden(text: str) -> tuple[int, ...]:
    """``8,8`` → (8, 8); ``0`` or an empty string → no hidden layer."""
    if text.strip() in ("", "0"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConvlensError(
            f"--hidden: expected neurons per layer separated by commas, e.g. 8,8; got {text!r}"
        ) from None


def parse_features(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@app.command()
def playground(
    dataset: str = typer.Argument(
        ...,
        help="spiral, xor, circle or gauss (2-D points, two classes); plane or multi-gauss "
        "(regression: a real target per point).",
    ),
    hidden: str = typer.Option(
        "8,8,8",
        "--hidden",
        help="Neurons per hidden layer, comma-separated: 0 to 6 layers of 1 to 8 (0: none).",
    ),
    activation: str = typer.Option("tanh", "--activation", help="relu, tanh, sigmoid or linear."),
    features: str = typer.Option(
        "x1,x2", "--features", help="Inputs, comma-separated: x1, x2, x1sq, x2sq, x1x2, sinx1, sinx2."
    ),
    lr: float = typer.Option(0.01, "--lr", help="Adam's learning rate (above 0, at most 10)."),
    epochs: int = typer.Option(200, "--epochs", "-e", help="Passes over the training points."),
    batch_size: int = typer.Option(10, "--batch-size", help="Points per gradient step (1 to 100)."),
    noise: float = typer.Option(0.0, "--noise", help="Noise in percent, 0 to 50: the classes overlap more."),
    train_percent: float = typer.Option(
        50.0, "--train-percent", help="Share of the 500 points to train on, 10 to 90."
    ),
    regularization: str = typer.Option("none", "--regularization", help="none, l1 or l2 (on the weights)."),
    regularization_rate: float = typer.Option(
        0.0, "--regularization-rate", help="Weight of the penalty, 0 to 10."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the points, their split, the initial weights and batches."
    ),
    out_file: Path = typer.Option(
        None, "--out", "-o", help="PNG of the final decision boundary (default: runs/playground/DATASET.png)."
    ),
    strip: Path = typer.Option(
        None, "--strip", help="Also write the boundary as training went on: a .png strip or an animated .gif."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object to stdout instead of a summary."
    ),
) -> None:
    """Train a small fully connected network on 2-D points and draw its decision boundary.

    The same network as the explorer's "Learning playground" tab; the defaults solve every
    data set (spiral: at least 90 % test accuracy; xor, circle, gauss: at least 95 %). plane
    and multi-gauss regress: the output is the predicted value (linear), the loss the mean
    squared error, and the picture the value over the plane from -1 (blue) to 1 (red).

    Examples:

      convlens playground spiral --strip runs/playground/spiral.gif

      convlens playground circle --hidden 0 --features x1sq,x2sq --json

      convlens playground multi-gauss --hidden 8,8 --activation relu
    """
    from convlens.playground2d import DATASETS, PLANE, PlaygroundConfig, check_config, check_epochs, train
    from convlens.views.plots import save_png
    from convlens.views.plots.playground2d import boundary_gif, boundary_strip, decision_boundary

    if dataset not in DATASETS:
        raise ConvlensError(f"DATASET {dataset!r} is not one of {', '.join(DATASETS)}")
    if strip is not None and strip.suffix.lower() not in STRIP_FRAMES:
        raise ConvlensError(f"--strip must end in .png or .gif, got {str(strip)!r}")
    config = check_config(
        PlaygroundConfig(
            dataset=dataset,
            noise=noise,
            train_percent=train_percent,
            seed=seed,
            features=parse_features(features),
            hidden=parse_hidden(hidden),
            activation=activation,
            lr=lr,
            regularization=regularization,
            regularization_rate=regularization_rate,
            batch_size=batch_size,
        )
    )
    check_epochs(epochs)  # before the progress bar: an error stays one line
    frames = STRIP_FRAMES[strip.suffix.lower()] if strip is not None else 0
    with StepProgress(f"playground {dataset}") as bar:
        result = train(config, epochs, frames=frames, progress=bar)
    points = result.trainer.points
    out_file = out_file or Path("runs") / "playground" / f"{dataset}.png"
    files = {"boundary": str(save_png(decision_boundary(result.final, points, PLANE), out_file))}
    if strip is not None and strip.suffix.lower() == ".gif":
        files["strip"] = str(boundary_gif(result.frames, points, PLANE, strip))
    elif strip is not None:
        files["strip"] = str(save_png(boundary_strip(result.frames, points, PLANE), strip))
    summary = {**result.summary(), "files": files}
    if as_json:
        print_json(summary)
        return
    if "test_accuracy" in summary:
        scores = f"test accuracy {100 * summary['test_accuracy']:.1f} %"
        losses = f"loss {summary['train_loss']:.3f} train, {summary['test_loss']:.3f} test"
    else:  # a regression: the squared error is the score
        scores = f"test MSE {summary['test_loss']:.4f}"
        losses = f"MSE {summary['train_loss']:.4f} train"
    out.print(
        f"[bold]{dataset}[/]: {scores} after {summary['epochs']} epochs ({summary['seconds']:.1f} s); {losses}",
        soft_wrap=True,
    )
    err.print("   ".join(f"{name}: {path}" for name, path in files.items()))
