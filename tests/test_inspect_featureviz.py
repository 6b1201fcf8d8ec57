"""Feature visualization beats the best real image; top images agree with brute force."""

from __future__ import annotations

import pytest
import torch

from convlens.errors import ConvlensError
from convlens.inspect import activations, feature_visualization, top_activating_images


@pytest.mark.parametrize(
    ("stage", "channels"),
    [("conv2", list(range(32))), ("conv1", list(range(16))), ("relu1", list(range(16)))],
)
def test_optimized_image_beats_the_most_activating_test_image(digits_model, digits, stage, channels):
    model, _ = digits_model
    result = feature_visualization(model, stage, channels, steps=128)
    assert result.images.shape == (len(channels), 1, 8, 8)
    assert result.images.min() >= 0 and result.images.max() <= 1
    top = top_activating_images(model, digits.test_images, stage, channels, k=1)
    for i, channel in enumerate(channels):
        assert result.activation[i] > top.scores[i, 0], (stage, channel)
        # the reported activation is the model's own, measured on the returned image
        own = activations(model, result.images[i])[stage][channel].mean()
        assert float(own) == pytest.approx(float(result.activation[i]), abs=1e-5)


def test_class_visualization_through_softmax(digits_model):
    model, _ = digits_model
    result = feature_visualization(model, "softmax", [3, 7], steps=64)
    logits = activations(model, result.images).logits  # (2, 10)
    assert logits[0].argmax() == 3 and logits[1].argmax() == 7


def test_top_images_match_brute_force(digits_model, digits):
    model, _ = digits_model
    top = top_activating_images(model, digits.test_images, "conv1", [2, 11], k=4, batch_size=97)
    maps = activations(model, digits.test_images)["conv1"]  # (N, 16, 8, 8)
    for i, channel in enumerate([2, 11]):
        scores = maps[:, channel].mean(dim=(1, 2))
        values, indices = scores.topk(4)
        torch.testing.assert_close(top.scores[i], values)
        assert top.indices[i].tolist() == indices.tolist()


def test_bad_stage_and_channels(digits_model, digits):
    model, _ = digits_model
    with pytest.raises(ConvlensError, match=r"channels \[16\]: stage 'conv1' has channels 0..15"):
        feature_visualization(model, "conv1", [0, 16])
    with pytest.raises(ConvlensError, match="unknown stage 'conv9'"):
        top_activating_images(model, digits.test_images, "conv9")
    with pytest.raises(ConvlensError, match="images: expected N x 1x8x8"):
        top_activating_images(model, digits.test_images[0], "conv1")
