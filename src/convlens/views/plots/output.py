"""Figures to PNG: bytes for the report and the server, files for the CLI; and what a figure's
caption should say.

A report figure is drawn at most ``PAGE_WIDTH_PX`` wide (the report's figure box at a desktop
width), so the page shows it one PNG pixel per screen pixel and its smallest text (7 pt at ``DPI``,
10.7 px) stays readable; a wider PNG would be shrunk, its text with it. What does not fit in a
figure without crowding it (why a colour bar is clipped, which class a map explains) goes to its
caption: ``add_caption`` while drawing, ``figure_caption`` in the face that lays it out.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

DPI = 110
PAGE_WIDTH_PX = 1100  # the report's figure box (template.html, body max-width); wider PNGs are shrunk
_CAPTION = "convlens_caption"  # the attribute a figure's caption sentences live in


def add_caption(figure: Figure, sentence: str) -> None:
    """Add ``sentence`` to what ``figure``'s caption says (once, however many colour bars ask)."""
    sentences = figure.__dict__.setdefault(_CAPTION, [])
    if sentence not in sentences:
        sentences.append(sentence)


def figure_caption(figure: Figure) -> str:
    """The sentences drawing ``figure`` asked its caption to say, in order ("" when none)."""
    return " ".join(getattr(figure, _CAPTION, []))


def png_bytes(figure: Figure, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_png(figure: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``figure`` to ``path`` (folders made as needed); returns the path."""
    from convlens.storage import atomic_write

    path = Path(path)
    atomic_write(path, png_bytes(figure, dpi), durable=False)  # no half-written PNG, no fsync cost
    return path
