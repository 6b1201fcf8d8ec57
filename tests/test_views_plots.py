"""The one plotting module: colour limits, colour bars, and no pyplot anywhere."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from matplotlib.figure import Figure

from convlens.views import plots
from convlens.views.plots.colours import MAGNITUDE, PERCENTILE, ROBUST_FROM, SIGNED, colour_limits


def _colour_bars(figure: Figure) -> int:
    """Colour-bar axes: matplotlib marks each with a ``_colorbar`` attribute."""
    return sum(1 for axis in figure.axes if getattr(axis, "_colorbar", None) is not None)


# ------------------------------------------------------------------------------------ limits


def test_robust_magnitude_limits_ignore_one_outlier():
    values = torch.linspace(0, 1, 1000)
    values[17] = 1000.0  # one hot pixel
    limits = colour_limits(values)
    assert limits.cmap == MAGNITUDE and not limits.signed
    assert 0.0 <= limits.vmin < 0.01
    assert 0.98 < limits.vmax < 1.0  # the 99.5th percentile, far below the outlier
    assert limits.high_clipped and limits.clipped and limits.extend in ("max", "both")
    assert "percentile" in limits.note


def test_signed_limits_are_symmetric_around_zero_and_robust():
    values = torch.linspace(-1, 3, 2000)
    values[5] = -500.0
    limits = colour_limits(values)
    assert limits.cmap == SIGNED and limits.signed
    assert limits.vmin == -limits.vmax
    expected = float(torch.quantile(values.abs().double(), PERCENTILE / 100))
    assert limits.vmax == pytest.approx(expected)
    assert limits.vmax < 3.0  # the outlier at -500 does not set the scale
    assert limits.low_clipped and limits.extend == "both"
    assert "|value|" in limits.note


def test_small_tensors_use_min_max_and_are_not_clipped():
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 9.0]])
    assert kernel.numel() < ROBUST_FROM
    limits = colour_limits(kernel)
    assert (limits.vmin, limits.vmax) == (-9.0, 9.0)
    assert not limits.clipped and limits.note == "" and limits.extend == "neither"
    positive = colour_limits(torch.tensor([0.5, 2.0, 4.0]))
    assert (positive.vmin, positive.vmax, positive.cmap) == (0.5, 4.0, MAGNITUDE)


def test_limits_force_signedness_and_survive_degenerate_input():
    assert colour_limits(torch.tensor([0.2, 0.4]), signed=True).vmin == pytest.approx(-0.4)
    constant = colour_limits(torch.zeros(5, 5))
    assert constant.vmax > constant.vmin  # a constant map still draws
    nan = colour_limits(torch.tensor([float("nan"), 1.0, 3.0]))  # mosaic gaps are NaN
    assert (nan.vmin, nan.vmax) == (1.0, 3.0)
    assert colour_limits(torch.empty(0)).vmax > colour_limits(torch.empty(0)).vmin
    full = colour_limits(torch.arange(1000.0), percentile=100)
    assert (full.vmin, full.vmax, full.clipped) == (0.0, 999.0, False)


# ----------------------------------------------------------------------------------- figures


def _attribution(height: int = 8, width: int = 8):
    heat = torch.rand(height, width)
    return SimpleNamespace(map=heat / heat.max(), method="grad_cam", stage="conv2", target=3, probability=0.9)


def _attack():
    from convlens.attacks import AttackResult

    clean = torch.rand(4, 1, 8, 8)
    delta = (torch.rand(4, 1, 8, 8) - 0.5).sign() * 0.1
    return AttackResult(
        method="fgsm",
        eps=0.1,
        steps=1,
        step_size=0.1,
        target=None,
        labels=torch.tensor([0, 1, 2, 3]),
        clean_predictions=torch.tensor([0, 1, 2, 3]),
        adversarial_predictions=torch.tensor([1, 1, 0, 3]),
        clean_confidences=torch.full((4,), 0.9),
        adversarial_confidences=torch.full((4,), 0.6),
        clean_images=clean,
        adversarial_images=(clean + delta).clamp(0, 1),
    )


def _map_figures() -> dict[str, tuple[Figure, int]]:
    """Every figure that draws a value map, with the colour bars it must have."""
    from convlens.inspect import SMILEY, convolve

    relu = torch.rand(12, 6, 6)
    conv = torch.randn(3, 6, 6)
    image = torch.rand(1, 8, 8)
    cams = [_attribution().map for _ in range(3)]
    return {
        "feature maps, one stage": (plots.feature_maps([("relu1", "ReLU", relu)]), 1),
        "feature maps, report": (
            plots.feature_maps([("conv1", "Conv2d", conv), ("relu1", "ReLU", relu)], limit=8, image=image),
            2,
        ),
        "filters": (plots.filters(torch.randn(8, 1, 3, 3), "conv1"), 1),
        "filters, many inputs": (plots.filters(torch.randn(70, 40, 3, 3), "conv2", out_limit=32), 1),
        "attribution": (plots.attribution_map(image, _attribution(), "three"), 1),
        "attribution grid": (
            plots.attribution_grid(image, [("Grad-CAM", _attribution()), ("saliency", _attribution())]),
            2,
        ),
        "misclassified": (
            plots.misclassified([image] * 3, cams, [0, 1, 2], [1, 2, 0], [0.9, 0.8, 0.7], ["a", "b", "c"]),
            1,
        ),
        "convolution": (plots.convolution(convolve(SMILEY, "edge"), at=(2, 2)), 3),
        "confusion matrix": (plots.confusion_matrix([[5, 1], [0, 7]], ["cat", "dog"]), 1),
        "attack examples": (plots.attack_examples(_attack(), [str(i) for i in range(10)]), 1),
    }


def test_every_map_figure_has_its_colour_bars():
    for name, (figure, bars) in _map_figures().items():
        assert isinstance(figure, Figure), name
        assert _colour_bars(figure) == bars, name
        assert plots.png_bytes(figure)[:8] == b"\x89PNG\r\n\x1a\n", name


def test_maps_use_the_convention_colours():
    relu = plots.feature_maps([("relu1", "ReLU", torch.rand(4, 5, 5))])
    conv = plots.feature_maps([("conv1", "Conv2d", torch.randn(4, 5, 5))])
    weights = plots.filters(torch.rand(4, 1, 3, 3), "conv1")  # all positive, still signed
    attribution = plots.attribution_map(torch.rand(1, 8, 8), _attribution(), "x")

    def cmaps(figure):
        return {image.get_cmap().name.removesuffix("_r") for axis in figure.axes for image in axis.images}

    assert "magma" in cmaps(relu) and "RdBu" not in cmaps(relu)
    assert "RdBu" in cmaps(conv)
    assert cmaps(weights) == {"RdBu"}
    assert {"magma", "gray"} <= cmaps(attribution)


def test_figures_without_maps_have_legends_or_none_needed(tmp_path):
    from convlens.attacks import RobustnessCurve

    curve = RobustnessCurve(
        eps=[0.0, 0.1],
        clean_accuracy=0.9,
        accuracy={"fgsm": [0.9, 0.4], "pgd": [0.9, 0.2]},
        mean_confidence={"fgsm": [0.9, 0.5], "pgd": [0.9, 0.4]},
        pgd_steps=10,
        images=2,
    )
    history = [
        {"epoch": 1, "train_loss": 1.0, "test_loss": 1.1},
        {"epoch": 2, "train_loss": 0.5, "test_loss": 0.7},
    ]
    for figure in (plots.robustness_curve(curve), plots.training_curves(history)):
        assert isinstance(figure, Figure)
        assert all(axis.get_legend() is not None for axis in figure.axes if axis.lines)
    visualization = SimpleNamespace(
        channels=[0, 1], images=torch.rand(2, 1, 8, 8), activation=torch.tensor([1.0, 2.0]), stage="relu2"
    )
    pictures = [
        plots.input_picture(torch.rand(3, 8, 8), "input"),
        plots.class_probabilities(torch.tensor([0.1, 0.7, 0.2]), ["a", "b", "c"]),
        plots.feature_visualization(visualization, torch.rand(2, 3, 1, 8, 8), torch.rand(2, 3)),
        plots.feature_visualization(
            visualization,
            torch.rand(2, 3, 1, 8, 8),
            torch.rand(2, 3),
            [None, "dead: never active on the 9 test images"],
        ),
    ]
    for figure in pictures:
        assert isinstance(figure, Figure)
    written = plots.save_png(pictures[0], tmp_path / "deep" / "input.png")
    assert written.read_bytes()[:4] == b"\x89PNG"


def test_rgb_perturbation_is_drawn_as_pixels():
    result = _attack()
    result.clean_images = result.clean_images.repeat(1, 3, 1, 1)
    result.adversarial_images = result.adversarial_images.repeat(1, 3, 1, 1)
    figure = plots.attack_examples(result, [str(i) for i in range(10)])
    assert _colour_bars(figure) == 0


def test_no_figure_imports_pyplot():
    """pyplot keeps global state: the server draws in threads, so nothing may import it."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "tests")
        import test_views_plots as t
        figures = t._map_figures()
        assert figures
        print("pyplot" if "matplotlib.pyplot" in sys.modules else "clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")


# ------------------------------------------------------------------------------ lab figures


def _drawn_colours(figure: Figure) -> set[str]:
    """Every line and bar colour of a figure, as hex (legends and axis frames aside)."""
    from matplotlib.colors import to_hex

    found = set()
    for axis in figure.axes:
        found |= {to_hex(line.get_color()) for line in axis.lines}
        found |= {to_hex(patch.get_facecolor()) for patch in axis.patches if patch.get_fill()}
    return found


def test_lab_figures_draw_in_the_named_colours():
    from convlens.lab import params
    from convlens.views.lab import experiment_figure
    from convlens.views.plots.colours import FAIL, PASS, REFERENCE, SERIES

    named = {*SERIES, REFERENCE, PASS, FAIL}
    locality = SimpleNamespace(dataset="digits", accuracy={"convnet": {"original": 0.9, "shuffled": 0.5}})
    faithfulness = SimpleNamespace(
        model="convnet",
        dataset="digits",
        fractions=[0.0, 0.5, 1.0],
        curves={"grad-cam": [0.9, 0.3, 0.1], "random": [0.9, 0.6, 0.1], "brightness": [0.9, 0.5, 0.1]},
        deletion={"grad-cam": 0.3, "random": 0.5, "brightness": 0.4},
        spearman={"grad-cam": 0.1, "saliency": 0.7},
    )
    figures = {
        "params": experiment_figure("params", params.run(None, input_shape=(1, 28, 28))),
        "locality": experiment_figure("locality", locality),
        "faithfulness": experiment_figure("faithfulness", faithfulness),
    }
    for name, figure in figures.items():
        colours = _drawn_colours(figure)
        assert colours and colours <= named, (name, colours - named)
    assert {PASS, FAIL} <= _drawn_colours(figures["faithfulness"])  # 0.1 passes, 0.7 fails


def test_no_lab_figure_picks_its_own_colours():
    """The lab draws nothing; its figures in views name colours from ``colours`` (no "tab:blue")."""
    source = Path(plots.__file__).parent
    lab = source.parent.parent / "lab"
    imports = re.compile(r"^\s*(from|import) matplotlib", re.MULTILINE)
    assert not [p.name for p in lab.glob("*.py") if imports.search(p.read_text())]
    assert "tab:" not in (source / "lab.py").read_text()


def test_count_limits_run_from_zero_to_the_largest_count():
    from convlens.views.plots.colours import count_limits

    limits = count_limits([[5, 1], [2, 7]])
    assert (limits.vmin, limits.vmax, limits.cmap, limits.clipped) == (0.0, 7.0, MAGNITUDE, False)
    assert count_limits([[3, 4], [4, 3]]).vmin == 0.0  # 0 even when no cell is empty
