"""Weights and biases set by hand in the learning playground: the server's network changes by
exactly that one number (every other parameter stays bit for bit), the answer is the edited
network (its maps and losses recomputed by hand), and a bad index or value is a 400 naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.errors import ConvlensError
from convlens.playground2d import PlaygroundConfig, Trainer
from convlens.server import create_app

PAGE = "edits-page-1"


@pytest.fixture
def app(tmp_path):
    return create_app([], runs_dir=tmp_path, allowed_hosts=["testserver"])


@pytest.fixture
def client(app) -> TestClient:
    client = TestClient(app, raise_server_exceptions=False)
    body = {"page": PAGE, "dataset": "xor", "hidden": [3, 2], "features": ["x1", "x2", "x1x2"]}
    assert client.post("/api/playground2d/start", json=body).status_code == 200
    return client


def parameters(app) -> list[torch.Tensor]:
    network = app.state.playground2d.sessions[PAGE].trainer.network
    return [parameter.detach().clone() for parameter in network.parameters()]  # w0, b0, w1, b1, w2, b2


def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> list[tuple[int, tuple[int, ...]]]:
    """(parameter index, element index) of every number that differs."""
    return [
        (index, tuple(position))
        for index, (old, new) in enumerate(zip(before, after, strict=True))
        for position in torch.nonzero(old != new).tolist()
    ]


def test_a_weight_set_by_hand_changes_exactly_that_weight(app, client):
    before = parameters(app)
    answer = client.post(
        f"/api/playground2d/{PAGE}/weight", json={"layer": 1, "neuron": 1, "source": 2, "value": -1.25}
    )
    assert answer.status_code == 200, answer.text
    after = parameters(app)
    assert changed(before, after) == [(2, (1, 2))]  # the second matrix, row 1, column 2: nothing else
    assert float(after[2][1, 2]) == -1.25
    assert answer.json()["weights"][1][1][2] == -1.25  # the page redraws from the edited network


def test_a_bias_set_by_hand_changes_exactly_that_bias_and_the_losses_follow(app, client):
    before = parameters(app)
    answer = client.post(f"/api/playground2d/{PAGE}/bias", json={"layer": 2, "neuron": 0, "value": 3.5})
    assert answer.status_code == 200, answer.text
    after = parameters(app)
    assert changed(before, after) == [(5, (0,))]  # the output's bias
    assert float(after[5][0]) == 3.5
    trainer = app.state.playground2d.sessions[PAGE].trainer
    with torch.no_grad():  # the answer's loss is the edited network's, not the epoch's old row
        logits = trainer.network(trainer.test_inputs)[:, 0].double()
    labels = trainer.points.test_labels.double()
    probability = torch.sigmoid(logits)
    cross_entropy = -(labels * probability.log() + (1 - labels) * (1 - probability).log()).mean()
    assert answer.json()["test_loss"] == pytest.approx(float(cross_entropy), rel=1e-4)
    assert answer.json()["biases"][2] == [3.5]


def test_an_edit_pauses_the_stream_and_training_goes_on_from_it(app, client):
    sessions = app.state.playground2d
    sessions.start_stream(PAGE)  # as if the page played
    client.post(f"/api/playground2d/{PAGE}/weight", json={"layer": 0, "neuron": 0, "source": 0, "value": 2})
    assert sessions.running() == 0
    stepped = client.post(f"/api/playground2d/{PAGE}/step").json()
    assert stepped["epoch"] == 1 and 0 < abs(stepped["weights"][0][0][0] - 2) < 0.5  # on from the edit


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("weight", {"layer": 3, "neuron": 0, "source": 0, "value": 1}, "layer must be a whole number from 0 to 2, got 3"),
        ("weight", {"layer": 0, "neuron": 3, "source": 0, "value": 1}, "neuron must be a whole number from 0 to 2, got 3"),
        ("weight", {"layer": 2, "neuron": 0, "source": 2, "value": 1}, "source must be a whole number from 0 to 1, got 2"),
        ("weight", {"layer": 0, "neuron": 0, "source": 0, "value": 101}, "value must be between -100 and 100, got 101.0"),
        ("bias", {"layer": 1, "neuron": -1, "value": 0}, "neuron must be a whole number from 0 to 1, got -1"),
    ],
)  # fmt: skip
def test_a_bad_edit_is_a_400_naming_it_and_changes_nothing(app, client, path, body, detail):
    before = parameters(app)
    answer = client.post(f"/api/playground2d/{PAGE}/{path}", json=body)
    assert answer.status_code == 400 and answer.json() == {"detail": detail}
    assert changed(before, parameters(app)) == []


def test_the_library_names_the_bad_argument():
    trainer = Trainer(PlaygroundConfig(dataset="gauss", hidden=()))
    with pytest.raises(ConvlensError) as caught:
        trainer.set_weight(0, 0, 0, float("nan"))
    assert caught.value.parameter == "value" and "finite" in str(caught.value)
    trainer.set_bias(0, 0, -0.5)
    assert trainer.snapshot().biases[0].tolist() == [-0.5]
    np.testing.assert_allclose(trainer.history[-1]["test_loss"], trainer.evaluate()["test_loss"])
