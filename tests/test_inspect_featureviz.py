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


def test_conv1_reaches_the_closed_form_optimum_on_every_channel(mnist5k_trained):
    """conv1 is linear in the pixels: its optimum over [0, 1] is the sign pattern of its effective
    weights, which beats every test image and can't be improved by flipping any pixel."""
    model, images, _ = mnist5k_trained
    result = feature_visualization(model, "conv1")
    assert result.closed_form and result.images.shape == (16, 1, 28, 28)
    assert set(result.images.unique().tolist()) <= {0.0, 1.0}
    conv = dict(model.stages())["conv1"]
    normalize = dict(model.stages())["normalize"]
    # the effective weight of each pixel, by hand: the kernel over every position that sees it
    ones = torch.ones(1, 1, 28, 28)
    for channel in range(16):
        kernel = conv.weight[channel : channel + 1].detach() / normalize.std.flatten()[0]
        effective = torch.nn.functional.conv_transpose2d(ones, kernel, padding=1)[0, 0] / 28**2
        expected = (effective > 0).float()
        score = float(activations(model, expected)["conv1"][channel].mean())
        assert float(result.activation[channel]) >= score - 0.01 * abs(score) - 1e-6, channel
        assert (
            torch.equal(result.images[channel, 0], expected)
            or abs(float(result.activation[channel]) - score) < 1e-5
        )
    top = top_activating_images(model, images, "conv1", k=1)
    assert (result.activation >= top.scores[:, 0]).all()


def test_a_dead_channel_is_labelled_dead(digits_model, digits):
    import copy

    model = copy.deepcopy(digits_model[0])
    with torch.no_grad():
        dict(model.stages())["conv1"].bias[3] = -1e4  # relu1 channel 3 never fires
    top = top_activating_images(model, digits.test_images, "relu1", k=2)
    assert top.dead[3] and sum(top.dead) >= 1 and top.image_count == len(digits.test_images)
    assert top.dead_label(3) == f"dead: never active on the {len(digits.test_images)} test images"
    live = [i for i, dead in enumerate(top.dead) if not dead]
    assert live and top.dead_label(live[0]) is None
    assert not any(top_activating_images(model, digits.test_images, "fc", k=1).dead)  # logits are never dead
