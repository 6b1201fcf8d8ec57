"""Activations: every stage's output, equal to running the stages by hand, and no hook left behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.inspect import activations, conv_filters, stage_names
from convlens.models import create_model, list_families


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list_families("classification"))
def test_activations_match_running_the_stages_by_hand(name):
    torch.manual_seed(0)
    model = create_model(name, (1, 16, 16), 4).eval()
    image = torch.rand(1, 16, 16)
    result = activations(model, image)
    x = image.unsqueeze(0)
    with torch.no_grad():
        for (stage, module), recorded in zip(model.stages(), result.stages, strict=False):
            x = module(x)
            assert recorded.name == stage
            torch.testing.assert_close(recorded.output, x[0])
    assert result.stages[-1].name == "softmax"
    torch.testing.assert_close(result.probabilities, torch.softmax(x[0], dim=0))
    torch.testing.assert_close(result.stages[-1].output, result.probabilities)
    assert result.names == stage_names(model)
    assert _hook_count(model) == 0


def test_batch_keeps_the_leading_dimension(digits_model, digits):
    model, _ = digits_model
    images = digits.test_images[:5]  # uint8 batch is converted to pixels in [0, 1]
    result = activations(model, images)
    assert result["conv1"].shape == (5, 16, 8, 8)
    assert result.probabilities.shape == (5, 10)
    assert len(result.prediction) == 5
    single = activations(model, images[2].float() / 255)
    torch.testing.assert_close(single["fc"], result["fc"][2], atol=1e-5, rtol=1e-5)


def test_hooks_removed_even_when_forward_fails():
    model = create_model("convnet", (1, 8, 8), 3)

    def explode(module, inputs, output):
        raise RuntimeError("boom")

    handle = model.stages()[3][1].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        activations(model, torch.rand(1, 8, 8))
    handle.remove()
    assert _hook_count(model) == 0


def test_model_mode_is_restored():
    model = create_model("convnet", (1, 8, 8), 3, batchnorm=True).train()
    activations(model, torch.rand(1, 8, 8))
    assert model.training


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 9, 8), (8,), (2, 1, 1, 8, 8)])
def test_image_that_does_not_fit_is_a_clear_error(shape):
    model = create_model("convnet", (1, 8, 8), 3)
    with pytest.raises(ConvlensError, match="image"):
        activations(model, torch.rand(shape))


def test_filters_are_the_conv_weights():
    model = create_model("resnet8", (1, 16, 16), 4)
    filters = conv_filters(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(filters) == len(convs)
    for f, conv in zip(filters, convs, strict=True):
        torch.testing.assert_close(f.weight, conv.weight.detach())
    assert [f.stage for f in conv_filters(model, "block2")] == [
        "block2.conv1",
        "block2.conv2",
        "block2.shortcut.0",
    ]
    with pytest.raises(ConvlensError, match="stages with filters: conv1, block1"):
        conv_filters(model, "relu1")
    with pytest.raises(ConvlensError, match="unknown stage 'conv9'.*conv1, bn1"):
        conv_filters(model, "conv9")


def test_in_place_layers_do_not_change_what_was_recorded():
    from convlens.inspect import cell_arithmetic
    from convlens.models._registry import Normalize, StagedModel

    torch.manual_seed(0)
    stages = [
        ("normalize", Normalize([0.5], [0.5])),
        ("conv", nn.Conv2d(1, 4, 3, padding=1)),
        ("relu", nn.ReLU(inplace=True)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * 6 * 6, 2)),
    ]
    model = StagedModel(stages, (1, 6, 6), 2).eval()
    image = torch.rand(1, 6, 6)
    result = activations(model, image)
    assert result["conv"].min() < 0  # the ReLU ran in place after the conv output was recorded
    torch.testing.assert_close(result["relu"], result["conv"].clamp_min(0))
    negative = (result["conv"] < 0).nonzero()[0].tolist()
    cell = cell_arithmetic(model, image, "relu", *negative)
    assert cell.before < 0 and cell.after == 0 == cell.output
