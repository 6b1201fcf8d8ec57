"""The explorer's segmentation endpoints answer the library's numbers, refuse bad input with one
line, and a segmentation run's card, listing and views say what it is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from segmentation_fixtures import CLASSES, squares_run_once
from testing_helpers import unpacked


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory):
    return squares_run_once(tmp_path_factory)


@pytest.fixture(scope="module")
def client(squares_run, digits_run):
    from convlens.server import create_app

    return TestClient(create_app([squares_run, digits_run], allowed_hosts=["testserver"]))


@pytest.fixture(scope="module")
def run_id(client):
    return next(run["id"] for run in client.get("/api/runs").json() if run["task"] == "segmentation")


@pytest.fixture(scope="module")
def model(squares_run):
    from convlens.run import Run

    return Run.open(squares_run).model


def _pixels(body: dict) -> torch.Tensor:
    return torch.from_numpy(unpacked(body["input"]).copy())


def test_segment_answers_the_librarys_maps_and_the_true_mask(client, run_id, model, squares_run):
    from convlens.data import load_dataset
    from convlens.inspect.pixels import segment

    body = client.post(f"/api/runs/{run_id}/segment", data={"test_index": 3}).json()
    maps = segment(model, _pixels(body), CLASSES)
    assert np.array_equal(unpacked(body["probabilities"]), maps.probabilities.numpy())
    assert np.array_equal(unpacked(body["mask"]), maps.mask.float().numpy())
    assert np.array_equal(unpacked(body["confidence"]), maps.confidence.numpy())
    assert np.array_equal(unpacked(body["uncertainty"]), maps.uncertainty.numpy())
    assert body["shares"] == json.loads(json.dumps(maps.shares))
    assert body["classes"] == CLASSES and len(body["palette"]) == len(CLASSES)
    assert body["overlay_png"].startswith("data:image/png;base64,")
    spec = json.loads((squares_run / "model.json").read_text())["dataset"]["spec"]
    truth = load_dataset(spec).test_labels[3]
    assert np.array_equal(unpacked(body["truth"]["mask"]), truth.float().numpy())
    assert body["label"] is None and body["source"] == "test image 3"


def test_an_upload_has_no_true_mask(client, run_id):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    files = {"image": ("red.png", buffer.getvalue(), "image/png")}
    body = client.post(f"/api/runs/{run_id}/segment", files=files).json()
    assert body["truth"] is None and unpacked(body["probabilities"]).shape == (3, 32, 32)


def test_pixel_answers_explain_pixel(client, run_id, model):
    from convlens.inspect.pixels import explain_pixel, output_stage

    for target in (None, 2):
        form = {"test_index": 5, "row": 12, "col": 20, **({"target": target} if target is not None else {})}
        body = client.post(f"/api/runs/{run_id}/pixel", data=form).json()
        found = explain_pixel(model, _pixels(body), 12, 20, target=target)
        assert body["probabilities"] == found.probabilities.tolist()
        assert body["predicted"] == found.predicted and body["target"] == found.target
        assert body["receptive_fields"] == json.loads(json.dumps(found.receptive_fields))
        assert np.array_equal(unpacked(body["grad_cam"]), found.grad_cam.numpy())
        assert body["stage"] == found.stage and (body["row"], body["col"]) == (12, 20)
        assert body["output_stage"] == output_stage(model)


def test_portrait_answers_portrait_effect_on_the_models_mask(client, run_id, model):
    from convlens.inspect.pixels import segment
    from convlens.inspect.portrait import portrait_effect

    for effect, radius in (("blur", 2.5), ("grey", 6)):
        form = {"test_index": 1, "effect": effect, "radius": radius}
        body = client.post(f"/api/runs/{run_id}/portrait", data=form).json()
        pixels = _pixels(body)
        expected = portrait_effect(pixels, segment(model, pixels).mask != 0, effect=effect, radius=radius)
        assert np.array_equal(unpacked(body["portrait"]), expected.numpy())
        assert body["effect"] == effect


@pytest.mark.parametrize(
    ("path", "form", "status", "words"),
    [
        ("pixel", {"row": 32, "col": 0}, 400, "row must be a whole number 0..31"),
        ("pixel", {"row": 0, "col": 99}, 400, "col must be a whole number 0..31"),
        ("pixel", {"row": 0, "col": 0, "target": 3}, 400, "target must be a class index 0..2"),
        ("pixel", {"row": -1, "col": 0}, 422, "row"),
        ("pixel", {"row": "x", "col": 0}, 422, "row"),
        ("pixel", {"col": 0}, 422, "row"),
        ("portrait", {"effect": "sepia"}, 400, "effect must be one of blur, grey"),
        ("portrait", {"radius": 0}, 422, "radius"),
        ("portrait", {"radius": 500}, 422, "radius"),
        ("portrait", {"radius": ""}, 400, "radius: sent empty"),
        ("segment", {"test_index": 10_000}, 400, "test_index must be 0.."),
    ],
)
def test_bad_input_is_a_one_line_4xx(client, run_id, path, form, status, words):
    form = {"test_index": 0, **form}
    response = client.post(f"/api/runs/{run_id}/{path}", data=form)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail


def test_a_classifier_is_refused_with_one_line(client):
    runs = client.get("/api/runs").json()
    classifier = next(run["id"] for run in runs if run["task"] == "classification")
    for path in ("segment", "pixel", "portrait"):
        response = client.post(f"/api/runs/{classifier}/{path}", data={"test_index": 0, "row": 0, "col": 0})
        assert response.status_code == 400
        assert "classification model" in response.json()["detail"]


def test_the_listing_and_card_say_segmentation_with_its_scores(client, run_id, squares_run):
    listed = next(run for run in client.get("/api/runs").json() if run["id"] == run_id)
    assert listed["task"] == "segmentation"
    card = client.get(f"/api/runs/{run_id}").json()
    metrics = json.loads((squares_run / "model.json").read_text())["metrics"]
    assert card["task"] == "segmentation"
    assert card["metrics"]["test_mean_iou"] == metrics["test_mean_iou"]
    assert [row["iou"] for row in card["metrics"]["per_class_iou"]] == [
        row["iou"] for row in metrics["per_class_iou"]
    ]


def test_classification_endpoints_do_not_break_on_a_segmentation_run(client, run_id):
    images = client.get(f"/api/runs/{run_id}/test-images?count=2").json()["images"]
    assert [image["label"] for image in images] == [None, None]
    body = client.post(f"/api/runs/{run_id}/activations", data={"test_index": 0}).json()
    assert body["probabilities"] == [] and body["top"] == []
    assert "softmax" not in [stage["name"] for stage in body["stages"]]
    response = client.post(f"/api/runs/{run_id}/predict", data={"test_index": 0})
    assert response.status_code == 400 and "segment" in response.json()["detail"]
    response = client.get(f"/api/runs/{run_id}/default-attribution")  # whole-image maps: one pixel's instead
    detail = response.json()["detail"]
    assert response.status_code == 400 and "\n" not in detail and f"/api/runs/{run_id}/pixel" in detail


def test_the_segment_view_is_for_segmentation_runs_only(client):
    views = {view["name"]: view for view in client.get("/api/views").json()}
    assert views["segment"]["tasks"] == ["segmentation"]
    assert views["attack"]["tasks"] == ["classification"]
    assert views["attribution"]["tasks"] == ["classification"]
    assert set(views["overview"]["tasks"]) == {"classification", "segmentation"}
