"""The pieces every report section is made of: a ``Section`` and its images and tables.

Apart from the package's ``__init__`` so the section builders of one task
(``report.segmentation``) can use them without importing the package that imports them.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field


@dataclass
class Section:
    id: str
    title: str
    text: str = ""
    tables: list[dict] = field(default_factory=list)  # {"title", "columns", "rows", "css"}
    images: list[dict] = field(default_factory=list)  # {"data" (base64 PNG), "alt", "caption"}


def figure_image(figure, alt: str, caption: str = "") -> dict:
    """A matplotlib figure as the template's image dict (PNG, base64); its caption is ``caption``
    followed by what the figure asked its caption to say (why a colour bar is clipped, which class
    a map explains), words too long for the picture itself."""
    from convlens.views.plots.output import figure_caption, png_bytes

    said = " ".join(part for part in (caption, figure_caption(figure)) if part)
    return {"data": base64.b64encode(png_bytes(figure)).decode("ascii"), "alt": alt, "caption": said}


def table_dict(table) -> dict:
    """A ``views.tables.Table`` as the template's table dict."""
    return asdict(table)
