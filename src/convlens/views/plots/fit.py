"""Text that fits the room it is given, measured from its extent: shrink to a floor, then wrap.

A tile's title is as wide as the tile: cutting a class name to fit ("astronau") misnames the
class, and letting it run on writes it over the next tile's. Every character is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

MIN_FONT_SIZE = 7.0  # pt; 10.7 px in a PNG at 110 dpi shown 1:1, the smallest text convlens draws
STEP = 0.5  # pt between the sizes tried


def renderer(figure: Figure):
    """The Agg renderer that measures ``figure``'s text (no pyplot, no window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    return canvas.get_renderer()


def text_width(drawer, text: str, fontsize: float) -> float:
    """Width in display pixels of the widest line of ``text`` at ``fontsize`` points."""
    font = FontProperties(size=fontsize)
    return max(drawer.get_text_width_height_descent(line, font, ismath=False)[0] for line in text.split("\n"))


def fit_text(
    drawer, text: str, width: float, fontsize: float, min_size: float = MIN_FONT_SIZE
) -> tuple[str, float]:
    """(``text``, size): the largest size in [``min_size``, ``fontsize``] at which every line is at
    most ``width`` pixels wide; at ``min_size`` with lines wrapped at spaces (a word wider than
    the room on its own broken between characters) when no size fits."""
    size = fontsize
    while size - STEP >= min_size and text_width(drawer, text, size) > width:
        size -= STEP
    if text_width(drawer, text, size) <= width:
        return text, size
    lines = [part for line in text.split("\n") for part in _wrapped(drawer, line, width, size)]
    return "\n".join(lines), size


def _wrapped(drawer, line: str, width: float, size: float) -> list[str]:
    """``line`` cut into lines of at most ``width`` pixels at ``size``, at spaces where it can be."""

    def fits(candidate: str) -> bool:
        return text_width(drawer, candidate, size) <= width

    lines: list[str] = []
    current = ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        while len(word) > 1 and not fits(word):  # a word wider than the whole room: break it
            keep = max([k for k in range(1, len(word)) if fits(word[:k])], default=1)
            lines.append(word[:keep])
            word = word[keep:]
        current = word
    lines.append(current)
    return lines


def fit_titles(figure: Figure, titles: Iterable[tuple[Axes, str]], fontsize: float, passes: int = 2) -> None:
    """Give each axis its title, as large as ``fontsize`` while it fits the axis's width.

    Constrained layout places axes only when drawing, and a taller title narrows a square picture
    under it, so: lay out, measure, fit; twice, so the width measured is the one the PNG will have.
    """
    titles = list(titles)
    for axis, title in titles:
        axis.set_title(title, fontsize=fontsize)
    drawer = renderer(figure)
    for _ in range(passes):
        figure.draw_without_rendering()
        for axis, title in titles:
            text, size = fit_text(drawer, title, axis.get_window_extent(drawer).width, fontsize)
            axis.set_title(text, fontsize=size)
