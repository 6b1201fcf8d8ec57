"""GET /features on a stage affine in the pixels: each channel's unit optimum is its kernel's sign
pattern, checked against the checkpoint's own tensors (safetensors + JSON, no convlens model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from convlens.server import create_app
from testing_helpers import unpacked


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    return TestClient(create_app([digits_run], allowed_hosts=["testserver"]))


@pytest.fixture(scope="module")
def checkpoint(digits_run) -> tuple[dict, dict]:
    """(tensors as NumPy arrays, the checkpoint's JSON), read straight from the files."""
    from safetensors.numpy import load_file

    return load_file(digits_run / "model.safetensors"), json.loads((digits_run / "model.json").read_text())


def test_conv1_units_are_the_kernels_sign_pattern(client, digits_run, checkpoint):
    tensors, meta = checkpoint
    kernels, biases = tensors["model.body.conv1.weight"], tensors["model.body.conv1.bias"]  # (16, 1, 3, 3)
    (mean,), (std,) = meta["normalization"]["mean"], meta["normalization"]["std"]
    body = client.get(f"/api/runs/{digits_run.name}/features", params={"stage": "conv1"}).json()
    assert body["closed_form"] is True
    units = body["units"]
    assert [unit["channel"] for unit in units] == list(range(16))
    for unit, kernel, bias in zip(units, kernels, biases, strict=True):
        crop = unpacked(unit["crop"])  # (C_in, 3, 3)
        # per input channel: 1 where the weight is positive, 0 where it is negative (or zero)
        np.testing.assert_array_equal(crop, (kernel > 0).astype(np.float32))
        # the centre cell of the 8x8 map sees input rows and cols 3..5 (3x3 kernel, padding 1)
        assert unit["cell"] == [4, 4] and unit["window"] == [3, 3, 6, 6]
        # its value by hand: the kernel over the normalized crop, plus the bias
        by_hand = float((kernel * (crop - mean) / std).sum() + bias)
        assert unit["activation"] == pytest.approx(by_hand, abs=1e-4)
    # why the page shows units: the channel-mean optimum is flat wherever every kernel tap reaches
    # (rows and cols 1..6 of the 8x8 input, padding 1): white where the kernel's sum is positive
    whole = unpacked(body["images"])  # (16, 1, 8, 8)
    for image, kernel in zip(whole, kernels, strict=True):
        np.testing.assert_array_equal(image[0, 1:7, 1:7], np.full((6, 6), float(kernel.sum() > 0)))


def test_a_stage_past_a_relu_has_no_units(client, digits_run):
    body = client.get(f"/api/runs/{digits_run.name}/features", params={"stage": "relu1"}).json()
    assert body["closed_form"] is False and body["units"] is None
