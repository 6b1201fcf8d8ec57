"""The report's figures and page read cleanly (issue 23, defect 16): colour-bar titles level and
clear of the next row, class names whole, titles at least 9 px as the report shows them, the
attribution figure naming the class it explains, and a page no wider than a 360 px phone.

Measured the way a reader meets them: every text's extent from matplotlib's renderer, the PNG's
width against the report's figure box, and the page in Debian Chromium.
"""

from __future__ import annotations

import base64
import itertools
import math
import struct
from types import SimpleNamespace

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from convlens.views import plots

READABLE_PX = 9  # the smallest text a reader should meet, in screen pixels
# the last is wider than a tile: the misclassified titles must wrap it
LONG_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "a long class name that must wrap"]


def _extents(figure: Figure) -> list[tuple[Text, object]]:
    """(text, window extent) of every text drawn once the figure is laid out: visible, not empty,
    and no label of a tick that lies outside its axis's view (matplotlib keeps those, undrawn)."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()
    undrawn = set()
    for axis in figure.axes:
        for scale in (axis.xaxis, axis.yaxis):
            low, high = sorted(scale.get_view_interval())
            margin = 1e-9 * max(1.0, high - low)
            for tick in scale.get_major_ticks() + scale.get_minor_ticks():
                if not low - margin <= tick.get_loc() <= high + margin:
                    undrawn.update((tick.label1, tick.label2))
    return [
        (text, text.get_window_extent(renderer))
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and text not in undrawn
    ]


def _overlap(a, b, tolerance: float = 0.5) -> bool:
    """Whether two boxes share more than a hairline."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > tolerance and height > tolerance


def _colour_bar_axes(figure: Figure) -> list:
    return [axis for axis in figure.axes if getattr(axis, "_colorbar", None) is not None]


def _owner(text: Text, figure: Figure):
    """The axes a text belongs to (its title, labels and tick labels), or None for figure text."""
    for axis in figure.axes:
        if text in axis.findobj(Text):
            return axis
    return None


def _attribution(target: int = 1, seed: int = 0) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        method="saliency",
        target=target,
        stage=None,
        probability=0.912,
        map=torch.rand(32, 32, generator=generator),
    )


def _report_figures() -> dict[str, Figure]:
    """The figures the report draws, at the sizes a 4-class colour run gives them (clipped maps,
    a dead stage, 10 mistakes, 8 attribution methods), with long class names."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 32, 32, generator=generator)
    stages = []
    for index, (name, kind, signed) in enumerate(
        [
            ("conv1", "Conv2d", True),
            ("relu1", "ReLU", False),
            ("conv2", "Conv2d", True),
            ("bn2", "BatchNorm2d", True),
        ]
    ):
        maps = torch.randn(16, 16, 16, generator=generator)
        maps = maps if signed else maps.clamp(min=0)
        maps[index, 0, 0] = 50.0  # an outlier: the colour bar is clipped, its label says so
        stages.append((name, kind, maps))
    stages.append(("relu2", "ReLU", torch.zeros(16, 8, 8)))  # a dead stage: a constant map
    kernels = torch.randn(16, 3, 3, 3, generator=generator)
    kernels[0, 0, 0, 0] = 9.0  # an outlier weight: clipped too
    wrong = 10
    cams = [torch.rand(32, 32, generator=generator) for _ in range(wrong)]
    labels = [index % 4 for index in range(wrong)]
    maps = [(label, _attribution(seed=i)) for i, label in enumerate(
        ["Grad-CAM", "Grad-CAM++", "saliency", "SmoothGrad", "integrated gradients", "occlusion", "RISE", "LIME"]
    )]  # fmt: skip
    history = [
        {"epoch": epoch, "selected": epoch == 20}
        | {
            f"{split}_{what}": 1 / epoch
            for split in ("train", "val", "test")
            for what in ("loss", "accuracy")
        }
        for epoch in range(1, 31)
    ]
    return {
        "training curves": plots.training_curves(history),
        "feature maps": plots.feature_maps(stages, limit=8, image=image),
        "filters": plots.filters(kernels, "conv1"),
        "misclassified": plots.misclassified(
            [image] * wrong, cams, labels, [(label + 4) % 5 for label in labels], [0.9] * wrong, LONG_NAMES
        ),
        "confusion": plots.confusion_matrix(torch.eye(5, dtype=torch.int64).mul(3).tolist(), LONG_NAMES),
        "attribution": plots.attribution_grid(image, maps, LONG_NAMES),
    }


@pytest.fixture(scope="module")
def report_figures() -> dict[str, Figure]:
    return _report_figures()


@pytest.fixture(scope="module")
def report_images(report_figures) -> dict[str, dict]:
    """Each figure as the report embeds it: the template's image dict (PNG, caption)."""
    from convlens.report.parts import figure_image

    return {name: figure_image(figure, name) for name, figure in report_figures.items()}


def test_colour_bar_titles_are_level_and_clear_of_every_other_axes_and_text(report_figures):
    """Defect 16: a rotated "activation (clipped at the 99.5th percentile of |value|)" ran into the
    next row's colour bar."""
    for name, figure in report_figures.items():
        bars = _colour_bar_axes(figure)
        extents = _extents(figure)
        assert bars or name == "training curves", name
        for bar in bars:
            own = bar.findobj(Text)
            words = [
                text for text in (bar.title, bar.xaxis.label, bar.yaxis.label) if text.get_text().strip()
            ]
            assert len(words) == 1, name  # one title or one label, not both
            assert words[0].get_rotation() == 0, (name, words[0].get_text())  # level: read without turning
            for text, box in extents:
                if text not in own:
                    continue
                for other in figure.axes:
                    if other is not bar:
                        assert not _overlap(box, other.get_window_extent()), (name, text.get_text())
                for other_text, other_box in extents:
                    if other_text not in own:
                        assert not _overlap(box, other_box), (name, text.get_text(), other_text.get_text())


def test_no_two_texts_of_a_report_figure_overlap(report_figures):
    """Box against box; two slanted texts (the confusion matrix's class names) have boxes that
    always meet, so they are checked as slanted lines: ``test_class_names_are_never_cut``."""
    for name, figure in report_figures.items():
        extents = _extents(figure)
        for i, (text, box) in enumerate(extents):
            for other, other_box in extents[i + 1 :]:
                if text.get_rotation() % 90 and other.get_rotation() % 90:
                    continue
                assert not _overlap(box, other_box), (name, text.get_text(), other.get_text())


def _slanted_names_clear_each_other(axis, renderer) -> bool:
    """Whether the x tick labels, parallel lines slanted by the same angle, stand further apart
    (the tick spacing across the slant) than each one is tall."""
    labels = axis.get_xticklabels()
    angle = math.radians(labels[0].get_rotation())
    centres = axis.transData.transform([(tick, 0) for tick in axis.get_xticks()])[:, 0]
    apart = min(abs(b - a) for a, b in itertools.pairwise(centres)) * abs(math.sin(angle))
    heights = []
    for label in labels:
        rotation = label.get_rotation()
        label.set_rotation(0)
        heights.append(label.get_window_extent(renderer).height)
        label.set_rotation(rotation)
    return max(heights) <= apart


def test_class_names_are_never_cut(report_figures):
    """Defect 16: the confusion matrix wrote "astronau"; a misclassified tile's title ran over its
    neighbour's. Every name is whole (wrapped, perhaps) and every title fits its tile."""

    def squeezed(text: str) -> str:
        return "".join(text.split())

    confusion = report_figures["confusion"]
    axis = confusion.axes[0]
    for ticks in (axis.get_xticklabels(), axis.get_yticklabels()):
        assert [squeezed(tick.get_text()) for tick in ticks] == [squeezed(name) for name in LONG_NAMES]
    _extents(confusion)  # laid out
    assert _slanted_names_clear_each_other(axis, FigureCanvasAgg(confusion).get_renderer())
    figure = report_figures["misclassified"]
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()
    titled = [axis for axis in figure.axes if axis.get_title()]
    assert len(titled) == 10
    for index, axis in enumerate(titled):
        true, said = LONG_NAMES[index % 4], LONG_NAMES[(index % 4 + 4) % 5]
        assert squeezed(axis.get_title()) == squeezed(f"true {true} said {said} 90%")
        assert axis.title.get_window_extent(renderer).width <= axis.get_window_extent(renderer).width + 1


def test_fit_text_shrinks_then_wraps_and_keeps_every_character():
    from convlens.views.plots.fit import MIN_FONT_SIZE, fit_text, renderer, text_width

    drawer = renderer(Figure())
    short, size = fit_text(drawer, "cat", 200, 9)
    assert (short, size) == ("cat", 9)
    room = text_width(drawer, "astronaut", 8)  # fits at 8 pt, not at 9
    assert fit_text(drawer, "astronaut", room, 9) == ("astronaut", 8)
    wrapped, size = fit_text(drawer, "true supercalifragilistic", 40, 9)
    assert size == MIN_FONT_SIZE and "\n" in wrapped
    assert "".join(wrapped.split()) == "truesupercalifragilistic"
    assert all(text_width(drawer, line, size) <= 40 for line in wrapped.split("\n"))


def _png_width(png: bytes) -> int:
    return struct.unpack(">I", png[16:20])[0]  # the IHDR chunk: width, height


def test_every_text_is_at_least_9_px_as_the_report_shows_it(report_figures, report_images):
    """Defect 16: the misclassified titles were drawn 8 pt in a 1,791 px PNG the page shrinks to
    its figure box: about 5 px on screen. A figure drawn for the box keeps its text's size."""
    from convlens.views.plots.output import DPI, PAGE_WIDTH_PX

    for name, figure in report_figures.items():
        width = _png_width(base64.b64decode(report_images[name]["data"]))
        scale = min(1.0, PAGE_WIDTH_PX / width)
        for text, _ in _extents(figure):
            shown = text.get_fontsize() * DPI / 72 * scale
            assert shown >= READABLE_PX, (name, text.get_text(), round(shown, 1), width)


def test_the_attribution_figure_names_the_class_it_explains(report_figures):
    """Defect 16: the figure said "class 1" where the report's text said "chelsea"."""
    from convlens.views.plots.output import figure_caption

    figure = report_figures["attribution"]
    titles = [axis.get_title() for axis in figure.axes]
    assert "chelsea" in titles[0].replace("\n", " ") and "class 1" not in " ".join(titles)
    assert "chelsea" in figure_caption(figure)
    assert "clipped" in figure_caption(figure)  # the colour bars' explanation went to the caption


@pytest.mark.browser
def test_the_report_page_fits_a_phone_and_captions_name_the_class(chromium, report_images, tmp_path):
    """Defect 16: the report was 473 px wide at 360 px (a wide table); now a table scrolls in its own
    box, pictures shrink to the page, and the attribution picture's caption names the class."""
    from convlens.report import render_report
    from convlens.report.parts import Section

    wide = {"title": "a wide table", "columns": [f"column {i}" for i in range(14)], "rows": [list(range(14))]}
    long_path = "/home/someone/" + "a-very-long-folder-name/" * 6 + "photos"
    sections = [
        Section("overview", "Overview", text=f"Data: {long_path}", tables=[wide]),
        Section("attributions", "Where the model looks", images=[report_images["attribution"]]),
        Section("misclassified", "Misclassified", images=[report_images["misclassified"]]),
        Section("feature-maps", "Feature maps", images=[report_images["feature maps"]]),
    ]
    page_file = tmp_path / "report.html"
    page_file.write_text(render_report("a report", sections), encoding="utf-8")
    for width, height in ((360, 740), (1280, 800)):
        page = chromium.new_page(viewport={"width": width, "height": height})
        try:
            page.goto(page_file.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            caption = page.locator("section#attributions figcaption").inner_text()
            assert "chelsea" in caption and "clipped" in caption
            shown = page.evaluate(
                "[...document.querySelectorAll('img')].map(i => [i.naturalWidth, i.getBoundingClientRect().width])"
            )
            if width == 1280:  # the figure box: a PNG drawn for it is shown 1:1
                from convlens.views.plots.output import PAGE_WIDTH_PX

                assert all(
                    abs(shown_width - min(natural, PAGE_WIDTH_PX)) < 1 for natural, shown_width in shown
                )
        finally:
            page.close()


@pytest.mark.slow  # a whole report: its attribution faithfulness alone takes minutes on two busy cores
@pytest.mark.browser
def test_a_photo_run_report_fits_a_phone_and_names_the_class_it_explains(chromium, photo_run, tmp_path):
    """The same, end to end: ``convlens report`` of a colour photo run, read in Chromium."""
    import re

    from convlens.report import build_report
    from convlens.views.plots.output import PAGE_WIDTH_PX

    report = build_report(photo_run, tmp_path / "report.html")
    said = re.search(r"A test image of class (\w+), explained", report.read_text(encoding="utf-8"))
    assert said is not None
    for width, height in ((360, 740), (1280, 800)):
        page = chromium.new_page(viewport={"width": width, "height": height})
        try:
            page.goto(report.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            caption = page.locator("section#attributions figcaption").inner_text()
            assert f"explains the class {said.group(1)} " in caption
            shown = page.evaluate(
                "[...document.querySelectorAll('img')].map(i => [i.naturalWidth, i.getBoundingClientRect().width])"
            )
            if width == 1280:
                assert all(abs(on_screen - min(natural, PAGE_WIDTH_PX)) < 1 for natural, on_screen in shown)
        finally:
            page.close()
