"""The learning playground: data sets, features, the network's neuron maps against a hand
computation in numpy, and the explorer's API (bounds → 400, the event stream, 429, a
disconnect stopping the training). The CLI and the defaults: test_playground2d_cli.py; the
regression data sets and their loss: test_playground2d_regression.py; weights and biases set by
hand: test_playground2d_edits.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.playground2d import (
    DATASETS,
    FEATURES,
    PLANE,
    PlaygroundConfig,
    Trainer,
    feature_matrix,
    make_points,
    plane_grid,
)
from convlens.server import create_app
from testing_helpers import unpacked

PAGE = "test-page-1"
ACTIVATIONS_BY_HAND = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "linear": lambda x: x,
}


# --- data sets and features -------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name, data in DATASETS.items() if data.task == "classification"])
def test_data_sets_are_balanced_seeded_and_split(name):
    points = make_points(name, noise=0, train_percent=70, seed=3)
    assert points.train_points.shape == (350, 2) and points.test_points.shape == (150, 2)
    labels = torch.cat([points.train_labels, points.test_labels])
    assert set(labels.tolist()) == {0.0, 1.0} and 200 <= labels.sum() <= 300  # xor: uniform, so about half
    everything = torch.cat([points.train_points, points.test_points])
    assert everything.abs().max() <= PLANE
    again = make_points(name, noise=0, train_percent=70, seed=3)
    assert torch.equal(again.train_points, points.train_points)
    assert not torch.equal(
        make_points(name, noise=0, train_percent=70, seed=4).train_points, points.train_points
    )


def test_the_shapes_are_what_their_names_say():
    circle = make_points("circle", seed=0)
    radius = circle.train_points.norm(dim=1)
    assert radius[circle.train_labels == 1].max() <= 2.5 + 1e-5
    assert radius[circle.train_labels == 0].min() >= 3.5 - 1e-5
    xor = make_points("xor", seed=0)
    assert torch.equal(xor.train_labels, (xor.train_points.prod(dim=1) > 0).float())
    gauss = make_points("gauss", seed=0)
    assert gauss.train_points[gauss.train_labels == 1].mean(0).tolist() == pytest.approx([2, 2], abs=0.3)
    spiral = make_points("spiral", seed=0)
    every = torch.cat([spiral.train_points, spiral.test_points])
    assert every.norm(dim=1).max() <= 5.0 + 1e-5  # no noise: the arms end at radius 5
    noisy = make_points("circle", noise=50, seed=0)
    assert noisy.train_points.norm(dim=1)[noisy.train_labels == 1].max() > 2.5  # noise blurs the classes


def numpy_features(points: np.ndarray) -> dict[str, np.ndarray]:
    """Every input feature of the points (N, 2), computed with numpy alone."""
    x1, x2 = points[:, 0], points[:, 1]
    return {
        "x1": x1,
        "x2": x2,
        "x1sq": x1**2,
        "x2sq": x2**2,
        "x1x2": x1 * x2,
        "sinx1": np.sin(x1),
        "sinx2": np.sin(x2),
    }


def test_features_against_numpy():
    points = torch.tensor([[1.5, -2.0], [-0.5, 3.0]])
    by_hand = numpy_features(points.numpy())
    matrix = feature_matrix(points, tuple(FEATURES))
    for column, name in enumerate(FEATURES):
        np.testing.assert_allclose(matrix[:, column].numpy(), by_hand[name], rtol=1e-6)
    grid = plane_grid(3)  # row by row from the top: (x1, x2) = (-6, 6), (0, 6), (6, 6), (-6, 0), ...
    assert grid[:4].tolist() == [[-6, 6], [0, 6], [6, 6], [-6, 0]]


# --- the network's pictures against a hand computation ----------------------------------------


def by_hand(
    points: np.ndarray, features: tuple[str, ...], weights, biases, activation: str
) -> list[np.ndarray]:
    """Every layer's output, (N, width), in float64 numpy from the weights alone."""
    columns = numpy_features(points)
    x = np.stack([columns[name] for name in features], axis=1)
    outputs = []
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = x @ np.asarray(w, dtype=np.float64).T + np.asarray(b, dtype=np.float64)
        last = layer == len(weights) - 1
        x = 1 / (1 + np.exp(-x)) if last else ACTIVATIONS_BY_HAND[activation](x)
        outputs.append(x)
    return outputs


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_each_neuron_map_is_that_neuron_computed_directly(activation):
    config = PlaygroundConfig(
        dataset="xor", features=("x1", "x2", "x1x2", "sinx1"), hidden=(3, 2), activation=activation
    )
    trainer = Trainer(config)
    for _ in range(3):
        trainer.train_epoch()
    snapshot = trainer.snapshot(neuron_grid=16, boundary_grid=24)
    grid = plane_grid(16).double().numpy()
    expected = by_hand(grid, config.features, snapshot.weights, snapshot.biases, activation)
    assert [tuple(layer.shape) for layer in snapshot.neurons] == [(3, 16, 16), (2, 16, 16), (1, 16, 16)]
    for neurons, outputs in zip(snapshot.neurons, expected, strict=True):
        for n in range(neurons.shape[0]):
            np.testing.assert_allclose(neurons[n].flatten().numpy(), outputs[:, n], atol=1e-5)
    boundary = by_hand(
        plane_grid(24).double().numpy(), config.features, snapshot.weights, snapshot.biases, activation
    )[-1]
    np.testing.assert_allclose(snapshot.boundary.flatten().numpy(), boundary[:, 0], atol=1e-5)


def test_losses_and_accuracy_are_those_of_the_points():
    trainer = Trainer(PlaygroundConfig(dataset="circle", hidden=(4,)))
    trainer.train_epoch()
    snapshot = trainer.snapshot()
    points = trainer.points
    probability = by_hand(
        points.test_points.double().numpy(), ("x1", "x2"), snapshot.weights, snapshot.biases, "tanh"
    )[-1][:, 0]
    labels = points.test_labels.double().numpy()
    cross_entropy = -np.mean(labels * np.log(probability) + (1 - labels) * np.log(1 - probability))
    assert snapshot.test_loss == pytest.approx(cross_entropy, rel=1e-4)
    assert snapshot.test_accuracy == pytest.approx(np.mean((probability > 0.5) == labels))


def test_regularization_shrinks_the_weights():
    def weight_size(regularization: str) -> float:
        config = PlaygroundConfig(
            dataset="gauss", hidden=(4,), regularization=regularization, regularization_rate=0.1
        )
        trainer = Trainer(config)
        for _ in range(5):
            trainer.train_epoch()
        return sum(float(w.abs().sum()) for w in trainer.snapshot().weights)

    assert weight_size("l1") < weight_size("none") and weight_size("l2") < weight_size("none")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden": (8,) * 7}, "hidden: at most 6 hidden layers, got 7"),
        ({"hidden": (9,)}, "hidden: each layer has 1 to 8 neurons, got 9"),
        ({"lr": 0}, "lr must be above 0"),
        ({"noise": 51}, "noise must be between 0 and 50 (percent)"),
        ({"noise": -1}, "noise must be between 0 and 50"),
        (
            {"dataset": "moons"},
            "dataset 'moons' is not one of spiral, xor, circle, gauss, plane, multi-gauss",
        ),
        ({"features": ("x3",)}, "features: unknown feature 'x3'"),
        ({"features": ()}, "features: choose at least one"),
        ({"activation": "gelu"}, "activation 'gelu' is not one of relu, tanh, sigmoid, linear"),
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 100"),
        ({"train_percent": 95}, "train_percent must be between 10 and 90"),
    ],
)
def test_bad_settings_name_the_parameter(changes, message):
    from convlens.errors import ConvlensError
    from convlens.playground2d import check_config

    with pytest.raises(ConvlensError) as caught:
        check_config(PlaygroundConfig(**changes))
    assert str(caught.value).startswith(message)
    assert caught.value.parameter == next(iter(changes))


# --- the explorer's API ------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    return create_app([], runs_dir=tmp_path, allowed_hosts=["testserver"])


@pytest.fixture
def client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def events(text: str) -> list[tuple[str, dict]]:
    parsed = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


def test_options_list_everything_the_page_offers(client):
    options = client.get("/api/playground2d").json()
    assert list(options["datasets"]) == list(DATASETS)
    assert options["tasks"] == {name: data.task for name, data in DATASETS.items()}
    assert options["tasks"]["plane"] == options["tasks"]["multi-gauss"] == "regression"
    assert list(options["features"]) == list(FEATURES)
    assert options["defaults"]["hidden"] == list(PlaygroundConfig().hidden)
    assert (options["max_layers"], options["max_neurons"], options["max_noise"]) == (6, 8, 50)


def test_start_answers_points_features_and_a_snapshot_that_matches_its_weights(client):
    body = client.post(
        "/api/playground2d/start", json={"page": PAGE, "dataset": "circle", "hidden": [3], "seed": 5}
    ).json()
    assert body["config"]["dataset"] == "circle" and body["config"]["seed"] == 5
    assert len(body["points"]["train"]) == len(body["points"]["test"]) == 250
    assert unpacked(body["feature_maps"]).shape == (len(FEATURES), 32, 32)
    stepped = client.post(f"/api/playground2d/{PAGE}/step").json()
    assert stepped["epoch"] == 1
    layers = [unpacked(layer) for layer in stepped["layers"]]
    assert [layer.shape for layer in layers] == [(3, 32, 32), (1, 32, 32)]
    expected = by_hand(
        plane_grid(32).double().numpy(), ("x1", "x2"), stepped["weights"], stepped["biases"], "tanh"
    )
    for layer, outputs in zip(layers, expected, strict=True):
        np.testing.assert_allclose(layer.reshape(layer.shape[0], -1).T, outputs, atol=1e-5)
    # the page colours each map with the server's limits: tanh neurons on a fixed ±1, features by value
    assert len(stepped["neuron_limits"]) == 1 and len(stepped["neuron_limits"][0]) == 3
    assert all(limits["low"] == -1 and limits["high"] == 1 for limits in stepped["neuron_limits"][0])
    features = unpacked(body["feature_maps"])
    assert [limits["signed"] for limits in body["feature_limits"]] == [bool(f.min() < 0) for f in features]
    points = np.array(body["points"]["test"])
    probability = by_hand(points[:, :2], ("x1", "x2"), stepped["weights"], stepped["biases"], "tanh")[-1][
        :, 0
    ]
    assert stepped["test_accuracy"] == pytest.approx(np.mean((probability > 0.5) == points[:, 2]), abs=1e-6)


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"hidden": [2] * 7}, "hidden: at most 6 hidden layers, got 7"),
        ({"hidden": [9]}, "hidden: each layer has 1 to 8 neurons, got 9"),
        ({"lr": 0}, "lr must be above 0 and at most 10, got 0.0"),
        ({"lr": -0.1}, "lr must be above 0 and at most 10, got -0.1"),
        ({"noise": 50.5}, "noise must be between 0 and 50 (percent), got 50.5"),
        (
            {"dataset": "moons"},
            "dataset 'moons' is not one of spiral, xor, circle, gauss, plane, multi-gauss",
        ),
        (
            {"features": ["x1", "cos"]},
            "features: unknown feature 'cos'; choose from x1, x2, x1sq, x2sq, x1x2, sinx1, sinx2",
        ),
        ({"page": "no"}, "page: expected the page's id, 8 to 64 letters, digits, - or _"),
    ],
)
def test_out_of_range_settings_are_400_with_one_message(client, changes, detail):
    response = client.post("/api/playground2d/start", json={"page": PAGE, **changes})
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


def test_the_stream_sends_snapshots_then_ends(client):
    client.post("/api/playground2d/start", json={"page": PAGE, "hidden": [4]})
    with client.stream("GET", f"/api/playground2d/{PAGE}/stream?updates=3") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    received = events(text)
    assert [kind for kind, _ in received] == ["snapshot"] * 3 + ["end"]
    epochs = [data["epoch"] for _, data in received[:3]]
    assert epochs == sorted(epochs) and epochs[0] >= 1
    assert received[-1][1] == {"reason": "updates", "updates": 3}
    assert unpacked(received[0][1]["boundary"]).shape == (80, 80)


def test_unknown_page_is_404_and_forget_removes_it(client):
    assert client.post("/api/playground2d/nobody-here/step").status_code == 404
    client.post("/api/playground2d/start", json={"page": PAGE, "hidden": []})
    assert client.delete(f"/api/playground2d/{PAGE}").status_code == 200
    assert client.post(f"/api/playground2d/{PAGE}/step").status_code == 404


def test_a_fifth_training_is_429_and_a_page_replaces_its_own(app, client):
    from convlens.server.playground2d import MAX_RUNNING

    pages = [f"page-number-{i}" for i in range(MAX_RUNNING + 1)]
    for page in pages:
        assert client.post("/api/playground2d/start", json={"page": page, "hidden": [2]}).status_code == 200
    sessions = app.state.playground2d
    streams = [sessions.start_stream(page) for page in pages[:MAX_RUNNING]]  # as if four pages played
    assert sessions.running() == MAX_RUNNING
    refused = client.get(f"/api/playground2d/{pages[-1]}/stream?updates=1")
    assert (
        refused.status_code == 429
        and "4 playground trainings are running already" in refused.json()["detail"]
    )
    # the first page opens a second stream: it replaces its first, within the limit
    session, first_stream = streams[0]
    replaced = client.get(f"/api/playground2d/{pages[0]}/stream?updates=1")
    assert replaced.status_code == 200 and events(replaced.text)[-1][1]["reason"] == "updates"
    assert not sessions.owns(pages[0], session, first_stream)
    # starting again (reset) replaces the network and ends whatever stream trained it
    session, stream_id = streams[1]
    client.post("/api/playground2d/start", json={"page": pages[1], "hidden": [2]})
    assert not sessions.owns(pages[1], session, stream_id)


def test_a_disconnected_stream_stops_training(tmp_path):
    import time

    import httpx

    from convlens.server.background import BackgroundServer

    server = BackgroundServer([], runs_dir=tmp_path)  # real uvicorn, through the explorer's guard
    with server as url:
        httpx.post(f"{url}api/playground2d/start", json={"page": PAGE}, timeout=30).raise_for_status()
        with httpx.stream("GET", f"{url}api/playground2d/{PAGE}/stream", timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    break  # one snapshot, then the page goes away
        sessions = server.app.state.playground2d
        trainer = sessions.sessions[PAGE].trainer
        deadline = time.monotonic() + 10
        while sessions.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sessions.running() == 0
        epoch = trainer.epoch
        time.sleep(0.3)
        assert trainer.epoch == epoch  # nobody trains it any more
