"""Figures to PNG: bytes for the report and the server, files for the CLI."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

DPI = 110


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
