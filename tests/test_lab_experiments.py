"""locality, invariance, equivariance and hierarchy end to end on digits with tiny settings,
and their building blocks against independent computations."""

from __future__ import annotations

import pytest
import torch

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.lab import (
    EXPERIMENTS,
    equivariance,
    hierarchy,
    invariance,
    list_experiments,
    locality,
    run_experiment,
)
from convlens.lab._common import shift_images
from convlens.models import create_model
from convlens.views.lab import experiment_tables


def test_shift_images_matches_roll_with_zero_fill():
    images = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6) + 1
    for dy, dx in [(0, 2), (1, -3), (-2, 0), (4, 5)]:
        expected = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        if dy > 0:
            expected[:, :, :dy] = 0
        elif dy < 0:
            expected[:, :, dy:] = 0
        if dx > 0:
            expected[:, :, :, :dx] = 0
        elif dx < 0:
            expected[:, :, :, dx:] = 0
        assert torch.equal(shift_images(images, dy, dx), expected)
    assert torch.equal(shift_images(images, 0, 0), images)
    assert shift_images(images, 0, 6).abs().sum() == 0


def test_shuffle_pixels_is_one_permutation_for_all_images_and_channels():
    images = torch.rand(4, 3, 5, 5)
    permutation = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    shuffled = locality.shuffle_pixels(images, permutation)
    for n in range(4):
        for c in range(3):
            assert torch.equal(shuffled[n, c].flatten(), images[n, c].flatten()[permutation])
    inverse = torch.argsort(permutation)
    assert torch.equal(locality.shuffle_pixels(shuffled, inverse), images)


def test_locality_end_to_end(digits):
    result = locality.run(digits, epochs=2, train_limit=600, test_limit=150)
    assert set(result.accuracy) == {"convnet", "mlp"}
    for scores in result.accuracy.values():
        assert set(scores) == {"original", "shuffled"}
        assert all(0.2 < value <= 1 for value in scores.values())  # above 10 % chance
    assert result.test_images == 150
    (table,) = experiment_tables("locality", result)
    assert [row[0] for row in table.rows] == ["convnet", "mlp"]


def test_invariance_end_to_end(digits):
    result = invariance.run(digits, max_shift=2, epochs=2, train_limit=600, test_limit=100)
    assert result.shifts == [-2, -1, 0, 1, 2]
    assert set(result.accuracy) == set(invariance.VARIANTS)
    for variant in invariance.VARIANTS:
        assert result.agreement[variant][2] == 1.0  # unshifted agrees with itself
        assert result.accuracy[variant][2] == pytest.approx(result.clean_accuracy[variant])
        assert len(result.accuracy[variant]) == 5
    assert len(experiment_tables("invariance", result)) == 2
    with pytest.raises(ConvlensError, match="max_shift must be between 1 and 7 pixels"):
        invariance.run(digits, max_shift=8)


def test_convolution_stages_are_equivariant_pooling_only_to_multiples_of_its_stride(digits):
    torch.manual_seed(0)
    model = create_model("convnet", digits.input_shape, 10, digits.mean, digits.std).eval()
    result = equivariance.run(digits, model=model, shifts=(1, 2, 4), images=20)
    errors = dict(zip(result.stages, result.relative_error, strict=True))
    strides = dict(zip(result.stages, result.strides, strict=True))
    assert result.stages == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]
    assert strides == {"conv1": 1, "relu1": 1, "pool1": 2, "conv2": 2, "relu2": 2, "pool2": 4}
    for stage, stage_errors in errors.items():
        for shift, error in zip(result.shifts, stage_errors, strict=True):
            if shift % strides[stage] == 0:
                assert error < 1e-5, (stage, shift)
            else:
                assert error > 1e-2, (stage, shift)  # half a cell has no exact counterpart


def test_equivariance_measure_against_plain_convolution(digits):
    # one conv stage by hand: conv(shift(x)) and shift(conv(x)) on a canvas, with torch's conv2d
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    model = torch.nn.Sequential()
    model.stages = lambda: [("conv", conv)]
    images = to_float(digits.test_images[:5])
    _, _, errors = equivariance.measure(model, images, [3])
    canvas = torch.nn.functional.pad(images, (16,) * 4)
    with torch.no_grad():
        moved = torch.nn.functional.conv2d(
            torch.roll(canvas, (3, 3), (2, 3)), conv.weight, conv.bias, padding=1
        )
        expected = torch.roll(
            torch.nn.functional.conv2d(canvas, conv.weight, conv.bias, padding=1), (3, 3), (2, 3)
        )
    region = (..., slice(19, 27), slice(19, 27))
    reference = float((moved[region] - expected[region]).norm() / expected[region].norm())
    assert errors[0][0] == pytest.approx(reference, abs=1e-6)


def test_edge_scores_by_hand():
    kernels, angles = hierarchy.edge_kernels(3)
    scores, best = hierarchy.edge_scores(kernels.float())
    torch.testing.assert_close(scores, torch.ones(len(kernels)))
    torch.testing.assert_close(best, angles.float())
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    score, angle = hierarchy.edge_scores(torch.stack([sobel_x, -sobel_x, sobel_x.T, torch.ones(3, 3)]))
    assert score[0] > 0.95 and score[1] == pytest.approx(float(score[0]))  # the sign does not matter
    assert float(angle[0]) in (0.0, 180.0) and float(angle[2]) == 90.0
    assert float(score[3]) == 0.0  # a flat kernel has no edge at all
    with pytest.raises(ConvlensError, match="square kernels"):
        hierarchy.edge_scores(torch.ones(2, 3, 4))


def test_hierarchy_end_to_end(digits):
    result = hierarchy.run(digits, epochs=2, channels=2, featureviz_steps=4, random_kernels=100)
    assert result.first_layer == "conv1"
    assert len(result.edge_score_trained) == 16
    assert all(0 <= s <= 1 for s in result.edge_score_trained)
    sizes = {f["stage"]: f["receptive_field"] for f in result.receptive_fields}
    assert sizes["conv1"] == [3, 3] and sizes["pool1"] == [4, 4] and sizes["conv2"] == [8, 8]
    assert result.featureviz_stages == ["relu1", "relu2"]
    assert result.featureviz_images["relu1"].shape == (2, 1, 8, 8)
    assert "featureviz_images" not in result.to_json()
    assert len(experiment_tables("hierarchy", result)) == 3


def test_run_experiment_times_and_rejects_unknown_names(digits):
    result = run_experiment("params", digits)
    assert result.seconds > 0
    assert list_experiments() == EXPERIMENTS.names()
    choices = ", ".join(EXPERIMENTS.names())
    with pytest.raises(ConvlensError, match=f"unknown experiment 'nope'; choose one of: {choices}, or all"):
        run_experiment("nope", digits)


@pytest.mark.parametrize("name", EXPERIMENTS.names())
def test_every_built_in_experiment_has_its_tables_and_figure_in_the_views(name):
    from convlens.lab import BUILT_IN
    from convlens.views.lab import TABLES
    from convlens.views.plots.lab import FIGURES

    if name in BUILT_IN:  # one registered from outside brings its own (``register_experiment``)
        assert name in TABLES and name in FIGURES
