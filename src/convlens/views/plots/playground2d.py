"""The learning playground's pictures: the decision boundary over the plane with the data
points, a strip of it as training went on, and the same strip as an animated GIF.

Colours follow the convention: P(class 1) on the diverging map centred on 0.5 (blue: class 0,
white: undecided, red: class 1), points in the same two colours, the 0.5 contour in black. A
regression's predicted value is on the same map from -1 (blue) through 0 (white) to 1 (red), its
points coloured by their target on it, and the 0 contour in black.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from matplotlib.figure import Figure

from convlens.views.plots.colours import SIGNED, Limits, colour_bar, show_map

CLASS_COLOURS = ("#2166ac", "#b2182b")  # class 0, class 1: the ends of the diverging map
PROBABILITY = Limits(0.0, 1.0, SIGNED, signed=True)  # 0.5, undecided, is white
VALUE = Limits(-1.0, 1.0, SIGNED, signed=True)  # the regression targets' range: 0 is white


def _scale(snapshot) -> tuple[Limits, float, str]:
    """The output's colour limits, the level its contour is drawn at, and what the colour shows."""
    if snapshot.task == "regression":
        return VALUE, 0.0, "predicted value"
    return PROBABILITY, 0.5, "P(class 1)"


def _contour(axis, snapshot, plane: float):
    """The decision boundary: where P(class 1) crosses 0.5 (a regression's value crosses 0)."""
    grid = torch.linspace(-plane, plane, snapshot.boundary.shape[0]).numpy()
    values = snapshot.boundary.numpy()
    level = _scale(snapshot)[1]
    if not values.min() < level < values.max():  # no crossing: matplotlib would warn of no contour
        return None
    return axis.contour(grid, grid[::-1], values, levels=[level], colors="black", linewidths=1)


def _title(snapshot) -> str:
    if snapshot.test_accuracy is None:
        return f"epoch {snapshot.epoch}: test MSE {snapshot.test_loss:.4f}"
    return f"epoch {snapshot.epoch}: test loss {snapshot.test_loss:.3f}, test accuracy {100 * snapshot.test_accuracy:.1f} %"


def _short_title(snapshot) -> str:
    if snapshot.test_accuracy is None:
        return f"epoch {snapshot.epoch}\ntest MSE {snapshot.test_loss:.3f}"
    return f"epoch {snapshot.epoch}\ntest acc {100 * snapshot.test_accuracy:.0f} %"


def _draw_boundary(axis, snapshot, points, plane: float, title: str):
    """One boundary map on ``axis`` with the training (white edge) and test (black edge) points."""
    limits = _scale(snapshot)[0]
    image = show_map(axis, snapshot.boundary, limits, alpha=0.75)  # lighter, so the points stand out
    image.set_extent((-plane, plane, -plane, plane))
    _contour(axis, snapshot, plane)
    for coordinates, labels, edge in (
        (points.train_points, points.train_labels, "white"),
        (points.test_points, points.test_labels, "black"),
    ):
        if snapshot.task == "regression":  # each point in its target's colour on the output's map
            colours = {"c": labels.numpy(), "cmap": SIGNED, "vmin": limits.vmin, "vmax": limits.vmax}
        else:
            colours = {"c": [CLASS_COLOURS[int(label)] for label in labels]}
        axis.scatter(coordinates[:, 0], coordinates[:, 1], s=9, edgecolors=edge, linewidths=0.5, **colours)
    axis.set_xlim(-plane, plane)
    axis.set_ylim(-plane, plane)
    axis.set_title(title, fontsize=9)
    return image


def decision_boundary(snapshot, points, plane: float, title: str = "") -> Figure:
    """P(class 1) (or the predicted value) over the plane after ``snapshot.epoch`` epochs, with
    the boundary and the points."""
    figure = Figure(figsize=(4.6, 3.9), layout="constrained")
    axis = figure.subplots()
    image = _draw_boundary(axis, snapshot, points, plane, title or _title(snapshot))
    limits, _, label = _scale(snapshot)
    colour_bar(figure, image, axis, label, limits)
    return figure


def boundary_strip(frames: list, points, plane: float) -> Figure:
    """The boundary at each of ``frames`` side by side: how training carved it."""
    figure = Figure(figsize=(2.1 * len(frames) + 0.8, 2.5), layout="constrained")
    axes = figure.subplots(1, len(frames), squeeze=False)[0]
    image = None
    for axis, snapshot in zip(axes, frames, strict=True):
        image = _draw_boundary(axis, snapshot, points, plane, _short_title(snapshot))
    limits, _, label = _scale(frames[-1])
    colour_bar(figure, image, list(axes), label, limits)
    return figure


def boundary_gif(frames: list, points, plane: float, path: str | Path, frame_ms: int = 150) -> Path:
    """The boundary at each of ``frames`` as one animated GIF (the last frame held longer).

    One figure is drawn, then only its map, contour and title change from frame to frame:
    several times faster than a new figure per frame."""
    from matplotlib.contour import ContourSet
    from PIL import Image

    from convlens.storage import atomic_write

    figure = decision_boundary(frames[0], points, plane)
    axis = figure.axes[0]
    image = axis.images[0]
    contour = next((c for c in axis.collections if isinstance(c, ContourSet)), None)
    pictures = []
    for snapshot in frames:
        image.set_data(snapshot.boundary.numpy())
        if contour is not None:
            contour.remove()
        contour = _contour(axis, snapshot, plane)
        axis.set_title(_title(snapshot), fontsize=9)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)  # no tight bbox: every frame the same size
        pictures.append(Image.open(buffer).convert("RGB"))
    durations = [frame_ms] * (len(pictures) - 1) + [frame_ms * 8]
    output = io.BytesIO()
    pictures[0].save(
        output, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0
    )
    path = Path(path)
    atomic_write(path, output.getvalue(), durable=False)
    return path
