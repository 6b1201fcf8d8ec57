"""`convlens features` picks the unit view for a stage linear in the pixels (conv1) and the
channel view elsewhere; --mean and --regularised choose the channel view on conv1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _features(run_cli, *args: str) -> dict:
    code, out, err = run_cli("features", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_conv1_defaults_to_the_unit_view(run_cli, digits_run, tmp_path):
    from safetensors.numpy import load_file

    tensors = load_file(digits_run / "model.safetensors")
    kernels, biases = tensors["model.body.conv1.weight"], tensors["model.body.conv1.bias"]  # (16, 1, 3, 3)
    meta = json.loads((digits_run / "model.json").read_text())["normalization"]
    (mean,), (std,) = meta["mean"], meta["std"]
    result = _features(run_cli, digits_run, "--stage", "conv1", "--channels", "3,11", "--out", tmp_path)
    assert result["closed_form"] is True and Path(result["file"]).name == "units-conv1.png"
    for unit, channel in zip(result["units"], [3, 11], strict=True):
        # the centre unit's value on its kernel's sign pattern, by hand (printed to 4 decimals)
        pattern = (kernels[channel] > 0).astype(np.float32)
        by_hand = float((kernels[channel] * (pattern - mean) / std).sum() + biases[channel])
        assert unit["channel"] == channel and unit["activation"] == pytest.approx(by_hand, abs=1e-4)
    code, out, _ = run_cli("features", digits_run, "--stage", "conv1", "--channels", "0", "--out", tmp_path)
    assert code == 0 and out.startswith("conv1 is linear in the pixels") and "flat square" in out


@pytest.mark.parametrize("flag", ["--mean", "--regularised"])
def test_conv1_channel_view_on_request(run_cli, digits_run, tmp_path, flag):
    result = _features(
        run_cli,
        digits_run,
        "--stage",
        "conv1",
        flag,
        "--channels",
        "0",
        "--steps",
        "2",
        "-k",
        "0",
        "--out",
        tmp_path,
    )
    assert "units" not in result and Path(result["file"]).name == "features-conv1.png"


def test_a_stage_past_a_relu_defaults_to_the_channel_view(run_cli, digits_run, tmp_path):
    result = _features(
        run_cli,
        digits_run,
        "--stage",
        "relu1",
        "--channels",
        "0",
        "--steps",
        "2",
        "-k",
        "0",
        "--out",
        tmp_path,
    )
    assert "units" not in result and np.isfinite(result["activation"]).all()
    assert Path(result["file"]).name == "features-relu1.png"


def test_help_says_which_view_is_the_default(run_cli):
    code, out, _ = run_cli("features", "--help")
    assert code == 0 and "--mean" in out and "Default: --unit for a stage linear" in " ".join(out.split())
