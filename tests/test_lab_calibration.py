"""ECE, reliability bins and temperature scaling against hand-worked cases and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError
from convlens.lab import calibration


def test_ece_by_hand():
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]])
    labels = torch.tensor([0, 1, 0])
    # three bins with one image each: |1 - 0.9|, |0 - 0.6|, |1 - 0.8|, averaged
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.3, abs=1e-6)
    bins = calibration.reliability(probabilities, labels)
    assert len(bins) == 15 and sum(b.count for b in bins) == 3
    assert bins[0].lower == 0.0 and bins[-1].upper == 1.0
    (b,) = [b for b in bins if b.lower < 0.9 <= b.upper]
    assert b.count == 1 and b.accuracy == 1.0 and b.confidence == pytest.approx(0.9)


def test_ece_matches_numpy_digitize():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 5, generator=generator) * 3
    labels = torch.randint(0, 5, (2000,), generator=generator)
    probabilities = torch.softmax(logits, 1)
    confidence = probabilities.max(1).values.double().numpy()
    correct = (probabilities.argmax(1) == labels).double().numpy()
    edges = np.linspace(0, 1, 16)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, 14)
    expected = sum(
        (which == b).mean() * abs(correct[which == b].mean() - confidence[which == b].mean())
        for b in range(15)
        if (which == b).any()
    )
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-9)


def test_perfectly_calibrated_and_overconfident():
    labels = torch.tensor([0, 0, 0, 1])
    honest = torch.tensor([[0.75, 0.25]] * 4)  # 75 % sure, right 3 times out of 4
    assert calibration.expected_calibration_error(honest, labels) == pytest.approx(0.0, abs=1e-7)
    sure = torch.tensor([[0.99, 0.01]] * 4)
    assert calibration.expected_calibration_error(sure, labels) == pytest.approx(0.24, abs=1e-6)


def test_temperature_recovers_a_known_temperature():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20000, 10, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).flatten()
    # a model that is 3x too sure: its logits are the true ones times 3, so T = 3 undoes it
    temperature = calibration.fit_temperature(true_logits * 3, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    # at the optimum the NLL's derivative with respect to T is zero
    t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(true_logits.double() * 3 / t, labels), t)
    assert abs(float(gradient)) < 1e-3


def test_split_halves_is_stratified_and_disjoint():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 4)
    first, second = calibration.split_halves(labels)
    assert set(first.tolist()).isdisjoint(second.tolist())
    assert len(first) + len(second) == len(labels)
    assert torch.bincount(labels[first]).tolist() == [5, 3, 2]


def test_calibration_end_to_end(digits):
    result = calibration.run(digits, epochs=3)
    assert result.fit_images + result.eval_images == 360
    assert result.temperature > 0
    assert 0 <= result.ece_after <= 1 and 0 <= result.ece_before <= 1
    assert sum(b.count for b in result.bins_before) == result.eval_images
    assert sum(b.count for b in result.bins_after) == result.eval_images
    assert result.to_json()["bins_after"][0].keys() == {"lower", "upper", "count", "accuracy", "confidence"}
    # dividing by T > 1 makes every answer less sure, T < 1 more sure
    if result.temperature > 1:
        assert result.mean_confidence_after < result.mean_confidence_before
    else:
        assert result.mean_confidence_after >= result.mean_confidence_before
    with pytest.raises(ConvlensError, match="label_smoothing must be in"):
        calibration.run(digits, label_smoothing=1.5)
