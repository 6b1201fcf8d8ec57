"""Per-pixel explanations of a segmentation run, each checked against an independent computation:
softmax/argmax/entropy by hand, receptive windows against autograd, pixel Grad-CAM against
Captum, the portrait blur against SciPy, the overlay by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import segmentation_fixtures
from convlens.errors import ConvlensError


def squares(count: int, seed: int):
    """Noise images with a red and a green square; masks 0 background, 1 red, 2 green."""
    return segmentation_fixtures.squares(count, seed, no_class_row=False)


def squares_dataset():
    from convlens.data.bundle import Dataset

    train_images, train_masks = squares(200, 0)
    test_images, test_masks = squares(40, 1)
    return Dataset(
        "squares", train_images, train_masks, test_images, test_masks,
        ["background", "red", "green"], task="segmentation",
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from convlens.run import Run
    from convlens.train import fit
    from convlens.train.recipe import TrainConfig

    folder = tmp_path_factory.mktemp("seg") / "run"
    fit(squares_dataset(), TrainConfig(model="unet", epochs=2, model_options={"width": 4}), folder)
    return Run.open(folder)


@pytest.fixture(scope="module")
def image():
    return squares(1, 7)[0][0]


def test_segment_is_softmax_argmax_entropy(run, image):
    from convlens.inspect.pixels import segment

    maps = segment(run.model, image, run.class_names)
    with torch.no_grad():
        logits = run.model.eval()(image[None])[0].double()
    expected = torch.softmax(logits, 0)
    assert torch.allclose(maps.probabilities.double(), expected, atol=1e-5)
    assert torch.allclose(maps.probabilities.sum(0), torch.ones(32, 32), atol=1e-5)
    assert torch.equal(maps.mask, logits.argmax(0))
    assert torch.allclose(maps.confidence.double(), expected.max(0).values, atol=1e-5)
    entropy = -(expected * expected.clamp_min(1e-300).log()).sum(0) / math.log(3)
    assert torch.allclose(maps.uncertainty.double(), entropy, atol=1e-5)
    assert float(maps.uncertainty.min()) >= 0 and float(maps.uncertainty.max()) <= 1
    assert [s["class"] for s in maps.shares] == run.class_names
    assert sum(s["pixels"] for s in maps.shares) == 32 * 32
    assert maps.shares[1]["pixels"] == int((logits.argmax(0) == 1).sum())
    assert run.segment(image).mask.equal(maps.mask)
    with pytest.raises(ConvlensError, match="segmentation run"):
        run.predict_files(["x.png"])


@pytest.mark.parametrize(
    ("pixels", "parameter"),
    [
        (torch.rand(3, 16, 16), "pixels"),
        (torch.rand(3, 32, 32) * 3, "pixels"),
        (np.zeros((3, 32, 32)), "pixels"),
    ],
)
def test_segment_refuses_bad_pixels(run, pixels, parameter):
    from convlens.inspect.pixels import segment

    with pytest.raises(ConvlensError) as caught:
        segment(run.model, pixels)
    assert caught.value.parameter == parameter and "\n" not in str(caught.value)


def test_a_classifier_is_refused():
    from convlens.inspect.pixels import explain_pixel, segment
    from convlens.models import create_model

    model = create_model("convnet", (1, 28, 28), 10)
    with pytest.raises(ConvlensError, match="segmentation") as caught:
        segment(model, torch.rand(*model.in_shape))
    assert caught.value.parameter == "model"
    with pytest.raises(ConvlensError, match="segmentation"):
        explain_pixel(model, torch.rand(*model.in_shape), 0, 0)


def stage_gradients(model, image, row, col):
    """Autograd: the gradient of output pixel (row, col)'s logits w.r.t. every stage's map."""
    from convlens.inspect._stages import model_stages

    maps, handles = {}, []
    for name, module in model_stages(model):
        handles.append(
            module.register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out))
        )
    try:
        logits = model.eval()(image[None].clone().requires_grad_(True))
        names = [name for name, value in maps.items() if value.ndim == 4 and value is not logits]
        grads = torch.autograd.grad(logits[0, :, row, col].sum(), [maps[n] for n in names], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return dict(zip(names, grads, strict=True))


@pytest.mark.parametrize(("row", "col"), [(0, 0), (13, 20), (31, 5)])
def test_receptive_windows_bound_the_gradient(run, image, row, col):
    """Every stage map cell with a non-zero gradient lies inside the reported window, and the
    window is tight: its edges are reached by non-zero gradients (up to a cell lost to a ReLU
    or pooling that passes nothing back at this image)."""
    from convlens.inspect.pixels import explain_pixel

    fields = {f["stage"]: f for f in explain_pixel(run.model, image, row, col).receptive_fields}
    gradients = stage_gradients(run.model, image, row, col)
    assert set(fields) == set(gradients)
    tight = 0
    for name, gradient in gradients.items():
        field = fields[name]
        assert tuple(field["shape"]) == tuple(gradient.shape[1:])
        nonzero = torch.nonzero(gradient[0].abs().sum(0))
        assert len(nonzero), name
        top, left = nonzero.min(0).values.tolist()
        bottom, right = nonzero.max(0).values.tolist()
        assert field["top"] <= top and field["left"] <= left, name
        assert bottom <= field["bottom"] and right <= field["right"], name
        tight += (top, left, bottom, right) == (field["top"], field["left"], field["bottom"], field["right"])
    assert tight >= 0.8 * len(gradients)


@pytest.mark.parametrize("use_region", [False, True])
def test_pixel_grad_cam_matches_captum(run, image, use_region):
    from captum.attr import LayerAttribution, LayerGradCam

    from convlens.inspect import find_stage
    from convlens.inspect.pixels import explain_pixel, pixel_grad_cam_stage

    model = run.model.eval()
    stage = pixel_grad_cam_stage(model)
    assert stage == "dec1.relu2"  # the last decoder ReLU, before the 1x1 head
    row, col, target = 10, 12, 1
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[8:14, 10:16] = True

    def score(batch):
        logits = model(batch)[:, target]
        return (logits * region).sum((1, 2)) if use_region else logits[:, row, col]

    explained = explain_pixel(model, image, row, col, target=target, region=region if use_region else None)
    cam = LayerGradCam(score, find_stage(model, stage)).attribute(image[None])
    expected = LayerAttribution.interpolate(cam.relu(), (32, 32), interpolate_mode="bilinear")[0, 0].detach()
    expected = expected / expected.max()
    assert explained.stage == stage and explained.target == target
    assert explained.region_pixels == (36 if use_region else 1)
    assert torch.allclose(explained.grad_cam, expected, atol=1e-5)
    assert float(explained.grad_cam.min()) >= 0 and float(explained.grad_cam.max()) == pytest.approx(1)


def test_explain_pixel_probabilities_and_refusals(run, image):
    from convlens.inspect.pixels import explain_pixel, segment

    explained = explain_pixel(run.model, image, 4, 9)
    maps = segment(run.model, image)
    assert torch.allclose(explained.probabilities, maps.probabilities[:, 4, 9], atol=1e-6)
    assert explained.predicted == int(maps.mask[4, 9]) == explained.target
    for kwargs, parameter in [
        ({"row": 32, "col": 0}, "row"),
        ({"row": 0, "col": -1}, "col"),
        ({"row": 0, "col": 0, "target": 3}, "target"),
        ({"row": 0, "col": 0, "region": torch.zeros(32, 32, dtype=torch.bool)}, "region"),
        ({"row": 0, "col": 0, "region": torch.ones(16, 16, dtype=torch.bool)}, "region"),
        ({"row": 0, "col": 0, "stage": "nope"}, "stage"),
    ]:
        with pytest.raises(ConvlensError) as caught:
            explain_pixel(run.model, image, **kwargs)
        assert caught.value.parameter == parameter, kwargs


@pytest.mark.parametrize("radius", [1.5, 6, 20])
def test_portrait_blur_is_scipy_gaussian_outside_and_identical_inside(radius):
    from scipy.ndimage import gaussian_filter

    from convlens.inspect.portrait import portrait_effect

    pixels = torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(3))
    foreground = torch.zeros(24, 40, dtype=torch.bool)
    foreground[5:15, 8:30] = True
    result = portrait_effect(pixels, foreground, "blur", radius)
    assert torch.equal(result[:, foreground], pixels[:, foreground])  # bit for bit
    expected = np.stack([gaussian_filter(c.double().numpy(), sigma=radius) for c in pixels])
    background = ~foreground.numpy()
    assert np.abs(result.numpy()[:, background] - expected[:, background]).max() < 1e-5


def test_portrait_grey_and_refusals():
    from convlens.inspect.portrait import DARKEN, portrait_effect

    pixels = torch.rand(3, 8, 8)
    foreground = torch.zeros(8, 8, dtype=torch.bool)
    foreground[2:5, 2:5] = True
    result = portrait_effect(pixels, foreground, "grey")
    luma = 0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2]
    assert torch.equal(result[:, foreground], pixels[:, foreground])
    for channel in range(3):
        assert torch.allclose(result[channel][~foreground], (luma * DARKEN)[~foreground], atol=1e-6)
    for args, parameter in [
        ((pixels, foreground, "sepia"), "effect"),
        ((pixels, foreground, "blur", 0), "radius"),
        ((pixels, foreground.float()), "foreground"),
        ((pixels[0], foreground), "pixels"),
    ]:
        with pytest.raises(ConvlensError) as caught:
            portrait_effect(*args)
        assert caught.value.parameter == parameter


def test_palette_and_overlay():
    from convlens.views.plots.colours import SERIES
    from convlens.views.segmentation_colours import class_palette, overlay

    palette = class_palette(12)
    assert palette.shape == (12, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == tuple(int(SERIES[0][i : i + 2], 16) for i in (1, 3, 5))
    assert len({tuple(c) for c in palette}) == 12  # distinct
    pixels = torch.rand(3, 6, 6)
    mask = torch.zeros(6, 6, dtype=torch.int64)
    mask[1:3, 1:3] = 2
    mask[5, 5] = 255  # no class: left as it is
    result = overlay(pixels, mask, alpha=0.25, k=3)
    photo = (pixels.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert result.shape == (6, 6, 3) and result.dtype == np.uint8
    background = (mask == 0).numpy() | (mask == 255).numpy()
    assert np.array_equal(result[background], photo[background])
    tinted = 0.75 * photo[1, 1].astype(float) + 0.25 * palette[2].astype(float)
    assert np.abs(result[1, 1].astype(float) - tinted).max() <= 1
    with pytest.raises(ConvlensError) as caught:
        overlay(pixels, mask, alpha=2)
    assert caught.value.parameter == "alpha"


def test_mask_png_reads_back_as_class_ids():
    import io

    from PIL import Image

    from convlens.views.segmentation_colours import class_palette, mask_png

    mask = torch.randint(0, 4, (9, 7))
    picture = Image.open(io.BytesIO(mask_png(mask, 4)))
    assert picture.mode == "P"
    assert np.array_equal(np.asarray(picture), mask.numpy())
    palette = np.asarray(picture.getpalette()[:12], dtype=np.uint8).reshape(4, 3)
    assert np.array_equal(palette, class_palette(4))
