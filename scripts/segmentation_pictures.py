"""The README's segmentation pictures, drawn from real runs with the library's own figures.

    python scripts/segmentation_pictures.py runs/scenes runs/portrait [--out docs/img]

Writes ``segmentation-scenes.png`` (test images | true mask | predicted mask, the report's
figure) and ``segmentation-portrait.png`` (test images | predicted foreground | portrait effect).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def scenes_figure(run_dir: Path, out: Path, count: int) -> None:
    from convlens import Run
    from convlens.data import to_float
    from convlens.views.plots.segmentation import mask_overlays

    run = Run.open(run_dir)
    dataset, _ = run.data()
    images = to_float(dataset.test_images[:count])
    with torch.no_grad():
        predicted = run.model.eval()(images).argmax(1)
    figure = mask_overlays(
        list(images),
        list(dataset.test_labels[:count]),
        list(predicted),
        [f"test image {index}" for index in range(count)],
        run.class_names,
    )
    figure.savefig(out / "segmentation-scenes.png", dpi=110)


def portrait_figure(run_dir: Path, out: Path, count: int) -> None:
    from matplotlib.figure import Figure

    from convlens import Run
    from convlens.data import to_float
    from convlens.inspect.portrait import portrait_effect

    run = Run.open(run_dir)
    dataset, _ = run.data()
    images = to_float(dataset.test_images[:count])
    with torch.no_grad():
        foreground = run.model.eval()(images).argmax(1) != 0
    figure = Figure(figsize=(2.0 * count, 6.2), layout="constrained")
    axes = figure.subplots(3, count, squeeze=False)
    for column in range(count):
        portrait = portrait_effect(images[column], foreground[column], "blur", 3)
        shown = (images[column], foreground[column].float().expand(3, -1, -1), portrait)
        for row, (picture, title) in enumerate(zip(shown, ("photo", "foreground", "portrait"), strict=True)):
            axes[row, column].imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if column == 0:
                axes[row, column].set_ylabel(title, fontsize=9)
    figure.savefig(out / "segmentation-portrait.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes_run", type=Path)
    parser.add_argument("portrait_run", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scenes_figure(args.scenes_run, args.out, args.count)
    portrait_figure(args.portrait_run, args.out, args.count)


if __name__ == "__main__":
    main()
