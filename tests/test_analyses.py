"""The analyses the faces show (convlens.inspect.analyses), each against an independent computation."""

from __future__ import annotations

import pytest
import torch

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.inspect import grad_cam, grad_cam_stage
from convlens.inspect.analyses import (
    correct_sample,
    explanation_attribution,
    misclassified,
    one_per_class,
    top_activating_pictures,
)
from convlens.models import create_model


@pytest.fixture(scope="module")
def model(digits_model):
    return digits_model[0]  # the trained digits convnet


def test_misclassified_orders_the_mistakes_by_confidence():
    # five images, three classes; images 1, 2 and 4 are wrong with confidence 0.6, 0.9 and 0.6
    probabilities = torch.tensor(
        [[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.05, 0.05, 0.9], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]]
    )
    labels = torch.tensor([0, 0, 1, 2, 1])
    found = misclassified(None, torch.zeros(5, 1, 2, 2), labels, probabilities, limit=2, with_grad_cam=False)
    assert found.indices.tolist() == [2, 1]  # 0.9 first; of the two at 0.6 the earlier image
    assert found.labels.tolist() == [1, 0] and found.predicted.tolist() == [2, 1]
    assert found.confidence.tolist() == pytest.approx([0.9, 0.6])
    assert (found.wrong, found.total, found.cams) == (3, 5, [])
    with pytest.raises(ConvlensError, match="limit must be a positive integer") as caught:
        misclassified(None, torch.zeros(5, 1, 2, 2), labels, probabilities, limit=0)
    assert caught.value.parameter == "limit"


def test_misclassified_on_a_trained_model_matches_a_loop_over_the_test_images(model, digits):
    images, labels = to_float(digits.test_images[:200]), digits.test_labels[:200]
    found = misclassified(model, images, labels, limit=3)
    rows = []
    with torch.no_grad():
        for index in range(labels.numel()):
            probabilities = torch.softmax(model(images[index : index + 1]), dim=1)[0]
            if int(probabilities.argmax()) != int(labels[index]):
                rows.append((-float(probabilities.max()), index, int(probabilities.argmax())))
    rows.sort()
    assert rows, "the digits model should get a few of 200 test images wrong"
    assert found.wrong == len(rows) and found.total == 200
    assert found.indices.tolist() == [index for _, index, _ in rows[:3]]
    for cam, (_, index, predicted) in zip(found.cams, rows, strict=False):
        expected = grad_cam(model, images[index], target=predicted)
        assert cam.target == predicted and torch.allclose(cam.map, expected.map)


def test_explanation_attribution_picks_the_stage_and_handles_a_model_without_convolutions(model, digits):
    image = to_float(digits.test_images[0])
    default = explanation_attribution(model, image)
    assert default.method == "grad-cam" and default.stage == grad_cam_stage(model)
    assert explanation_attribution(model, image, stage="conv1").stage == "conv1"
    assert explanation_attribution(model, image, stage="fc").stage == grad_cam_stage(model)
    saliency = explanation_attribution(model, image, "saliency", target=3, stage="conv1")
    assert saliency.method == "saliency" and saliency.stage is None and saliency.target == 3

    mlp = create_model("mlp", digits.input_shape, 10, digits.mean, digits.std).eval()
    assert explanation_attribution(mlp, image) is None  # no convolution: no Grad-CAM, no error
    assert explanation_attribution(mlp, image, "saliency").method == "saliency"
    with pytest.raises(ConvlensError, match="target class 12 is out of range"):
        explanation_attribution(mlp, image, target=12)  # still checked without Grad-CAM


def test_top_activating_pictures_are_the_indexed_test_images(model, digits):
    images = digits.test_images[:120]
    found = top_activating_pictures(model, images, "relu1", [0, 2], k=4)
    assert found.top.channels == [0, 2] and found.pixels.shape == (2, 4, *digits.input_shape)
    # the channel's mean activation, computed here with a hook, ranks the same images first
    outputs = {}
    stage = dict(model.stages())["relu1"]
    handle = stage.register_forward_hook(lambda module, inputs, output: outputs.update(relu1=output))
    with torch.no_grad():
        model(to_float(images))
    handle.remove()
    for row, channel in enumerate([0, 2]):
        means = outputs["relu1"][:, channel].flatten(1).mean(dim=1)
        expected = means.topk(4).values
        assert torch.allclose(found.top.scores[row], expected, atol=1e-6)
        for rank, index in enumerate(found.top.indices[row].tolist()):
            assert torch.equal(found.pixels[row, rank], images[index].float() / 255)


def test_one_per_class_takes_the_first_image_of_each_new_class_in_a_seeded_order():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    chosen = one_per_class(labels, count=3, seed=5)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(5)).tolist()
    expected, seen = [], set()
    for index in order:
        if int(labels[index]) not in seen and len(expected) < 3:
            expected.append(index)
            seen.add(int(labels[index]))
    assert chosen == expected and len({int(labels[i]) for i in chosen}) == 3
    assert sorted(int(labels[i]) for i in one_per_class(labels, count=10)) == [0, 1, 2, 3]  # never two alike
    with pytest.raises(ConvlensError, match="count must be a positive integer"):
        one_per_class(labels, count=0)


def test_correct_sample_is_the_first_right_prediction():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert correct_sample(torch.tensor([1, 1, 0]), probabilities) == 1
    assert correct_sample(torch.tensor([1, 0, 0]), probabilities) == 0  # none right: the first image
