"""SmoothGrad, Grad-CAM++ and RISE, each against a computation written here (or Captum's).

The references rebuild each method's random draws from its seed by the recipe its docstring
states, then compute the map with plain loops and autograd, never with convlens's helpers.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from any_models import MODELS, SHAPE
from convlens.errors import ConvlensError
from convlens.inspect import ATTRIBUTIONS, attribution_base, open_model
from convlens.inspect.attribution import grad_cam, grad_cam_plus_plus, rise, smoothgrad
from convlens.inspect.random_masks import rise_masks

NEW_METHODS = ("smoothgrad", "grad-cam++", "rise")


@pytest.fixture(scope="module")
def trained(digits_model, digits):
    model, _ = digits_model
    return model, digits.test_images[:4].float() / 255  # (4, 1, 8, 8)


def _logits(model, batch):
    return model(batch)


# --- SmoothGrad ---------------------------------------------------------------------------------


def _noise_by_recipe(image, samples, noise, seed):
    """Gaussian draws from a CPU generator seeded with ``seed``, sigma = noise x the image's range."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn((samples, *image.shape), generator=generator)
    return draws * noise * float(image.max() - image.min())


def test_smoothgrad_is_the_mean_absolute_gradient_over_the_same_noisy_copies(trained, monkeypatch):
    model, images = trained
    image, samples = images[0], 12
    offsets = _noise_by_recipe(image, samples, 0.2, seed=5)
    expected = torch.zeros_like(image)
    for offset in offsets:  # one noisy copy at a time
        noisy = (image + offset).unsqueeze(0).requires_grad_()
        (gradient,) = torch.autograd.grad(model(noisy)[0, 7], noisy)
        expected += gradient[0].abs() / samples
    result = smoothgrad(model, image, target=7, samples=samples, noise=0.2, seed=5)
    assert result.method == "smoothgrad" and result.stage is None and result.target == 7
    torch.testing.assert_close(result.raw, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.map, expected.sum(0) / expected.sum(0).max())
    # in several forward passes (a big image) the copies and the answer are the same
    monkeypatch.setattr(attribution_base, "CHUNK_ELEMENTS", 5 * image.numel())
    chunked = smoothgrad(model, image, target=7, samples=samples, noise=0.2, seed=5)
    torch.testing.assert_close(chunked.raw, result.raw, atol=1e-6, rtol=1e-5)


def test_smoothgrad_agrees_with_captums_noise_tunnel(trained):
    """Captum draws its own noise, so the two agree as Monte Carlo estimates of one expectation."""
    from captum.attr import NoiseTunnel, Saliency

    model, images = trained
    image, samples, noise = images[1], 400, 0.15
    sigma = noise * float(image.max() - image.min())
    torch.manual_seed(0)
    theirs = NoiseTunnel(Saliency(model)).attribute(
        image[None], nt_type="smoothgrad", nt_samples=samples, stdevs=sigma, target=2
    )[0]  # (C, H, W): Saliency takes |gradient| by default
    ours = smoothgrad(model, image, target=2, samples=samples, noise=noise).raw
    assert float((ours - theirs).abs().sum() / theirs.abs().sum()) < 0.1
    assert float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]) > 0.95
    # no noise: plain saliency's magnitude
    image_grad = image[None].clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(image_grad)[0, 2], image_grad)
    torch.testing.assert_close(
        smoothgrad(model, image, target=2, samples=2, noise=0.0).raw, gradient[0].abs()
    )


# --- Grad-CAM++ ---------------------------------------------------------------------------------


def _grad_cam_plus_plus_by_hand(feature_maps, gradient, size):
    """Chattopadhay et al. eq. 19 with exp(score): alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)."""
    channels = feature_maps.shape[1]
    weights = torch.zeros(channels)
    for k in range(channels):
        a, g = feature_maps[0, k], gradient[0, k]
        total = float(a.sum())
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                denominator = 2 * g[i, j] ** 2 + total * g[i, j] ** 3
                alpha = g[i, j] ** 2 / denominator if denominator != 0 else 0.0
                weights[k] += alpha * max(float(g[i, j]), 0.0)
    raw = (weights[:, None, None] * feature_maps[0]).sum(0)  # (h, w)
    up = F.interpolate(raw.relu()[None, None], size=size, mode="bilinear")[0, 0]
    return raw, up / up.max()


def _stage_and_gradient(model, module, batch, target, call=-1):
    kept = []
    handle = module.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model(batch)
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(logits[0, target], kept[call])
    return kept[call].detach(), gradient


@pytest.mark.parametrize("stage", ["pool2", "conv2"])
def test_grad_cam_plus_plus_equals_autograd_by_hand(trained, stage):
    model, images = trained
    image = images[2]
    feature_maps, gradient = _stage_and_gradient(model, dict(model.stages())[stage], image[None], 4)
    raw, expected = _grad_cam_plus_plus_by_hand(feature_maps, gradient, (8, 8))
    result = grad_cam_plus_plus(model, image, target=4, stage=stage)
    assert (result.method, result.stage, result.target) == ("grad-cam++", stage, 4)
    torch.testing.assert_close(result.raw, raw, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.map, expected, atol=1e-5, rtol=1e-4)
    assert grad_cam_plus_plus(model, image).stage == grad_cam(model, image).stage == "pool2"


def _tiny_gap_model(class_weights):
    """conv 1x1 with two channels (x and relu(5 - x)), ReLU, global average pool, linear."""
    conv = nn.Conv2d(1, 2, 1)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 5.0]))
        fc.weight.copy_(torch.tensor(class_weights))
    layers = [("conv", conv), ("relu", nn.ReLU()), ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
              ("fc", fc)]  # fmt: skip
    return nn.Sequential(OrderedDict(layers)).eval()


def test_grad_cam_plus_plus_on_a_hand_checkable_model():
    """x = [[1, 2], [3, 4]]: A_0 = x, A_1 = 5 - x, both summing to 10. Behind a global average
    pool the gradient is v_k / 4 everywhere, so alpha_k = 1 / (2 + 10 g_k) and
    w_k = 4 relu(g_k) / (2 + 10 g_k)."""
    model = _tiny_gap_model([[2.0, 1.0], [1.0, -1.0]])
    image = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    a0, a1 = image[0], 5 - image[0]
    # class 0: g = (1/2, 1/4): w = (4 * 0.5 / 7, 4 * 0.25 / 4.5) = (2/7, 2/9)
    expected = 2 / 7 * a0 + 2 / 9 * a1  # [[74, 78], [82, 86]] / 63
    torch.testing.assert_close(expected, torch.tensor([[74.0, 78.0], [82.0, 86.0]]) / 63)
    result = grad_cam_plus_plus(model, image, target=0)
    assert result.stage == "relu"
    torch.testing.assert_close(result.raw, expected)
    torch.testing.assert_close(result.map, expected / expected.max())
    # Grad-CAM weighs by the mean gradient instead: 0.5 A_0 + 0.25 A_1
    torch.testing.assert_close(grad_cam(model, image, target=0).raw, 0.5 * a0 + 0.25 * a1)
    # class 1: g = (1/4, -1/4): the negative gradient's channel gets no weight; w_0 = 1 / 4.5
    torch.testing.assert_close(grad_cam_plus_plus(model, image, target=1).raw, 2 / 9 * a0)


class _DeadBranch(nn.Module):
    """A convolution whose map the class score never reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.unread = nn.Conv2d(1, 2, 1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))

    def stages(self):
        return [("conv", self.conv), ("unread", self.unread), ("head", self.head)]

    def forward(self, x):
        self.unread(x)
        return self.head(self.conv(x))


def test_a_stage_the_score_does_not_read_has_an_empty_map():
    torch.manual_seed(0)
    model = _DeadBranch().eval()
    for function in (grad_cam, grad_cam_plus_plus):
        result = function(model, torch.rand(1, 2, 2), target=0, stage="unread")
        assert not result.raw.any() and not result.map.any()


# --- RISE ---------------------------------------------------------------------------------------


def _masks_by_recipe(count, height, width, cells, keep, seed):
    """Binary (cells + 1)^2 grids kept with probability ``keep``, then each mask's (row, col) shift
    as a fraction of a cell, from one CPU generator; each grid upsampled bilinearly to cells + 1
    cells of ceil(size / cells) pixels and cut at its shift."""
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand((count, 1, cells + 1, cells + 1), generator=generator) < keep).float()
    shifts = torch.rand((count, 2), generator=generator)
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    masks = []
    for grid, (row, col) in zip(grids, shifts, strict=True):
        big = F.interpolate(grid[None], size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear")
        top, left = int(row * cell_h), int(col * cell_w)
        masks.append(big[0, 0, top : top + height, left : left + width])
    return torch.stack(masks)


def test_rise_is_the_probability_weighted_mean_of_its_masks(trained, monkeypatch):
    model, images = trained
    image, count, cells, keep = images[3], 96, 3, 0.4
    masks = _masks_by_recipe(count, 8, 8, cells, keep, seed=11)
    torch.testing.assert_close(rise_masks(count, 8, 8, cells, keep, seed=11), masks)
    expected = torch.zeros(8, 8, dtype=torch.float64)
    with torch.no_grad():
        for mask in masks:  # one masked image at a time
            probability = torch.softmax(model((image * mask)[None]), dim=1)[0, 6]
            expected += float(probability) * mask.double()
    expected = (expected / (count * keep)).float()
    result = rise(model, image, target=6, masks=count, cells=cells, keep=keep, seed=11)
    assert (result.method, result.stage, result.target) == ("rise", None, 6)
    torch.testing.assert_close(result.raw, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.map, (expected - expected.min()) / (expected.max() - expected.min()))
    # the same masks in several forward passes
    monkeypatch.setattr(attribution_base, "CHUNK_ELEMENTS", 7 * image.numel())
    chunked = rise(model, image, target=6, masks=count, cells=cells, keep=keep, seed=11)
    torch.testing.assert_close(chunked.raw, result.raw, atol=1e-6, rtol=1e-5)


def test_rise_masks_are_smooth_and_keep_the_share_asked_for():
    masks = rise_masks(400, 28, 28, cells=7, keep=0.3, seed=0)  # 28 / 7: cells of 4 pixels
    assert masks.shape == (400, 28, 28) and masks.min() >= 0 and masks.max() <= 1
    assert float(masks.mean()) == pytest.approx(0.3, abs=0.03)
    assert ((masks > 0) & (masks < 1)).any()  # bilinear edges, not hard squares
    assert not torch.equal(rise_masks(4, 28, 28, seed=1), rise_masks(4, 28, 28, seed=2))


# --- all three ----------------------------------------------------------------------------------


def test_the_registry_lists_them_with_their_options():
    assert set(NEW_METHODS) <= set(ATTRIBUTIONS.names())
    described = {entry["name"]: entry for entry in ATTRIBUTIONS.describe()}
    labels = {name: described[name]["label"] for name in NEW_METHODS}
    assert labels == {"smoothgrad": "SmoothGrad", "grad-cam++": "Grad-CAM++", "rise": "RISE"}
    defaults = {
        name: {p["name"]: p["default"] for p in described[name]["parameters"]} for name in NEW_METHODS
    }
    assert defaults["smoothgrad"] == {"samples": 32, "noise": 0.15, "seed": 0}
    assert defaults["grad-cam++"] == {"stage": None}
    # masks None: by the image's size (random_masks.default_masks), as integrated gradients' samples
    assert defaults["rise"] == {"masks": None, "cells": 8, "keep": 0.5, "seed": 0}
    kinds = {p["name"]: p["kind"] for p in described["rise"]["parameters"]}
    assert kinds["masks"] == "int"
    assert all(described[name]["help"] for name in NEW_METHODS)


@pytest.mark.parametrize(
    ("method", "options", "parameter", "message"),
    [
        ("smoothgrad", {"samples": 0}, "samples", "samples must be a whole number at least 1, got 0"),
        ("smoothgrad", {"samples": 2.5}, "samples", "samples must be a whole number at least 1, got 2.5"),
        ("smoothgrad", {"noise": -0.1}, "noise", "noise must be a number at least 0, got -0.1"),
        ("smoothgrad", {"noise": float("nan")}, "noise", "noise must be a number at least 0, got nan"),
        ("rise", {"masks": 0}, "masks", "masks must be a whole number at least 1, got 0"),
        ("rise", {"keep": 0.0}, "keep", r"keep must be a number in \(0, 1\], got 0.0"),
        ("rise", {"keep": 1.5}, "keep", r"keep must be a number in \(0, 1\], got 1.5"),
        ("rise", {"cells": 0}, "cells", r"cells must be a whole number 1..8, got 0"),
        ("rise", {"cells": 9}, "cells", r"cells must be a whole number 1..8, got 9"),
    ],
)
def test_bad_options_name_the_parameter(trained, method, options, parameter, message):
    model, images = trained
    with pytest.raises(ConvlensError, match=f"^{message}$") as info:
        ATTRIBUTIONS.get(method).function(model, images[0], **options)
    assert info.value.parameter == parameter


def test_bad_targets_and_stages(trained):
    model, images = trained
    for method in NEW_METHODS:
        with pytest.raises(ConvlensError, match=r"target class 10 is out of range; expected 0..9"):
            ATTRIBUTIONS.get(method).function(model, images[0], target=10)
    with pytest.raises(ConvlensError, match="stage 'fc' has no spatial feature map.*conv1, conv2"):
        grad_cam_plus_plus(model, images[0], stage="fc")
    with pytest.raises(ConvlensError, match="unknown stage 'conv5'"):
        grad_cam_plus_plus(model, images[0], stage="conv5")
    assert all(not module._forward_hooks for module in model.modules())  # removed after an error too


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_models(name):
    """A hand-written model with a residual add and a concatenation, and a small ResNet, traced."""
    build, _ = MODELS[name]
    torch.manual_seed(0)  # the layers draw their initial weights before trained() seeds the rest
    net = build()
    model = open_model(net, SHAPE)
    torch.manual_seed(0)
    image = torch.rand(SHAPE)
    for method in NEW_METHODS:
        result = ATTRIBUTIONS.get(method).call(model, image, target=1, masks=200, samples=8)
        assert result.map.shape == SHAPE[1:] and torch.isfinite(result.map).all()
        assert float(result.map.min()) >= 0 and float(result.map.max()) == 1
    # Grad-CAM++ at the last spatial stage, by hand on the original module (its last call)
    stage, module = ("pool", net.pool) if name == "handwritten" else ("layer2.0.relu_1", net.layer2[0].relu)
    feature_maps, gradient = _stage_and_gradient(net, module, image[None], 1)
    raw, _ = _grad_cam_plus_plus_by_hand(feature_maps, gradient, SHAPE[1:])
    torch.testing.assert_close(
        grad_cam_plus_plus(model, image, target=1, stage=stage).raw, raw, atol=1e-5, rtol=1e-4
    )
    assert all(not m._forward_hooks for m in net.modules())


def test_seeded_methods_repeat_and_the_seed_matters(trained):
    model, images = trained
    for function, options in ((smoothgrad, {"samples": 4}), (rise, {"masks": 50})):
        first = function(model, images[0], target=3, seed=1, **options).raw
        torch.testing.assert_close(function(model, images[0], target=3, seed=1, **options).raw, first)
        assert not torch.equal(function(model, images[0], target=3, seed=2, **options).raw, first)


@pytest.fixture(scope="module")
def run_copy(digits_run, tmp_path_factory):
    """A private copy: explain stores the run's faithfulness verdicts in its folder."""
    return shutil.copytree(digits_run, tmp_path_factory.mktemp("methods") / "run")


@pytest.mark.parametrize("method", NEW_METHODS)
def test_explain_draws_each_method(run_copy, run_cli, tmp_path, method):
    out = tmp_path / "explain"
    code, stdout, err = run_cli("explain", run_copy, "digits:3", "--method", method, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["attribution"]["method"] == method
    assert (out / f"attribution-{method}.png").stat().st_size > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_cuda_model_gives_the_cpus_map(trained, method):
    """Noise and masks are drawn on the CPU, so the device changes nothing but rounding."""
    import copy

    model, images = trained
    function = ATTRIBUTIONS.get(method).function
    on_cpu = function(model, images[0], target=3)
    on_gpu = function(copy.deepcopy(model).cuda(), images[0].cuda(), target=3)
    assert on_gpu.map.device.type == "cpu"
    torch.testing.assert_close(on_gpu.map, on_cpu.map, atol=1e-3, rtol=1e-3)
