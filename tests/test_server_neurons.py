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


def test_the_endpoint_is_in_the_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/runs/{run_id}/neuron" in paths
