"""The neuron panel's endpoint, checked against the core and against torch on the digits run."""

from __future__ import annotations

import re

import pytest
import torch
from fastapi.testclient import TestClient

from convlens.server import create_app
from testing_helpers import unpacked

TEST_INDEX = 4


def tensor(value: dict) -> torch.Tensor:
    return torch.from_numpy(unpacked(value).copy())


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    return TestClient(create_app([digits_run], allowed_hosts=["testserver"]), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def url(digits_run) -> str:
    return f"/api/runs/{digits_run.name}/neuron"


@pytest.fixture(scope="module")
def answer(client, url) -> dict:
    response = client.post(url, data={"test_index": str(TEST_INDEX), "stage": "relu2", "channel": "3"})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_panel_carries_the_channel_the_kernel_feeding_it_and_its_map(answer, digits_model, digits):
    model, _ = digits_model
    image = digits.test_images[TEST_INDEX].float() / 255  # digits are uint8
    assert (answer["stage"], answer["channel"], answer["kind"], answer["channels"]) == (
        "relu2",
        3,
        "relu",
        32,
    )
    assert answer["kernel"]["stage"] == "conv2" and answer["kernel"]["input_stage"] == "pool1"
    kernel = tensor(answer["kernel"]["weight"])
    torch.testing.assert_close(kernel, dict(model.stages())["conv2"].weight[3].detach())
    with torch.no_grad():
        x = image.unsqueeze(0)
        for name, module in model.stages():
            x = module(x)
            if name == "relu2":
                break
    expected = x[0, 3]
    torch.testing.assert_close(tensor(answer["feature_map"]), expected)
    row, col = divmod(int(expected.argmax()), expected.shape[1])
    assert (answer["strongest"]["row"], answer["strongest"]["col"]) == (row, col)
    assert answer["cell"]["type"] == "ReluCell" and answer["steps"]
    assert answer["label"] == int(digits.test_labels[TEST_INDEX])  # the input keys of every image view


def test_patches_are_test_images_cropped_to_their_receptive_field(answer, digits):
    patches = answer["top_patches"]
    assert len(patches) == 9 and len(answer["bottom_patches"]) == 9
    assert answer["image_count"] == digits.test_images.shape[0]
    values = [p["value"] for p in patches]
    assert values == sorted(values, reverse=True)
    for patch in patches[:3]:
        region = patch["region"]
        crop = digits.test_images[
            patch["index"], :, region["top"] : region["bottom"] + 1, region["left"] : region["right"] + 1
        ]
        torch.testing.assert_close(tensor(patch["pixels"]), crop.float() / 255)
        assert patch["class"] == str(int(digits.test_labels[patch["index"]]))


def test_the_unit_optimum_is_reported_beside_the_best_test_image(answer):
    optimum = answer["optimum"]
    assert not optimum["closed_form"] and optimum["steps"] > 0
    assert optimum["activation"] >= optimum["best_image_activation"]  # the search starts from that image
    region = optimum["region"]
    height, width = region["bottom"] - region["top"] + 1, region["right"] - region["left"] + 1
    assert unpacked(optimum["crop"]).shape == (1, height, width)


def stage_forward(model, x: torch.Tensor, stop: str) -> torch.Tensor:
    """The digits convnet's stages run one by one up to ``stop`` (no hooks, no convlens code)."""
    for name, module in model.stages():
        x = module(x)
        if name == stop:
            return x
    raise AssertionError(stop)


def test_the_channel_visualization_is_reported_beside_the_best_test_image(answer, digits_model, digits):
    model, _ = digits_model
    picture = answer["visualization"]
    assert picture["steps"] > 0 and set(picture) == {
        "image",
        "activation",
        "best_image_activation",
        "best_image_index",
        "steps",
    }
    image = tensor(picture["image"])
    assert image.shape == (1, 8, 8)
    with torch.no_grad():
        reached = stage_forward(model, image.unsqueeze(0), "relu2")[0, 3].mean()
        means = stage_forward(model, digits.test_images.float() / 255, "relu2")[:, 3].mean(dim=(1, 2))
    assert picture["activation"] == pytest.approx(float(reached), abs=1e-5)
    assert picture["best_image_index"] == int(means.argmax())
    assert picture["best_image_activation"] == pytest.approx(float(means.max()), abs=1e-5)


def test_the_pictures_come_apart_from_the_panel(client, url, answer, digits_run):
    response = client.post(
        url, data={"test_index": "1", "stage": "relu2", "channel": "3", "pictures": "false"}
    )
    assert response.status_code == 200
    panel = response.json()
    assert panel["optimum"] is None and panel["visualization"] is None and panel["top_patches"]
    pictures = client.get(
        f"/api/runs/{digits_run.name}/neuron-pictures", params={"stage": "relu2", "channel": 3}
    )
    assert pictures.status_code == 200
    found = pictures.json()
    assert (found["stage"], found["channel"]) == ("relu2", 3)
    assert found["optimum"] == answer["optimum"] and found["visualization"] == answer["visualization"]
    refused = client.get(f"/api/runs/{digits_run.name}/neuron-pictures", params={"stage": "fc", "channel": 0})
    assert refused.status_code == 400 and "has no channels to visualize" in refused.json()["detail"]


def test_the_ranking_orders_the_channels_by_grad_cams_contribution(client, digits_run, digits_model, digits):
    model, _ = digits_model
    image = (digits.test_images[TEST_INDEX].float() / 255).unsqueeze(0)
    feature_map = stage_forward(model, image, "relu2").detach().requires_grad_()
    x = feature_map
    after = False
    for name, module in model.stages():
        if after:
            x = module(x)
        after = after or name == "relu2"
    ranked = f"/api/runs/{digits_run.name}/neuron-ranking"
    for target in (None, 7):
        explained = int(x[0].argmax()) if target is None else target
        (gradient,) = torch.autograd.grad(x[0, explained], feature_map, retain_graph=True)
        contributions = (gradient[0].mean(dim=(1, 2)) * feature_map[0].detach().mean(dim=(1, 2))).double()
        form = {"test_index": str(TEST_INDEX), "stage": "relu2"}
        response = client.post(ranked, data=form if target is None else {**form, "target": str(target)})
        assert response.status_code == 200, response.text
        found = response.json()
        assert found["target"] == explained and found["class"] == str(explained)
        order = [line["channel"] for line in found["channels"]]
        assert sorted(order) == list(range(32))
        by_hand = contributions[order]  # the contributions computed here, in the answer's order
        assert bool((by_hand[:-1] >= by_hand[1:] - 1e-9).all())  # largest first (ties: either order)
        shown = torch.tensor([line["contribution"] for line in found["channels"]], dtype=torch.float64)
        torch.testing.assert_close(shown, by_hand, atol=1e-6, rtol=1e-4)
        assert found["map_mean"] == pytest.approx(float(contributions.sum()), abs=1e-6)
    refused = client.post(ranked, data={"test_index": "0", "stage": "relu2", "target": "10"})
    assert refused.status_code == 400 and refused.json()["detail"].startswith(
        "target must be a class index 0..9"
    )


def test_a_second_channel_of_the_stage_reuses_the_scan(client, url, digits_run):
    store = client.app.state.runs
    run = store.get(digits_run.name)
    assert ("neuron-peaks", "relu2") in run.cache
    scan = run.cache[("neuron-peaks", "relu2")]
    response = client.post(url, data={"test_index": "0", "stage": "relu2", "channel": "5"})
    assert response.status_code == 200
    assert run.cache[("neuron-peaks", "relu2")] is scan


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        (
            {"stage": "conv9", "channel": "0"},
            r"^unknown stage 'conv9'; this model's stages are: normalize, conv1",
        ),
        (
            {"stage": "fc", "channel": "0"},
            r"^stage 'fc' has no channels to visualize; choose one of: conv1, relu1",
        ),
        ({"stage": "conv1", "channel": "16"}, r"^channel must be 0\.\.15 for stage 'conv1', got 16$"),
    ],
)
def test_bad_stage_or_channel_is_a_one_line_400(client, url, form, detail):
    response = client.post(url, data={"test_index": "0", **form})
    assert response.status_code == 400
    assert re.search(detail, response.json()["detail"])


def test_the_endpoints_are_in_the_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/runs/{run_id}/neuron", "/api/runs/{run_id}/neuron-pictures"} <= set(paths)
    assert "/api/runs/{run_id}/neuron-ranking" in paths
