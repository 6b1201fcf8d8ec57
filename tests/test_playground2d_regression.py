"""The learning playground's regression data sets (the TensorFlow Playground's plane and
multi-gauss): their targets against the recipe computed by hand, the squared-error loss and its
gradient against a hand-worked backward pass in numpy, the output as the value itself, and the
explorer's API answering real targets and no accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.playground2d import PlaygroundConfig, Trainer, make_points, plane_grid
from convlens.server import create_app
from testing_helpers import unpacked

PAGE = "regression-page-1"
BUMPS = [(-4, 2.5, 1), (0, 2.5, -1), (4, 2.5, 1), (-4, -2.5, -1), (0, -2.5, 1), (4, -2.5, -1)]


def multi_gauss_by_hand(x1: float, x2: float) -> float:
    """The TensorFlow Playground's regressGaussian label: of the six signed cones, the tallest."""
    label = 0.0
    for cx, cy, sign in BUMPS:
        height = sign * min(1.0, max(0.0, 1 - np.hypot(x1 - cx, x2 - cy) / 2))
        if abs(height) > abs(label):
            label = height
    return label


def test_targets_follow_the_recipe_and_noise_moves_only_the_targets():
    plane = make_points("plane", noise=0, seed=2)
    points = plane.train_points.double().numpy()
    np.testing.assert_allclose(plane.train_labels.numpy(), (points[:, 0] + points[:, 1]) / 10, atol=1e-6)
    assert plane.train_points.abs().max() <= 6
    bumps = make_points("multi-gauss", noise=0, seed=2)
    expected = [multi_gauss_by_hand(x1, x2) for x1, x2 in bumps.test_points.double().tolist()]
    np.testing.assert_allclose(bumps.test_labels.numpy(), expected, atol=1e-6)
    assert bumps.test_labels.min() < -0.5 and bumps.test_labels.max() > 0.5  # both signs of bumps
    noisy = make_points("plane", noise=30, seed=2)
    assert torch.equal(noisy.train_points, plane.train_points)  # the same points ...
    wobble = (noisy.train_labels - plane.train_labels).abs()
    assert 0 < wobble.max() <= 2 * 6 * 0.3 / 10 + 1e-6  # ... read at a point moved up to 30 % of 6


def test_squared_error_and_its_gradient_against_a_hand_worked_backward_pass():
    """One batch of the training step: tanh hidden layer, linear output, MSE plus the L2 penalty;
    numpy's forward and backward pass (float64) against what PyTorch computes and would step."""
    rate = 0.01
    config = PlaygroundConfig(
        dataset="multi-gauss", hidden=(3,), activation="tanh", regularization="l2", regularization_rate=rate
    )
    trainer = Trainer(config)
    batch = torch.arange(7)
    loss = trainer.batch_loss(batch)
    trainer.network.zero_grad()
    loss.backward()
    hidden, output = (m for m in trainer.network.modules() if isinstance(m, torch.nn.Linear))
    w1, b1, w2, b2 = (
        p.detach().double().numpy() for p in (hidden.weight, hidden.bias, output.weight, output.bias)
    )
    x = trainer.train_inputs[batch].double().numpy()  # (7, 2)
    target = trainer.points.train_labels[batch].double().numpy()[:, None]  # (7, 1)
    h = np.tanh(x @ w1.T + b1)  # (7, 3)
    predicted = h @ w2.T + b2  # (7, 1): linear, no sigmoid
    by_hand = np.mean((predicted - target) ** 2) + rate * 0.5 * ((w1**2).sum() + (w2**2).sum())
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-5)
    d_predicted = 2 * (predicted - target) / len(x)  # (7, 1)
    d_pre = (d_predicted @ w2) * (1 - h**2)  # (7, 3): back through tanh
    expected = {
        "output weight": (d_predicted.T @ h + rate * w2, output.weight.grad),
        "output bias": (d_predicted.sum(0), output.bias.grad),
        "hidden weight": (d_pre.T @ x + rate * w1, hidden.weight.grad),
        "hidden bias": (d_pre.sum(0), hidden.bias.grad),
    }
    for name, (hand, torch_grad) in expected.items():
        np.testing.assert_allclose(torch_grad.double().numpy(), hand, rtol=1e-4, atol=1e-7, err_msg=name)


def test_the_output_is_the_predicted_value_and_the_loss_its_mean_squared_error():
    trainer = Trainer(PlaygroundConfig(dataset="plane", hidden=(), features=("x1", "x2")))
    trainer.train_epoch()
    snapshot = trainer.snapshot(neuron_grid=8, boundary_grid=12)
    (w,), (b,) = snapshot.weights[0].double().numpy(), snapshot.biases[0].double().numpy()
    grid = plane_grid(12).double().numpy()
    np.testing.assert_allclose(snapshot.boundary.flatten().numpy(), grid @ w + b, atol=1e-5)  # no sigmoid
    test = trainer.points.test_points.double().numpy()
    mse = np.mean((test @ w + b - trainer.points.test_labels.double().numpy()) ** 2)
    assert snapshot.test_loss == pytest.approx(mse, rel=1e-4)
    assert snapshot.task == "regression" and snapshot.test_accuracy is None


def test_the_api_answers_real_targets_and_no_accuracy(tmp_path):
    client = TestClient(create_app([], runs_dir=tmp_path, allowed_hosts=["testserver"]))
    body = client.post(
        "/api/playground2d/start", json={"page": PAGE, "dataset": "multi-gauss", "hidden": [4]}
    ).json()
    assert body["snapshot"]["task"] == "regression" and body["snapshot"]["test_accuracy"] is None
    targets = {target for _, _, target in body["points"]["train"]}
    assert len(targets) > 100 and all(-1 <= t <= 1 for t in targets)  # values, not two classes
    output = unpacked(body["snapshot"]["boundary"])
    assert output.min() < 0 < output.max() or output.max() < 0 or output.min() > 0  # a real value
    assert not (output.min() >= 0 and output.max() <= 1 and output.std() < 1e-3)
