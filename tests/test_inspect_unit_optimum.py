"""One unit's optimum: the kernel's sign pattern on conv1, never below the best image deeper,
cropped to a window that matches the pixels the unit's gradient reaches."""

from __future__ import annotations

import pytest
import torch

from convlens.errors import ConvlensError
from convlens.inspect import activations, unit_optimum
from convlens.inspect.hooks import StageRecorder


def _gradient_window(model, stage, channel, cell) -> tuple[int, int, int, int]:
    """The bounding box of the pixels that move the unit, by autograd on random images: an
    independent receptive field (top, left, bottom, right), end-exclusive."""
    images = torch.rand(32, *model.in_shape, requires_grad=True)
    with StageRecorder(model, [stage], keep_graph=True) as recorder:
        model(images)
    output = recorder.outputs[stage][:, channel]
    unit = output[:, cell[0], cell[1]] if cell is not None else output
    (gradient,) = torch.autograd.grad(unit.sum(), images)
    rows, cols = torch.nonzero(gradient.abs().sum(dim=(0, 1))).unbind(1)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def test_conv1_unit_optimum_is_the_kernels_sign_pattern(digits_model):
    model, _ = digits_model
    kernels = dict(model.stages())["conv1"].weight.detach()  # (16, 1, 3, 3)
    for channel in range(16):
        found = unit_optimum(model, "conv1", channel)
        assert found.closed_form and found.steps == 0 and found.cell == (4, 4)
        assert found.window == (3, 3, 6, 6) == _gradient_window(model, "conv1", channel, found.cell)
        assert torch.equal(found.crop, (kernels[channel] > 0).float()), channel
        assert found.image.sum() == found.crop.sum()  # nothing outside the window
        value = activations(model, found.image)["conv1"][channel, 4, 4]
        assert found.activation == pytest.approx(float(value), abs=1e-5)


def test_deeper_unit_optimum_beats_the_best_image_inside_its_window(digits_model, digits):
    model, _ = digits_model
    images = digits.test_images[:120]
    # a ReLU keeps the window of the convolution before it, whose gradient reaches every pixel of it
    for stage, before, channel in [("relu1", "conv1", 2), ("relu2", "conv2", 5), ("fc", "fc", 3)]:
        found = unit_optimum(model, stage, channel, images=images, steps=60, restarts=2)
        assert not found.closed_form and found.image.min() >= 0 and found.image.max() <= 1
        output = activations(model, found.image)[stage][channel]
        value = output[found.cell] if found.cell is not None else output
        assert found.activation == pytest.approx(float(value), abs=1e-5)
        # the best image, by brute force over the same images
        maps = activations(model, images)[stage][:, channel]
        per_image = maps[:, found.cell[0], found.cell[1]] if found.cell is not None else maps
        assert found.best_image_index == int(per_image.argmax())
        assert found.best_image_activation == pytest.approx(float(per_image.max()), abs=1e-5)
        assert found.activation >= found.best_image_activation, stage
        assert found.window == _gradient_window(model, before, channel, found.cell), stage
        top, left, bottom, right = found.window
        assert torch.equal(found.crop, found.image[:, top:bottom, left:right])
        # pixels outside the window do not reach the unit: noise there leaves its value alone
        noisy = torch.rand_like(found.image)
        noisy[:, top:bottom, left:right] = found.crop
        output = activations(model, noisy)[stage][channel]
        assert float(output[found.cell] if found.cell is not None else output) == pytest.approx(
            found.activation
        )


def test_unit_optimum_refuses_bad_input(digits_model, digits):
    model, _ = digits_model
    with pytest.raises(ConvlensError, match=r"channels \[16\]: stage 'conv1' has channels 0..15"):
        unit_optimum(model, "conv1", 16)
    with pytest.raises(ConvlensError, match="unknown stage 'conv9'"):
        unit_optimum(model, "conv9", 0)
    with pytest.raises(ConvlensError, match="restarts: expected a whole number >= 1"):
        unit_optimum(model, "relu2", 0, restarts=0)
    with pytest.raises(ConvlensError, match="images: expected N x 1x8x8"):
        unit_optimum(model, "relu2", 0, images=digits.test_images[0])


def test_mnist5k_conv1_unit_optima_are_the_kernels_sign_patterns(mnist5k_trained):
    """Issue 23's acceptance: on every live conv1 channel the crop's centre 3x3 is the kernel's sign."""
    model, images, _ = mnist5k_trained
    kernels = dict(model.stages())["conv1"].weight.detach()  # (16, 1, 3, 3)
    for channel in range(16):
        found = unit_optimum(model, "conv1", channel, images=images)
        assert found.crop.shape == (1, 3, 3) and found.window == (13, 13, 16, 16)
        if not found.dead:
            assert torch.equal(found.crop[:, :3, :3], (kernels[channel] > 0).float()), channel
            assert found.activation >= found.best_image_activation
