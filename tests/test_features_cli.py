"""`convlens features`: the optimum beside the best test image, --unit crops, --regularised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convlens.data import to_float
from convlens.inspect import activations


@pytest.fixture(scope="module")
def test_maps(digits, digits_model):
    """Every stage's output on all digits test images, the brute-force reference."""
    return activations(digits_model[0], to_float(digits.test_images))


def test_features_never_ends_below_the_best_test_image(run_cli, digits_run, tmp_path, test_maps):
    code, out, err = run_cli(
        "features", digits_run, "--stage", "relu2", "--channels", "0,5,9", "--steps", "16", "-k", "1",
        "--out", tmp_path, "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    best = test_maps["relu2"][:, [0, 5, 9]].mean(dim=(2, 3)).amax(dim=0)  # (3,)
    assert result["best_image_activation"] == pytest.approx(best.tolist(), abs=1e-5)
    assert all(a >= b for a, b in zip(result["activation"], best.tolist(), strict=True))
    assert result["regularised"] is False


def test_features_unit_crops_conv1_to_the_kernels_sign_pattern(run_cli, digits_run, digits_model, tmp_path):
    code, out, err = run_cli(
        "features", digits_run, "--stage", "conv1", "--channels", "0,7", "--unit", "--out", tmp_path, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["closed_form"] is True and Path(result["file"]).name == "units-conv1.png"
    kernels = dict(digits_model[0].stages())["conv1"].weight.detach()
    for unit, channel in zip(result["units"], [0, 7], strict=True):
        assert unit["channel"] == channel and unit["cell"] == [4, 4] and unit["window"] == [3, 3, 6, 6]
        # the sign pattern's value by hand: the kernel's positive weights over the normalized pixels
        image = (kernels[channel] > 0).float()
        value = float(activations(digits_model[0], _placed(image))["conv1"][channel, 4, 4])
        assert unit["activation"] == pytest.approx(value, abs=1e-4)
        assert unit["activation"] >= unit["best_image_activation"]
    code, out, _ = run_cli(
        "features", digits_run, "--stage", "conv1", "--channels", "0", "--unit", "--out", tmp_path
    )
    assert code == 0 and "channel 0: " in out and "rows 3..5, cols 3..5 (best test image #" in out


def _placed(crop):
    import torch

    image = torch.zeros(1, 8, 8)
    image[:, 3:6, 3:6] = crop
    return image


def test_features_regularised_reports_the_best_test_image(run_cli, digits_run, tmp_path, test_maps):
    code, out, err = run_cli(
        "features", digits_run, "--stage", "relu2", "--channels", "2", "--steps", "8", "--regularised",
        "-k", "0", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    best = float(test_maps["relu2"][:, 2].mean(dim=(1, 2)).max())
    assert f"(best test image: {best:.3g})" in out


def test_features_refuses_unit_with_regularised(run_cli, digits_run, tmp_path):
    code, _, err = run_cli(
        "features", digits_run, "--stage", "relu2", "--unit", "--regularised", "--out", tmp_path
    )
    assert code == 2 and "--unit and --regularised: pick one" in err and "Traceback" not in err
