"""The inside view on a CUDA model gives the CPU's numbers, handed back as CPU tensors."""

from __future__ import annotations

import copy

import pytest
import torch

from convlens.inspect import (
    activations,
    cell_arithmetic,
    feature_visualization,
    grad_cam,
    integrated_gradients,
    occlusion,
    receptive_fields,
    saliency,
    top_activating_images,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def models(digits_model):
    model, _ = digits_model
    return model, copy.deepcopy(model).cuda()


def test_activations_and_cells_match_the_cpu(models, digits):
    cpu, gpu = models
    image = digits.test_images[4].float() / 255
    on_cpu, on_gpu = activations(cpu, image), activations(gpu, image.cuda())
    for a, b in zip(on_cpu.stages, on_gpu.stages, strict=True):
        assert b.output.device.type == "cpu"
        torch.testing.assert_close(a.output, b.output, atol=1e-4, rtol=1e-4)
    for stage, cell in [
        ("conv2", (3, 1, 2)),
        ("pool1", (2, 3, 3)),
        ("fc", (4, 0, 0)),
        ("softmax", (1, 0, 0)),
    ]:
        result = cell_arithmetic(gpu, image, stage, *cell)
        assert result.total == pytest.approx(result.output, abs=1e-4)
        assert result.total == pytest.approx(cell_arithmetic(cpu, image, stage, *cell).total, abs=1e-4)
    assert [f.size for f in receptive_fields(gpu)] == [f.size for f in receptive_fields(cpu)]


@pytest.mark.parametrize("method", [grad_cam, saliency, integrated_gradients, occlusion])
def test_attributions_match_the_cpu(models, digits, method):
    cpu, gpu = models
    image = digits.test_images[9].float() / 255
    a, b = method(cpu, image), method(gpu, image.cuda())
    assert a.target == b.target and b.map.device.type == "cpu"
    torch.testing.assert_close(a.map, b.map, atol=1e-3, rtol=1e-3)


def test_feature_visualization_runs_on_the_device(models, digits):
    _, gpu = models
    result = feature_visualization(gpu, "conv2", [0, 1, 2, 3], steps=64)
    assert result.images.device.type == "cpu" and result.images.shape == (4, 1, 8, 8)
    top = top_activating_images(gpu, digits.test_images, "conv2", [0, 1, 2, 3], k=1)
    assert (result.activation > top.scores[:, 0]).all()
