"""The record-holder tricks of bench/record_tricks.py do what the sweep's table says they do.

Checked against independent computations on small random data: whitened channels are
decorrelated with unit variance, pooling before ReLU gives the same function, a dirac-initialised
convolution passes its input through, and the test-time views are the shifted images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
record_tricks = pytest.importorskip("record_tricks")

from convlens.models import create_model  # noqa: E402

SHAPE = (1, 12, 12)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    smooth = F.avg_pool2d(torch.rand(200, 1, 14, 14, generator=generator), 3, stride=1)  # correlated pixels
    return (smooth * 255).to(torch.uint8)


def build(images, **options):
    record_tricks.use_training_images(images)
    torch.manual_seed(0)
    return create_model("trick", SHAPE, 3, (0.5,), (0.1,), width=8, **options)


def test_whitened_first_convolution_is_frozen_and_decorrelates_patches(images):
    model = build(images, whiten=True)
    conv = model.body.conv1
    assert not conv.weight.requires_grad and conv.bias.requires_grad
    normalized = model.body.normalize(images.float() / 255)
    patches = F.unfold(normalized, 3, padding=1).transpose(1, 2).reshape(-1, 9).double()
    top = conv.weight[:4].reshape(4, 9).double()  # the other 4 filters are their negatives
    assert torch.equal(conv.weight[4:], -conv.weight[:4])
    responses = patches @ top.T
    second_moment = responses.T @ responses / responses.shape[0]
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / patches.shape[0])
    expected = torch.diag(eigenvalues[-4:].flip(0) / (eigenvalues[-4:].flip(0) + record_tricks.WHITENING_EPS))
    assert torch.allclose(second_moment, expected, atol=1e-4)


def test_pooling_before_relu_computes_the_same_function(images):
    plain, reordered = build(images), build(images, first_block="pool-relu")
    assert [name for name, _ in reordered.stages()][1:4] == ["conv1", "pool1", "relu1"]
    pixels = images[:16].float() / 255
    assert torch.allclose(plain(pixels), reordered(pixels), atol=1e-6)


def test_dirac_convolution_passes_its_input_through(images):
    conv2 = build(images, dirac=True).body.conv2
    features = torch.randn(2, conv2.in_channels, 6, 6)
    out = F.conv2d(features, conv2.weight, padding=1)
    assert torch.allclose(out[:, : conv2.in_channels], features, atol=1e-6)


def test_shift_views_are_the_image_moved_by_one_pixel():
    pixels = torch.arange(16.0).reshape(1, 1, 4, 4)
    original, down, up, right, left = record_tricks.views(pixels, "shift")
    assert torch.equal(original, pixels)
    assert torch.equal(down[..., 1:, :], pixels[..., :-1, :]) and not down[..., 0, :].any()
    assert torch.equal(up[..., :-1, :], pixels[..., 1:, :]) and not up[..., -1, :].any()
    assert torch.equal(right[..., :, 1:], pixels[..., :, :-1]) and torch.equal(
        left[..., :, :-1], pixels[..., :, 1:]
    )
    assert torch.equal(record_tricks.views(pixels, "flip")[1], pixels.flip(-1))
