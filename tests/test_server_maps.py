"""How the explorer colours and wires its maps: every colour limit the API sends is checked against
numpy percentiles computed here, the Network view's windows against a hand-worked digits convnet
and against perturbing the model's own stages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.server import create_app
from testing_helpers import unpacked

PERCENTILE = 99.5  # the library's convention (views.plots.colours)


@pytest.fixture(scope="module")
def client(digits_run, photo_run) -> TestClient:
    app = create_app([digits_run, photo_run], allowed_hosts=["testserver"])
    return TestClient(app, raise_server_exceptions=False)


def numpy_limits(values: np.ndarray, signed: bool | None = None) -> tuple[float, float]:
    """Robust limits straight from numpy: ±the 99.5th percentile of |value| for signed values,
    the 0.5th and 99.5th percentiles for magnitudes; plain min/max below 256 values or when the
    percentiles collapse onto one value (a mostly-zero map)."""
    values = values[np.isfinite(values)].astype(np.float64)
    signed = bool(values.min() < 0) if signed is None else signed
    robust = values.size >= 256
    if signed:
        bound = np.percentile(np.abs(values), PERCENTILE) if robust else np.abs(values).max()
        bound = bound if bound > 1e-12 else np.abs(values).max()
        return -bound, bound
    low, high = (
        np.percentile(values, [100 - PERCENTILE, PERCENTILE]) if robust else (values.min(), values.max())
    )
    return (low, high) if high - low > 1e-12 else (values.min(), values.max())


def check(limits: dict, values: np.ndarray, signed: bool | None = None) -> None:
    low, high = numpy_limits(values, signed)
    assert (limits["low"], limits["high"]) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert limits["signed"] == (low < 0) and limits["map"] == ("diverging" if low < 0 else "sequential")
    assert limits["high_clipped"] == bool(values.max() > limits["high"])
    assert limits["low_clipped"] == bool(values.min() < limits["low"])


@pytest.mark.parametrize("which", ["digits", "photo"])
def test_stage_and_channel_limits_are_numpy_percentiles(client, digits_run, photo_run, which):
    run_id = (digits_run if which == "digits" else photo_run).name
    body = client.post(f"/api/runs/{run_id}/activations", data={"test_index": 2}).json()
    for stage in body["stages"]:
        values = unpacked(stage["output"])
        check(stage["limits"], values)
        if values.ndim == 1:
            assert stage["channel_limits"] is None
            continue
        assert len(stage["channel_limits"]) == values.shape[0]
        for channel, limits in zip(values, stage["channel_limits"], strict=True):
            if channel.min() == channel.max():  # a dead channel keeps the stage's range
                assert limits == stage["limits"]
            else:
                check(limits, channel, signed=stage["limits"]["signed"])  # one map per stage
    kinds = {stage["name"]: stage["limits"]["map"] for stage in body["stages"]}
    assert kinds["conv1"] == kinds["conv2"] == "diverging"
    assert kinds["relu1"] == kinds["pool2"] == kinds["flatten"] == "sequential"


def test_a_mostly_zero_map_keeps_its_rare_values_visible():
    """After a ReLU nearly every value can be 0: the 99.5th percentile is then 0 too, which would
    paint the whole map one colour; the limits fall back to the plain range instead."""
    from convlens.views.maps import map_limits

    sparse = np.zeros(4096)
    sparse[:5] = [0.3, 0.1, 0.2, 0.05, 0.25]  # 0.1 % non-zero
    limits = map_limits(torch.from_numpy(sparse))
    assert (limits["low"], limits["high"]) == (0.0, 0.3) and limits["map"] == "sequential"
    signed = map_limits(torch.from_numpy(np.concatenate([sparse, -sparse[:2]])))
    assert (signed["low"], signed["high"]) == (-0.3, 0.3)
    constant = map_limits(torch.zeros(300))
    assert constant["high"] > constant["low"]  # still a range: the map draws


def test_a_dead_channel_keeps_the_stages_range():
    from convlens.views.maps import stage_limits

    relu = torch.rand(3, 4, 4)
    relu[1] = 0  # a ReLU channel that never fires
    limits = stage_limits(relu)
    assert limits["channel_limits"][1] == limits["limits"] and limits["limits"]["low"] == 0
    assert limits["channel_limits"][0]["high"] == pytest.approx(float(relu[0].max()))


def test_attribution_and_attack_limits(client, digits_run):
    run_id = digits_run.name
    heat = client.post(f"/api/runs/{run_id}/attribution", data={"test_index": 1, "method": "saliency"}).json()
    check(heat["limits"], unpacked(heat["map"]), signed=False)
    attack = client.post(f"/api/runs/{run_id}/attack", data={"test_index": 1, "eps": 0.2}).json()
    assert attack["perturbation_limits"]["low"] == -0.2 and attack["perturbation_limits"]["high"] == 0.2
    assert not attack["perturbation_limits"]["clipped"]  # the attack never leaves ±ε


def test_one_request_answers_every_method(client, digits_run):
    """POST /attributions: the input once, then each registered method's map, equal to what the
    one-method endpoint answers; a method that cannot explain (Grad-CAM at a flat stage) answers
    its error while the others still answer."""
    from convlens.inspect import ATTRIBUTIONS

    url = f"/api/runs/{digits_run.name}"
    body = client.post(f"{url}/attributions", data={"test_index": 4, "target": 2}).json()
    assert list(body["attributions"]) == ATTRIBUTIONS.names() and "input" in body
    for method, answer in body["attributions"].items():
        assert "input" not in answer and answer["target"] == 2
        alone = client.post(
            f"{url}/attribution", data={"test_index": 4, "target": 2, "method": method}
        ).json()
        np.testing.assert_array_equal(unpacked(answer["map"]), unpacked(alone["map"]))
        assert answer["limits"] == alone["limits"]

    both = client.post(
        f"{url}/attributions", data={"test_index": 4, "methods": ["saliency", "grad-cam"], "stage": "fc"}
    ).json()["attributions"]
    assert list(both) == ["saliency", "grad-cam"] and "map" in both["saliency"]
    assert "has no spatial feature map" in both["grad-cam"]["error"]
    listed = client.post(
        f"{url}/attributions", data={"test_index": 4, "methods": "occlusion,saliency"}
    ).json()
    assert list(listed["attributions"]) == ["occlusion", "saliency"]
    wrong = client.post(f"{url}/attributions", data={"test_index": 4, "methods": "saliency,lime"})
    assert wrong.status_code in (400, 422) and "methods must be one of" in wrong.json()["detail"]


def test_filter_limits(client, digits_run, digits_model):
    model = digits_model[0]
    for stage in ("conv1", "conv2"):  # 144 weights: plain max; 4,608: the percentile
        body = client.get(f"/api/runs/{digits_run.name}/filters", params={"stage": stage}).json()
        weight = dict(model.stages())[stage].weight.detach().numpy()
        check(body["convolutions"][0]["limits"], weight, signed=True)


def test_network_windows_of_the_digits_convnet(client, digits_run):
    """normalize 1x8x8 → conv1 (3x3, pad 1) → relu1 → pool1 (2x2) 16x4x4 → conv2 (3x3, pad 1)
    → relu2 → pool2 32x2x2 → flatten 128 → fc: the windows worked out by hand."""
    stages = {s["name"]: s for s in client.get(f"/api/runs/{digits_run.name}/network").json()["stages"]}
    conv2 = stages["conv2"]["windows"]
    assert conv2["pool1"]["rows"] == [[0, 1], [0, 2], [1, 3], [2, 3]]  # 3 rows, 2 at the edges
    assert conv2["pool1"]["cols"] == conv2["pool1"]["rows"]
    assert stages["pool1"]["windows"]["relu1"]["rows"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # conv2 row 1 reads pool1 rows 0..2 = relu1 rows 0..5 = conv1 rows 0..5 = input rows 0..6
    assert conv2["normalize"]["rows"][1] == [0, 6]
    assert conv2["relu1"]["rows"][1] == [0, 5]
    assert stages["pool2"]["windows"]["relu2"]["cols"] == [[0, 1], [2, 3]]
    assert stages["relu1"]["windows"]["conv1"]["rows"] == [[r, r] for r in range(8)]  # one cell each
    mixes = {name: stage["mixes_channels"] for name, stage in stages.items()}
    assert mixes == {"normalize": False, "conv1": True, "relu1": False, "pool1": False, "conv2": True,
                     "relu2": False, "pool2": False, "flatten": False, "fc": True, "softmax": True}  # fmt: skip
    assert stages["flatten"]["unit_grid"] == [32, 2, 2] and stages["flatten"]["windows"] == {}
    assert stages["fc"]["whole_input"] and stages["fc"]["windows"] == {}


def test_windows_only_lead_back_to_earlier_maps(digits_model):
    from convlens.errors import ConvlensError
    from convlens.inspect import receptive_fields

    fields = {field.stage: field for field in receptive_fields(digits_model[0])}
    with pytest.raises(ConvlensError, match="'conv2' does not come before 'conv1'"):
        fields["conv1"].windows_in(fields["conv2"])
    with pytest.raises(ConvlensError, match="both must be feature maps"):
        fields["fc"].windows_in(fields["conv1"])


def test_a_conv2_cell_depends_on_its_window_alone(client, digits_run, digits_model):
    """Independently of the geometry: change pool1 outside conv2 cell (1, 2)'s window and the cell
    keeps its value; change one value inside it and the cell changes."""
    model = digits_model[0]
    window = client.get(f"/api/runs/{digits_run.name}/network").json()["stages"]
    conv2 = next(s for s in window if s["name"] == "conv2")["windows"]["pool1"]
    (top, bottom), (left, right) = conv2["rows"][1], conv2["cols"][2]
    conv = dict(model.stages())["conv2"]
    pool1 = torch.rand(1, 16, 4, 4)
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[top : bottom + 1, left : right + 1] = True
    with torch.no_grad():
        cell = conv(pool1)[0, :, 1, 2]
        outside_changed = pool1 + 5 * (~inside)
        assert torch.allclose(conv(outside_changed)[0, :, 1, 2], cell, atol=1e-5)
        for row, col in inside.nonzero().tolist():
            poked = pool1.clone()
            poked[0, :, row, col] += 5
            assert not torch.allclose(conv(poked)[0, :, 1, 2], cell, atol=1e-3)


def test_the_page_draws_with_the_librarys_colour_maps():
    """draw.js's colour tables are matplotlib's RdBu_r and magma, sampled at even steps."""
    import re
    from pathlib import Path

    import matplotlib

    from convlens.server import app

    script = (Path(app.__file__).parent / "static" / "draw.js").read_text()
    for table, name in (("SIGNED", "RdBu_r"), ("MAGNITUDE", "magma")):
        listed = re.search(rf"const {table} = \[(.*?)\]", script, re.DOTALL).group(1)
        stops = re.findall(r'"([0-9a-f]{6})"', listed)
        samples = matplotlib.colormaps[name](np.linspace(0, 1, len(stops)))[:, :3]
        assert stops == ["".join(f"{round(255 * c):02x}" for c in rgb) for rgb in samples], name


def test_openapi_documents_the_map_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/runs/{run_id}/network" in paths
    stage = client.get("/openapi.json").json()["components"]["schemas"]["StageOutput"]
    assert {"limits", "channel_limits"} <= set(stage["properties"])
