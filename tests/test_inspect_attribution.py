"""Attributions: Captum's maps checked against hand-written autograd, and Adebayo's sanity check."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from convlens.errors import ConvlensError
from convlens.inspect import grad_cam, integrated_gradients, occlusion, saliency


@pytest.fixture(scope="module")
def trained(digits_model, digits):
    model, _ = digits_model
    images = digits.test_images[:8].float() / 255  # (8, 1, 8, 8)
    return model, images


def _logits(model, image):
    return model(image.unsqueeze(0))[0]


def test_grad_cam_equals_the_formula(trained):
    model, images = trained
    image = images[0]
    stages = dict(model.stages())
    kept = {}
    handle = stages["conv2"].register_forward_hook(lambda m, i, o: kept.update(a=o))
    try:
        logits = _logits(model, image)
    finally:
        handle.remove()
    target = int(logits.argmax())
    (gradient,) = torch.autograd.grad(logits[target], kept["a"])  # (1, C, h, w)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # one weight per channel
    cam = (weights * kept["a"]).sum(dim=1, keepdim=True).relu()  # (1, 1, h, w)
    upsampled = F.interpolate(cam, size=(8, 8), mode="bilinear")[0, 0]
    expected = upsampled / upsampled.max()
    result = grad_cam(model, image, stage="conv2")
    assert result.target == target and result.stage == "conv2" and result.method == "grad-cam"
    torch.testing.assert_close(result.map, expected.detach(), atol=1e-5, rtol=1e-4)
    assert result.map.shape == (8, 8) and result.map.min() >= 0 and result.map.max() == 1
    assert result.probability == pytest.approx(float(torch.softmax(logits.detach(), 0)[target]), abs=1e-6)


def test_saliency_is_the_input_gradient(trained):
    model, images = trained
    image = images[1].clone().requires_grad_()
    logits = _logits(model, image)
    (gradient,) = torch.autograd.grad(logits[3], image)
    result = saliency(model, images[1], target=3)
    torch.testing.assert_close(result.raw, gradient)
    torch.testing.assert_close(result.map, gradient.abs().sum(0) / gradient.abs().sum(0).max())


def test_integrated_gradients_add_up_to_the_logit_difference(trained):
    model, images = trained
    result = integrated_gradients(model, images[2], steps=64, baseline="black")
    with torch.no_grad():
        difference = _logits(model, images[2]) - _logits(model, torch.zeros_like(images[2]))
    assert float(result.raw.sum()) == pytest.approx(float(difference[result.target]), rel=0.03)
    # the noise baseline: the mean over its baselines of the same identity
    from convlens.inspect.attribution import ig_baselines

    noisy = integrated_gradients(model, images[2], steps=64, samples=4)
    with torch.no_grad():
        references = ig_baselines(images[2][None], "noise", samples=4)
        difference = _logits(model, images[2]) - model(references).mean(dim=0)
    assert float(noisy.raw.sum()) == pytest.approx(float(difference[noisy.target]), rel=0.05)


def test_occlusion_of_single_pixels_is_the_logit_drop(trained):
    model, images = trained
    image = images[3]
    result = occlusion(model, image, target=4, window=1)
    expected = torch.zeros(8, 8)
    with torch.no_grad():
        full = _logits(model, image)[4]
        for row in range(8):
            for col in range(8):
                hidden = image.clone()
                hidden[:, row, col] = 0
                expected[row, col] = full - _logits(model, hidden)[4]
    torch.testing.assert_close(result.raw[0], expected, atol=1e-5, rtol=1e-4)


def _randomized(model):
    clone = copy.deepcopy(model)
    torch.manual_seed(1)
    for module in clone.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return clone


@pytest.mark.parametrize("method", [grad_cam, saliency])
def test_sanity_check_maps_change_when_weights_are_randomized(trained, method):
    """Adebayo et al. 2018: a map that survives weight randomization explains the image, not the model."""
    model, images = trained
    random_model = _randomized(model)
    correlations = []
    for image in images:
        target = int(_logits(model, image).argmax())
        trained_map = method(model, image, target=target).map.flatten()
        random_map = method(random_model, image, target=target).map.flatten()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns about constant maps; handled below
            correlations.append(spearmanr(trained_map, random_map).statistic)
    # a constant map (all zero: every ReLU of the random model off) carries no rank: count it as 0
    correlations = torch.tensor(correlations).nan_to_num(0.0)
    assert float(correlations.mean()) < 0.5, correlations


def test_grad_cam_on_other_stages_and_bad_input(trained):
    model, images = trained
    assert grad_cam(model, images[0], stage="relu1").stage == "relu1"
    with pytest.raises(ConvlensError, match="stage 'fc' has no spatial feature map.*conv1, conv2"):
        grad_cam(model, images[0], stage="fc")
    with pytest.raises(ConvlensError, match="unknown stage 'conv5'"):
        grad_cam(model, images[0], stage="conv5")
    for method in (grad_cam, saliency, integrated_gradients, occlusion):
        with pytest.raises(ConvlensError, match=r"target class 10 is out of range; expected 0..9"):
            method(model, images[0], target=10)
    with pytest.raises(ConvlensError, match="one image"):
        saliency(model, images[:2])


def test_grad_cam_without_any_convolution():
    from convlens.models import create_model

    with pytest.raises(ConvlensError, match="no convolution stage"):
        grad_cam(create_model("mlp", (1, 8, 8), 3), torch.rand(1, 8, 8))


def test_default_grad_cam_stage_is_the_last_rectified_spatial_stage(trained):
    from convlens.inspect import grad_cam_stage
    from convlens.models import create_model

    model, images = trained
    assert grad_cam_stage(model) == "pool2" and grad_cam(model, images[0]).stage == "pool2"
    assert grad_cam(model, images[0], stage="conv2").stage == "conv2"  # an explicit stage still wins
    assert grad_cam_stage(create_model("lenet5", (1, 28, 28), 10)) == "pool2"
    assert grad_cam_stage(create_model("convnet", (1, 8, 8), 3, pool=False)) == "relu2"
    assert grad_cam_stage(create_model("resnet8", (3, 16, 16), 3)) == "block3"


def test_default_grad_cam_deletes_better_than_random(mnist5k_trained):
    """The issue's measurement: Grad-CAM before the ReLU (conv2) was worse than a random order."""
    from convlens.inspect.faithfulness import deletion_curve

    model, images, labels = mnist5k_trained
    default = deletion_curve(model, images, labels, "grad-cam").auc
    random = deletion_curve(model, images, labels, "random").auc
    assert default < random - 0.1, (default, random)


def test_default_integrated_gradients_pass_cascading_randomization(mnist5k_trained):
    from convlens.inspect.faithfulness import randomization_check

    model, images, labels = mnist5k_trained
    check = randomization_check(model, images[::5], "integrated-gradients", labels=labels[::5])
    assert check.passed and check.mean < 0.5, check.per_step
    black = randomization_check(model, images[::10], "integrated-gradients", baseline="black")
    assert black.mean > 0.9  # the old default: the magnitude map is mostly the input itself


def test_integrated_gradients_baselines(trained):
    from convlens.inspect import ATTRIBUTIONS

    model, images = trained
    parameters = {
        p["name"]: p["default"] for p in ATTRIBUTIONS.get("integrated-gradients").describe()["parameters"]
    }
    assert parameters["baseline"] == "noise"
    for baseline in ("noise", "blur", "black", "gray"):
        result = integrated_gradients(model, images[2], baseline=baseline, samples=2)
        assert result.map.shape == (8, 8) and result.map.max() == 1
    again = integrated_gradients(model, images[2], samples=2)
    torch.testing.assert_close(again.raw, integrated_gradients(model, images[2], samples=2).raw)
    with pytest.raises(ConvlensError, match="baseline must be one of noise, blur, black, gray") as info:
        integrated_gradients(model, images[2], baseline="white")
    assert info.value.parameter == "baseline"
