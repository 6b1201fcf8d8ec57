"""The explorer's JSON API, checked against independent computations on a trained digits model.

Feature maps are compared with running the model's stages one by one by hand; probabilities
with a plain softmax of the model's logits; the playground with scipy's correlate2d.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.server import create_app
from testing_helpers import unpacked


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    return TestClient(create_app([digits_run], allowed_hosts=["testserver"]), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def run_id(digits_run) -> str:
    return digits_run.name


def by_hand(model, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage's output, running the stages one after another without hooks."""
    outputs, x = {}, image.unsqueeze(0)  # (1, C, H, W)
    with torch.no_grad():
        for name, module in model.stages():
            x = module(x)
            outputs[name] = x[0]
    outputs["softmax"] = torch.softmax(x[0], dim=0)
    return outputs


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_runs_lists_the_loaded_run(client, run_id, digits_model):
    runs = client.get("/api/runs").json()
    assert [r["id"] for r in runs] == [run_id]
    assert runs[0]["input_shape"] == [1, 8, 8]
    assert runs[0]["test_accuracy"] == pytest.approx(digits_model[1]["metrics"]["test_accuracy"])


def test_model_card_matches_model_and_checkpoint(client, run_id, digits_model):
    from convlens.models import count_parameters

    model, meta = digits_model
    card = client.get(f"/api/runs/{run_id}").json()
    stages = dict(model.stages())
    assert [s["name"] for s in card["stages"]] == [*stages, "softmax"]
    for stage in card["stages"][:-1]:
        assert stage["parameters"] == count_parameters(stages[stage["name"]])
    assert card["parameters"] == count_parameters(model)
    conv1 = next(s for s in card["stages"] if s["name"] == "conv1")
    assert conv1["shape"] == [16, 8, 8] and conv1["receptive_field"] == [3, 3]
    assert card["history"] == meta["history"]
    assert card["metrics"]["confusion"] == meta["metrics"]["confusion"]


def test_test_images_are_the_data_sets(client, run_id, digits):
    body = client.get(f"/api/runs/{run_id}/test-images", params={"start": 5, "count": 3}).json()
    assert body["total"] == len(digits.test_labels)
    for item in body["images"]:
        expected = digits.test_images[item["index"]].float() / 255
        assert np.allclose(unpacked(item["pixels"]), expected.numpy())
        assert item["label"] == int(digits.test_labels[item["index"]])
    spread = client.get(f"/api/runs/{run_id}/test-images", params={"count": 10, "spread": True}).json()
    indices = [item["index"] for item in spread["images"]]
    assert len(indices) == 10 and indices[-1] > 300


def test_predict_test_image_equals_softmax_of_logits(client, run_id, digits_model, digits):
    model, _ = digits_model
    body = client.post(f"/api/runs/{run_id}/predict", data={"test_index": 7}).json()
    image = digits.test_images[7].float() / 255
    with torch.no_grad():
        expected = torch.softmax(model(image.unsqueeze(0))[0], dim=0)
    assert np.allclose(body["probabilities"], expected.numpy(), atol=1e-6)
    assert body["top"][0]["index"] == int(expected.argmax())
    assert body["label"] == int(digits.test_labels[7])


def test_predict_upload_equals_cli_reading_of_the_same_file(client, run_id, digits_model, tmp_path):
    from convlens.data import load_image

    model, _ = digits_model
    rng = np.random.default_rng(0)
    picture = (rng.random((40, 30)) * 255).astype(np.uint8)  # any size: resized like `convlens predict`
    (tmp_path / "p.png").write_bytes(png_bytes(picture))
    body = client.post(
        f"/api/runs/{run_id}/predict", files={"image": ("p.png", png_bytes(picture), "image/png")}
    ).json()
    image = load_image(tmp_path / "p.png", (1, 8, 8))
    assert np.allclose(unpacked(body["input"]), image.numpy())
    with torch.no_grad():
        expected = torch.softmax(model(image.unsqueeze(0))[0], dim=0)
    assert np.allclose(body["probabilities"], expected.numpy(), atol=1e-6)


def test_activations_equal_stages_run_by_hand(client, run_id, digits_model, digits):
    model, _ = digits_model
    body = client.post(f"/api/runs/{run_id}/activations", data={"test_index": 3}).json()
    expected = by_hand(model, digits.test_images[3].float() / 255)
    assert [s["name"] for s in body["stages"]] == list(expected)
    for stage in body["stages"]:
        values = unpacked(stage["output"])
        assert values.shape == tuple(expected[stage["name"]].shape) == tuple(stage["shape"])
        assert np.allclose(values, expected[stage["name"]].numpy(), atol=1e-5), stage["name"]
        assert stage["min"] == pytest.approx(float(values.min())) and stage["max"] == pytest.approx(
            float(values.max())
        )


@pytest.mark.parametrize(
    ("stage", "channel", "row", "col"),
    [
        ("normalize", 0, 2, 3),
        ("conv1", 5, 0, 7),
        ("relu1", 5, 4, 4),
        ("pool1", 2, 1, 3),
        ("conv2", 9, 2, 1),
        ("flatten", 17, 0, 0),
        ("fc", 4, 0, 0),
        ("softmax", 6, 0, 0),
    ],
)
def test_arithmetic_equals_real_activations(client, run_id, digits_model, digits, stage, channel, row, col):
    model, _ = digits_model
    body = client.post(
        f"/api/runs/{run_id}/arithmetic",
        data={"test_index": 11, "stage": stage, "channel": channel, "row": row, "col": col},
    ).json()
    real = by_hand(model, digits.test_images[11].float() / 255)[stage]
    value = float(real[channel, row, col]) if real.ndim == 3 else float(real[channel])
    cell = body["cell"]
    assert cell["output"] == pytest.approx(value, abs=1e-5)
    assert cell["total"] == pytest.approx(value, abs=1e-4)
    if stage == "conv1":  # patch x kernel summed + bias, recomputed from the JSON numbers
        products = np.array(cell["patch"]) * np.array(cell["kernel"])
        assert products.sum() + cell["bias"] == pytest.approx(value, abs=1e-4)
        assert np.allclose(cell["kernel"], model.body.conv1.weight[channel].detach().numpy())


def test_arithmetic_receptive_field_outline(client, run_id):
    body = client.post(
        f"/api/runs/{run_id}/arithmetic", data={"test_index": 0, "stage": "conv1", "row": 0, "col": 5}
    ).json()
    assert body["receptive_field"] == {"top": 0, "bottom": 1, "left": 4, "right": 6, "whole_image": False}
    pool = client.post(
        f"/api/runs/{run_id}/arithmetic", data={"test_index": 0, "stage": "pool1", "row": 1, "col": 1}
    ).json()
    assert pool["receptive_field"] == {"top": 1, "bottom": 4, "left": 1, "right": 4, "whole_image": False}
    fc = client.post(f"/api/runs/{run_id}/arithmetic", data={"test_index": 0, "stage": "fc"}).json()
    assert fc["receptive_field"]["whole_image"] is True


@pytest.mark.parametrize("method", ["grad_cam", "saliency", "integrated_gradients", "occlusion"])
def test_attribution_maps(client, run_id, digits_model, digits, method):
    model, _ = digits_model
    body = client.post(f"/api/runs/{run_id}/attribution", data={"test_index": 2, "method": method}).json()
    heat = unpacked(body["map"])
    assert heat.shape == (8, 8) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    with torch.no_grad():
        predicted = int(model((digits.test_images[2].float() / 255).unsqueeze(0)).argmax())
    assert body["target"] == predicted
    chosen = client.post(
        f"/api/runs/{run_id}/attribution", data={"test_index": 2, "method": method, "target": 3}
    ).json()
    assert chosen["target"] == 3


def test_attack_stays_within_eps_and_reports_the_adversarial_probabilities(client, run_id, digits_model):
    model, _ = digits_model
    body = client.post(
        f"/api/runs/{run_id}/attack", data={"test_index": 4, "method": "pgd", "eps": 0.2, "steps": 5}
    ).json()
    original, adversarial = unpacked(body["input"]), unpacked(body["adversarial"])
    assert np.abs(adversarial - original).max() <= 0.2 + 1e-6
    assert np.allclose(unpacked(body["perturbation"]), adversarial - original, atol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(adversarial.copy()).unsqueeze(0))[0], dim=0)
    assert np.allclose(body["attacked"]["probabilities"], expected.numpy(), atol=1e-5)
    still = client.post(f"/api/runs/{run_id}/attack", data={"test_index": 4, "eps": 0}).json()
    assert np.allclose(unpacked(still["adversarial"]), original)
    assert np.allclose(still["attacked"]["probabilities"], still["clean"]["probabilities"], atol=1e-6)


def test_attack_on_a_drawing_attacks_the_prediction(client, run_id):
    drawing = np.zeros((64, 64), np.uint8)
    drawing[10:54, 28:36] = 255
    body = client.post(
        f"/api/runs/{run_id}/attack",
        files={"image": ("d.png", png_bytes(drawing), "image/png")},
        data={"eps": 0.3, "target": 5},
    ).json()
    assert body["label"] is None
    assert body["attacked_label"] == body["clean"]["top"][0]["index"]
    assert body["summary"]["target"] == 5


def test_filters_are_the_models_kernels(client, run_id, digits_model):
    model, _ = digits_model
    body = client.get(f"/api/runs/{run_id}/filters", params={"stage": "conv2"}).json()
    (conv,) = body["convolutions"]
    assert np.allclose(unpacked(conv["weight"]), model.body.conv2.weight.detach().numpy())
    assert conv["bias"] == pytest.approx(model.body.conv2.bias.tolist())


def test_features_and_top_images(client, run_id, digits_model, digits):
    model, _ = digits_model
    body = client.get(f"/api/runs/{run_id}/features", params={"stage": "relu1"}).json()
    images = unpacked(body["images"])
    assert images.shape == (16, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    top = client.get(f"/api/runs/{run_id}/top-images", params={"stage": "relu1", "channel": 3}).json()
    scores = [item["score"] for item in top["images"]]
    assert len(scores) == 9 and scores == sorted(scores, reverse=True)
    all_scores = [
        float(by_hand(model, digits.test_images[i].float() / 255)["relu1"][3].mean())
        for i in range(len(digits.test_labels))
    ]
    assert scores[0] == pytest.approx(max(all_scores), abs=1e-5)
    assert top["images"][0]["index"] == int(np.argmax(all_scores))
    assert body["activation"][3] >= max(all_scores)  # the best test image is one of the starts


def test_playground_edge_kernel_on_smiley_equals_scipy(client):
    from scipy.signal import correlate2d

    from convlens.inspect import KERNELS, SMILEY

    presets = client.get("/api/playground").json()
    assert presets["kernels"]["edge"] == KERNELS["edge"]
    smiley = client.get("/api/playground/picture", params={"name": "smiley"}).json()["image"]
    assert smiley == SMILEY.tolist()
    body = client.post("/api/playground/convolve", json={"image": smiley, "kernel": "edge"}).json()
    expected = correlate2d(np.array(smiley), np.array(KERNELS["edge"]), mode="valid")
    assert np.allclose(body["output"], expected)
    assert len(body["cells"]) == 36
    cell = body["cells"][7]  # row 1, col 1
    assert (cell["row"], cell["col"]) == (1, 1) and cell["rows"] == [1, 2, 3]
    assert np.array_equal(cell["patch"], np.array(smiley)[1:4, 1:4])
    assert np.sum(cell["products"]) == pytest.approx(expected[1, 1])
    padded = client.post(
        "/api/playground/convolve",
        json={"image": smiley, "kernel": [[1, 2], [3, 4]], "padding": 1, "stride": 2},
    ).json()
    expected = correlate2d(np.pad(np.array(smiley), 1), np.array([[1, 2], [3, 4]]), mode="valid")[::2, ::2]
    assert np.allclose(padded["output"], expected)
    # the page colours the map with the server's limits: signed, centred on 0, at the largest |value|
    # (a 5 x 5 map is under the 256 values from which the limits become robust percentiles)
    assert padded["limits"]["signed"] and padded["limits"]["map"] == "diverging"
    assert padded["limits"]["high"] == pytest.approx(np.abs(expected).max())
    assert padded["limits"]["low"] == pytest.approx(-np.abs(expected).max())


def test_playground_photo_is_resized(client):
    body = client.get("/api/playground/picture", params={"name": "camera", "size": 12}).json()
    grid = np.array(body["image"])
    assert grid.shape == (12, 12) and grid.min() >= 0 and grid.max() <= 1


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/predict",
        "/api/runs/{run_id}/activations",
        "/api/runs/{run_id}/arithmetic",
        "/api/runs/{run_id}/attribution",
        "/api/runs/{run_id}/attack",
        "/api/runs/{run_id}/features",
        "/api/runs/{run_id}/filters",
        "/api/runs/{run_id}/top-images",
        "/api/playground/convolve",
    ):
        assert path in paths, path
    assert "test_index" in str(paths["/api/runs/{run_id}/predict"]) or "Body_" in str(paths)


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/main.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/static/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_several_runs_are_switchable(tmp_path, digits_run, digits_model):
    from convlens.checkpoint import save_checkpoint
    from convlens.models import create_model

    other = tmp_path / "nested" / digits_run.name  # same folder name: ids must still differ
    untrained = create_model("tinyvgg", (1, 8, 8), 10)
    meta = digits_model[1]
    save_checkpoint(
        other / "model", untrained, {"class_names": meta["class_names"], "dataset": meta["dataset"]}
    )
    client = TestClient(create_app([digits_run, other], allowed_hosts=["testserver"]))
    ids = [r["id"] for r in client.get("/api/runs").json()]
    assert len(set(ids)) == 2
    models = {client.get(f"/api/runs/{i}").json()["model"]["name"] for i in ids}
    assert models == {"convnet", "tinyvgg"}
    one = client.post(f"/api/runs/{ids[0]}/predict", data={"test_index": 0}).json()["probabilities"]
    two = client.post(f"/api/runs/{ids[1]}/predict", data={"test_index": 0}).json()["probabilities"]
    assert one != two


def test_rgb_model_of_another_size(tmp_path):
    """A 3-channel 12x16 model (untrained: only shapes matter) through every image endpoint."""
    from convlens.checkpoint import save_checkpoint
    from convlens.models import create_model

    model = create_model("convnet", (3, 12, 16), 3)
    save_checkpoint(tmp_path / "rgb" / "model", model, {"class_names": ["a", "b", "c"], "dataset": {}})
    client = TestClient(
        create_app([tmp_path / "rgb"], allowed_hosts=["testserver"]), raise_server_exceptions=False
    )
    photo = (np.random.default_rng(1).random((30, 40, 3)) * 255).astype(np.uint8)
    files = {"image": ("photo.png", png_bytes(photo), "image/png")}
    body = client.post("/api/runs/rgb/activations", files=files).json()
    assert unpacked(body["input"]).shape == (3, 12, 16)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(unpacked(body["input"]).copy()).unsqueeze(0))[0], 0)
    assert np.allclose(body["probabilities"], expected.numpy(), atol=1e-6)
    cell = client.post("/api/runs/rgb/arithmetic", files=files, data={"stage": "conv1", "row": 3, "col": 9})
    assert cell.json()["cell"]["input_channels"] == [0, 1, 2]
    assert cell.json()["receptive_field"] == {
        "top": 2,
        "bottom": 4,
        "left": 8,
        "right": 10,
        "whole_image": False,
    }
    attack = client.post("/api/runs/rgb/attack", files=files, data={"eps": 0.05}).json()
    assert unpacked(attack["perturbation"]).shape == (3, 12, 16)
    heat = client.post("/api/runs/rgb/attribution", files=files, data={"method": "saliency"}).json()
    assert unpacked(heat["map"]).shape == (12, 16)
    # no data set in the checkpoint: test images are a clear 4xx, uploads still work
    assert client.post("/api/runs/rgb/predict", data={"test_index": 0}).status_code == 400


def test_the_large_data_recipes_convnet_through_every_view(tmp_path):
    """No last pooling, a hidden layer (fc1, relu_fc1): every view the page opens answers for it."""
    from convlens.checkpoint import save_checkpoint
    from convlens.models import create_model
    from convlens.train.recipe import LARGE_MODEL_OPTIONS

    torch.manual_seed(0)
    model = create_model("convnet", (1, 28, 28), 10, **LARGE_MODEL_OPTIONS).eval()
    names = [f"c{i}" for i in range(10)]
    save_checkpoint(tmp_path / "large" / "model", model, {"class_names": names, "dataset": {}})
    client = TestClient(
        create_app([tmp_path / "large"], allowed_hosts=["testserver"]), raise_server_exceptions=False
    )
    card = client.get("/api/runs/large").json()
    assert [row["name"] for row in card["stages"]][-5:] == ["flatten", "fc1", "relu_fc1", "fc", "softmax"]
    digit = (np.random.default_rng(2).random((28, 28)) * 255).astype(np.uint8)
    files = {"image": ("digit.png", png_bytes(digit), "image/png")}
    body = client.post("/api/runs/large/activations", files=files).json()
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(unpacked(body["input"]).copy()).unsqueeze(0))[0], 0)
    assert np.allclose(body["probabilities"], expected.numpy(), atol=1e-6)
    for stage in ("conv3", "fc1", "relu_fc1"):
        answer = client.post("/api/runs/large/arithmetic", files=files, data={"stage": stage, "channel": 3})
        assert answer.status_code == 200, (stage, answer.text)
        cell = answer.json()["cell"]
        assert cell["total"] == pytest.approx(cell["output"], abs=1e-5), stage
    assert client.get("/api/runs/large/network").status_code == 200
    assert client.get("/api/runs/large/filters", params={"stage": "conv3"}).status_code == 200
    heat = client.post("/api/runs/large/attribution", files=files, data={"method": "grad-cam"})
    assert heat.status_code == 200 and unpacked(heat.json()["map"]).shape == (28, 28)


def test_invert_field_and_shift_check(client, run_id, digits_model, digits):
    """Every image answer carries the shift check; ``invert`` sends 1 − pixels to the model."""
    model, _ = digits_model
    plain = client.post(f"/api/runs/{run_id}/predict", data={"test_index": 7}).json()
    assert plain["inverted"] is False
    assert plain["shift"]["is_far"] is False and plain["shift"]["message"] == ""
    body = client.post(f"/api/runs/{run_id}/predict", data={"test_index": 7, "invert": "true"}).json()
    image = digits.test_images[7].float() / 255
    assert body["inverted"] is True and body["label"] == plain["label"]
    assert np.allclose(unpacked(body["input"]), 1 - image.numpy(), atol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(model((1 - image).unsqueeze(0))[0], dim=0)
    assert np.allclose(body["probabilities"], expected.numpy(), atol=1e-6)
    assert body["shift"]["is_far"] and body["shift"]["looks_inverted"]
    assert body["shift"]["message"].startswith("looks inverted")
    for endpoint, fields in (("activations", {}), ("attribution", {}), ("arithmetic", {"stage": "conv1"})):
        answer = client.post(
            f"/api/runs/{run_id}/{endpoint}", data={"test_index": 7, "invert": "true", **fields}
        )
        assert answer.json()["shift"]["looks_inverted"] is True, endpoint


def test_a_photo_upload_is_far_from_the_digits(client, run_id):
    import skimage.data

    files = {"image": ("camera.png", png_bytes(skimage.data.camera()), "image/png")}
    body = client.post(f"/api/runs/{run_id}/attack", files=files, data={"eps": 0.1}).json()
    assert body["shift"]["is_far"] and body["shift"]["reason"] == "tones"
    assert not body["shift"]["looks_inverted"]


def test_top_images_of_a_dead_channel_say_it_is_dead(digits_run, digits):
    app = create_app([digits_run], allowed_hosts=["testserver"])
    (loaded,) = app.state.runs.runs.values()
    with torch.no_grad():
        dict(loaded.model.stages())["conv1"].bias[4] = -1e4  # relu1 channel 4 never fires
    client = TestClient(app, raise_server_exceptions=False)
    base = f"/api/runs/{loaded.run_id}/top-images"
    dead = client.get(base, params={"stage": "relu1", "channel": 4}).json()
    assert dead["dead"] == f"dead: never active on the {len(digits.test_labels)} test images"
    assert dead["images"] == []
    live = client.get(base, params={"stage": "relu1", "channel": 3}).json()
    assert live["dead"] is None and len(live["images"]) == 9


def test_arithmetic_of_a_flatten_unit_outlines_its_pool_cell(client, run_id):
    body = client.post(
        f"/api/runs/{run_id}/arithmetic", data={"test_index": 0, "stage": "flatten", "channel": 17}
    ).json()
    pool = client.post(
        f"/api/runs/{run_id}/arithmetic",
        data={"test_index": 0, "stage": "pool2", "channel": 17 // 4, "row": 17 % 4 // 2, "col": 17 % 2},
    ).json()
    assert not body["receptive_field"]["whole_image"]
    assert body["receptive_field"] == pool["receptive_field"]
