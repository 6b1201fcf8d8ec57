"""FGSM / PGD against an independent autograd computation and on the trained digits model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens import attacks
from convlens.data import to_float
from convlens.errors import ConvlensError

TOL = 1e-6  # float32 rounding of (x + eps) - x


@pytest.fixture(scope="module")
def digits_test(digits):
    return to_float(digits.test_images), digits.test_labels


def _reference_fgsm(model, images, labels, eps, target=None):
    """FGSM written out with plain autograd: x' = clip(x ± eps * sign(∇x CE), 0, 1)."""
    x = images.clone().requires_grad_(True)
    classes = labels if target is None else torch.full_like(labels, target)
    loss = F.cross_entropy(model(x), classes, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, x)
    direction = -1 if target is not None else 1
    return (images + direction * eps * gradient.sign()).clamp(0, 1)


def test_fgsm_matches_plain_autograd(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    result = attacks.fgsm(model, images, labels, 0.1)
    expected = _reference_fgsm(model, images, labels, 0.1)
    torch.testing.assert_close(result.adversarial_images, expected, atol=TOL, rtol=0)


def test_fgsm_moves_every_unclipped_pixel_by_exactly_eps(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    eps = 0.1
    result = attacks.fgsm(model, images, labels, eps)
    adversarial, delta = result.adversarial_images, result.perturbations
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    assert float(delta.abs().max()) <= eps + TOL
    # a pixel that did not end on the border of [0, 1] was not clipped: it moved by ε exactly
    inside = (adversarial > 0) & (adversarial < 1)
    assert inside.sum() > 1000
    torch.testing.assert_close(delta[inside].abs(), torch.full_like(delta[inside], eps), atol=TOL, rtol=0)
    # a clipped pixel moved less than ε, towards the border it hit
    clipped = ~inside & (delta != 0)
    assert (delta[clipped].abs() <= eps + TOL).all()
    assert result.max_linf == pytest.approx(eps, abs=TOL)
    # every image has an unclipped pixel here, so every image's own L∞ is ε
    per_image = delta.flatten(1).abs().max(dim=1).values
    torch.testing.assert_close(per_image, torch.full_like(per_image, eps), atol=TOL, rtol=0)


def test_fgsm_on_a_linear_model_follows_the_weight_difference():
    # two classes, logits = W x: for true class 0, dCE/dx = p1 (w1 - w0), so the sign is known by hand
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [-1.0, 1.0, 3.0, 0.0]]))
    images = torch.full((1, 1, 2, 2), 0.5)
    result = attacks.fgsm(model, images, torch.tensor([0]), 0.25)
    # w1 - w0 = [-2, 2, 3, 0]: the last pixel has no weight, a zero gradient, and stays
    expected = torch.tensor([0.25, 0.75, 0.75, 0.5]).view(1, 1, 2, 2)
    torch.testing.assert_close(result.adversarial_images, expected)


def test_batches_do_not_change_the_attack(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    whole = attacks.fgsm(model, images[:50], labels[:50], 0.05, batch_size=500)
    pieces = attacks.fgsm(model, images[:50], labels[:50], 0.05, batch_size=7)
    torch.testing.assert_close(whole.adversarial_images, pieces.adversarial_images, atol=TOL, rtol=0)


def test_eps_zero_changes_nothing(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    for result in (attacks.fgsm(model, images, labels, 0.0), attacks.pgd(model, images, labels, 0.0)):
        assert torch.equal(result.adversarial_images, images)
        assert result.adversarial_accuracy == result.clean_accuracy


def test_pgd_hurts_at_least_as_much_as_fgsm(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    images, labels = images[:200], labels[:200]
    for eps in (0.05, 0.1):
        one_step = attacks.fgsm(model, images, labels, eps)
        projected = attacks.pgd(model, images, labels, eps, steps=10)
        assert projected.adversarial_accuracy <= one_step.adversarial_accuracy
        assert projected.adversarial_accuracy < projected.clean_accuracy
        assert projected.max_linf <= eps + TOL
        assert (
            0 <= float(projected.adversarial_images.min()) <= float(projected.adversarial_images.max()) <= 1
        )


def test_targeted_pgd_reaches_its_target(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    images, labels = images[:150], labels[:150]
    result = attacks.pgd(model, images, labels, 0.3, steps=20, target=3)
    assert result.clean_accuracy > 0.9
    assert result.target_success_rate >= 0.95
    others = labels != 3
    assert (result.adversarial_predictions[others] == 3).float().mean() == pytest.approx(
        result.target_success_rate
    )
    # the clean model did not already say 3 for these images
    assert (result.clean_predictions[others] == 3).float().mean() < 0.05


def test_targeted_fgsm_matches_plain_autograd(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    result = attacks.fgsm(model, images[:40], labels[:40], 0.2, target=7)
    expected = _reference_fgsm(model, images[:40], labels[:40], 0.2, target=7)
    torch.testing.assert_close(result.adversarial_images, expected, atol=TOL, rtol=0)


def test_summary_numbers_agree_with_the_tensors(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    result = attacks.fgsm(model, images, labels, 0.1)
    summary = result.summary()
    probabilities = torch.softmax(model(images), 1).detach()
    assert summary["clean_accuracy"] == pytest.approx(
        float((probabilities.argmax(1) == labels).float().mean())
    )
    assert summary["mean_confidence_clean"] == pytest.approx(
        float(probabilities.max(1).values.mean()), abs=1e-6
    )
    l2 = (result.adversarial_images - images).flatten(1).norm(dim=1).mean()
    assert summary["mean_l2"] == pytest.approx(float(l2))
    assert summary["flipped"] == int(
        ((result.clean_predictions == labels) & (result.adversarial_predictions != labels)).sum()
    )


def test_robustness_curve(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    curve = attacks.robustness_curve(model, images[:100], labels[:100], [0.0, 0.1, 0.2], steps=5)
    assert set(curve.accuracy) == {"fgsm", "pgd"}
    assert curve.accuracy["fgsm"][0] == curve.accuracy["pgd"][0] == curve.clean_accuracy
    assert curve.accuracy["pgd"][-1] < curve.clean_accuracy
    for fgsm_accuracy, pgd_accuracy in zip(curve.accuracy["fgsm"], curve.accuracy["pgd"], strict=True):
        assert pgd_accuracy <= fgsm_accuracy


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, y: attacks.fgsm(m, x, y, -0.1), "eps must be between 0 and 1"),
        (lambda m, x, y: attacks.fgsm(m, x, y, 1.5), "eps must be between 0 and 1"),
        (lambda m, x, y: attacks.pgd(m, x, y, float("nan")), "eps must be between 0 and 1"),
        (lambda m, x, y: attacks.pgd(m, x, y, 0.1, steps=0), "steps must be a positive integer"),
        (lambda m, x, y: attacks.fgsm(m, x, y, 0.1, target=10), "target must be a class index 0..9"),
        (lambda m, x, y: attacks.pgd(m, x, y, 0.1, target=-1), "target must be a class index 0..9"),
        (lambda m, x, y: attacks.attack(m, x, y, "cw", 0.1), "method must be one of fgsm, pgd"),
        (lambda m, x, y: attacks.fgsm(m, x[:, :, :4], y, 0.1), "the model takes 1x8x8"),
        (lambda m, x, y: attacks.fgsm(m, x * 255, y, 0.1), "pixels in [0, 1]"),
        (lambda m, x, y: attacks.robustness_curve(m, x, y, [0.1, 2]), "eps_list must be"),
    ],
)
def test_bad_input_is_one_clear_error(digits_model, digits_test, call, message):
    model, _ = digits_model
    images, labels = digits_test
    with pytest.raises(
        ConvlensError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        call(model, images[:4], labels[:4])


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_fgsm_budget_holds_for_any_eps_and_image(eps, seed):
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    images = torch.rand(6, 1, 5, 5, generator=generator)
    images[0, 0, 0, :] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5])  # pixels already on the border
    labels = torch.randint(0, 4, (6,), generator=generator)
    result = attacks.fgsm(model, images, labels, eps)
    adversarial, delta = result.adversarial_images, result.perturbations
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    assert float(delta.abs().max()) <= eps + TOL
    moved_inside = (adversarial > 0) & (adversarial < 1) & (delta != 0)
    assert torch.allclose(delta[moved_inside].abs(), torch.full_like(delta[moved_inside], eps), atol=TOL)


def test_the_model_comes_back_unchanged(digits_model, digits_test):
    model, _ = digits_model
    images, labels = digits_test
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strides = {k: v.stride() for k, v in model.state_dict().items()}
    model.train()
    try:
        attacks.pgd(model, images[:20], labels[:20], 0.1, steps=2)
        assert model.training  # the mode it came in
    finally:
        model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.stride() == strides[key]
    assert all(p.grad is None for p in model.parameters())  # no gradients left on the weights
