"""Feature visualization beats the best real image; top images agree with brute force."""

from __future__ import annotations

import pytest
import torch

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.inspect import (
    activations,
    feature_visualization,
    regularised_visualization,
    top_activating_images,
)


def _assert_beats_every_live_channel(model, images, stage, result) -> None:
    """activation(optimum) >= activation(best image) on every channel some image turns on, each
    measured by the model on the returned image, the best image found by brute force."""
    maps = activations(model, images)[stage]  # (N, C, h, w)
    per_image = maps.flatten(2).mean(dim=2)  # (N, C)
    for row, channel in enumerate(result.channels):
        live = bool((maps[:, channel] > 0).any())
        assert result.dead[row] == (not live), (stage, channel)
        own = activations(model, result.images[row])[stage][channel].mean()
        assert float(own) == pytest.approx(float(result.activation[row]), abs=1e-5)
        assert float(result.best_image_activation[row]) == pytest.approx(
            float(per_image[:, channel].max()), rel=1e-5, abs=1e-6
        )  # float32 means of the same maps, summed in another order
        if live:
            assert result.activation[row] >= per_image[:, channel].max(), (stage, channel)


@pytest.mark.parametrize("stage", ["conv1", "relu1", "conv2", "relu2"])
def test_optimized_image_beats_the_most_activating_test_image(digits_model, digits, stage):
    model, _ = digits_model
    images = digits.test_images[:200]
    result = feature_visualization(model, stage, steps=32, images=images)
    assert result.images.shape == (len(result.channels), 1, 8, 8)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.closed_form == (stage == "conv1") and not result.regularised
    _assert_beats_every_live_channel(model, to_float(images), stage, result)


@pytest.mark.slow
def test_mnist5k_optimum_beats_the_best_test_image_on_every_live_channel(tmp_path_factory):
    """Issue 24's acceptance, on a model as `convlens train --data mnist5k` trains it (its default
    recipe), against all 1,000 test images."""
    from convlens.checkpoint import load_checkpoint
    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    dataset = load_dataset("mnist5k")
    run_dir = tmp_path_factory.mktemp("mnist5k-default")
    fit(dataset, TrainConfig(seed=0), run_dir, overwrite=True)
    model, _ = load_checkpoint(run_dir)
    images = to_float(dataset.test_images)
    for stage in ["conv1", "relu1", "relu2"]:
        result = feature_visualization(model, stage, images=images)
        _assert_beats_every_live_channel(model, images, stage, result)


def test_regularised_visualization_is_reproducible_and_measured_untransformed(digits_model, digits):
    model, _ = digits_model
    images = digits.test_images[:200]
    first = regularised_visualization(model, "relu2", 7, images=images, steps=24, seed=3)
    again = regularised_visualization(model, "relu2", 7, images=images, steps=24, seed=3)
    other = regularised_visualization(model, "relu2", 7, steps=24, seed=4)
    assert torch.equal(first.image, again.image) and not torch.equal(first.image, other.image)
    assert first.image.shape == (1, 8, 8) and first.image.min() >= 0 and first.image.max() <= 1
    own = activations(model, first.image)["relu2"][7].mean()
    assert first.activation == pytest.approx(float(own), abs=1e-5)
    per_image = activations(model, to_float(images))["relu2"][:, 7].mean(dim=(1, 2))
    assert first.best_image_index == int(per_image.argmax())
    assert first.best_image_activation == pytest.approx(float(per_image.max()))
    assert other.best_image_activation is None and other.dead is None
    with pytest.raises(ConvlensError, match="channel: expected a whole number"):
        regularised_visualization(model, "relu2", "7")


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
    # the optimizer still tries a channel dead on the data, and reports what it reached (here 0)
    visual = feature_visualization(model, "relu1", [3, live[0]], steps=8, images=digits.test_images)
    assert visual.dead == [True, False]
    assert float(visual.activation[0]) == float(activations(model, visual.images[0])["relu1"][3].mean()) == 0
