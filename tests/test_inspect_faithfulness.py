"""Faithfulness of attribution maps: deletion/insertion curves and cascading randomization, by hand."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect.faithfulness import cascade_stages, deletion_curve, randomization_check, spearman


class _Weighted(nn.Module):
    """Two classes on 1x2x2 images: logit 0 = w . x with w = 4, 3, 2, 1; logit 1 = 0."""

    in_shape = (1, 2, 2)

    def forward(self, x):
        w = torch.tensor([4.0, 3.0, 2.0, 1.0])
        return torch.stack([x.flatten(1) @ w, torch.zeros(x.shape[0])], dim=1)


def _auc(logits, fractions):
    return float(torch.trapezoid(torch.sigmoid(torch.tensor(logits)), torch.tensor(fractions)))


def test_deletion_and_insertion_by_hand():
    model, image, label = _Weighted(), torch.ones(1, 1, 2, 2), torch.tensor([0])
    best = torch.tensor([[4.0, 3.0], [2.0, 1.0]])

    def faithful(model, image, target):
        return best

    def backwards(model, image, target):
        return -best

    quarters = [0, 0.25, 0.5, 0.75, 1]
    deleted = deletion_curve(model, image, label, faithful, step=1)
    torch.testing.assert_close(deleted.fractions, torch.tensor(quarters))
    torch.testing.assert_close(deleted.probabilities, torch.sigmoid(torch.tensor([10.0, 6, 3, 1, 0])))
    assert deleted.auc == pytest.approx(_auc([10, 6, 3, 1, 0], quarters), abs=1e-6)
    assert deletion_curve(model, image, label, backwards, step=1).auc == pytest.approx(
        _auc([10, 9, 7, 4, 0], quarters), abs=1e-6
    )
    inserted = deletion_curve(model, image, label, faithful, step=1, mode="insertion")
    assert inserted.auc == pytest.approx(_auc([0, 4, 7, 9, 10], quarters), abs=1e-6)
    coarse = deletion_curve(model, image, label, faithful, step=3)  # 0, 3, then all 4 pixels
    torch.testing.assert_close(coarse.fractions, torch.tensor([0, 0.75, 1]))
    assert coarse.auc == pytest.approx(_auc([10, 1, 0], [0, 0.75, 1]), abs=1e-6)
    # the brightness reference on an image whose bright pixels are the heavy ones
    bright = torch.tensor([[[[1.0, 0.9], [0.8, 0.7]]]])
    assert deletion_curve(model, bright, label, "brightness", step=1).probabilities[1] == pytest.approx(
        float(torch.sigmoid(torch.tensor(3 * 0.9 + 2 * 0.8 + 0.7))), abs=1e-6
    )
    with pytest.raises(ConvlensError, match="step must be at least 1") as info:
        deletion_curve(model, image, label, faithful, step=0)
    assert info.value.parameter == "step"
    with pytest.raises(ConvlensError, match="labels must have one class per image"):
        deletion_curve(model, image, torch.tensor([0, 1]), faithful)


def test_spearman_matches_scipy_and_counts_constant_maps_as_zero():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, 6, generator=generator), torch.rand(6, 6, generator=generator)
    b[b < 0.3] = 0  # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a.flatten(), b.flatten()).statistic, abs=1e-9)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, torch.zeros(6, 6)) == 0.0


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(1, 1, 3, padding=1), flatten=nn.Flatten(), fc=nn.Linear(16, 2))
    )
    model.in_shape = (1, 4, 4)
    return model


def test_cascading_randomization_by_hand():
    model, images = _tiny(), torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    before = [p.clone() for p in model.parameters()]
    assert cascade_stages(model) == ["fc", "conv"]

    def conv_output(model, image, target):  # depends on the conv's weights only, not on fc's
        return model.conv(image[None])[0, 0]

    check = randomization_check(model, images, conv_output)
    assert check.stages == ["fc", "conv"] and check.spearman.shape == (2, 3)
    torch.testing.assert_close(check.spearman[0], torch.ones(3))  # fc re-initialized: the map stays
    assert float(check.per_step[1]) < 0.99  # conv re-initialized: it changes
    assert check.mean == pytest.approx(float(check.spearman.mean()))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # a copy changed
    model_free = randomization_check(model, images, "brightness")
    assert model_free.mean == pytest.approx(1.0) and not model_free.passed  # ignores the model: fails
