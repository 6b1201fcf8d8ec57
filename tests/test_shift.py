"""Distribution shift and polarity: real digits pass, their inversions look inverted, photos are far."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.shift import FAR_DISTANCE, check_shift, invert

PHOTOS = ("astronaut", "chelsea", "coffee", "camera")


@pytest.fixture(scope="module")
def digits_float(digits) -> torch.Tensor:
    from convlens.data import to_float

    return to_float(digits.test_images)  # (360, 1, 8, 8)


def test_every_test_digit_is_near_and_every_inverted_one_looks_inverted(digits, digits_float):
    checks = [check_shift(image, digits.mean, digits.std) for image in digits_float]
    assert not any(c.is_far or c.looks_inverted or c.message for c in checks)
    assert max(c.distance for c in checks) < 0.5  # measured 0.33
    inverted = [check_shift(invert(image), digits.mean, digits.std) for image in digits_float]
    assert all(c.is_far and c.looks_inverted for c in inverted)
    assert all(c.inverted_distance < c.distance for c in inverted)
    assert {c.reason for c in inverted} <= {"polarity", "brightness"}
    assert inverted[0].message.startswith(
        "looks inverted: dark on light, where the training images are light"
    )


@pytest.mark.parametrize("photo", PHOTOS)
def test_a_photo_given_to_the_digits_model_is_far_but_not_inverted(digits_run, photo):
    from convlens.inspect import picture_for_model
    from convlens.run import Run

    run = Run.open(digits_run)
    for pixels in (
        picture_for_model(photo, run.input_shape),
        invert(picture_for_model(photo, run.input_shape)),
    ):
        check = run.check_shift(pixels)
        assert check.is_far and not check.looks_inverted and check.reason == "tones"
        assert check.black_or_white < 0.15  # measured 0.00-0.08 at 8x8
        assert "mid-grey" in check.message


@pytest.mark.parametrize("background", ["black", "white"])
def test_a_drawing_shrunk_to_8x8_is_ink_in_either_polarity(digits, background):
    """The explorer's canvas: a 22-pixel stroke on 280x280 becomes grey-edged at 8x8, yet stays ink."""
    from PIL import ImageDraw

    from convlens.data.readers import array_to_input

    canvas = Image.new("RGB", (280, 280), background)
    ImageDraw.Draw(canvas).line(
        [(90, 60), (190, 60), (190, 140), (90, 140), (90, 230), (190, 230)],
        fill="white" if background == "black" else "black",
        width=22,
    )
    check = check_shift(array_to_input(np.asarray(canvas), digits.input_shape), digits.mean, digits.std)
    assert check.black_or_white > 0.5
    assert check.is_far == check.looks_inverted == (background == "white")


def test_a_photo_data_set_keeps_photos_and_its_own_images_near():
    """faces (LFW crops) is not ink: no contrast or polarity rule, only brightness far beyond σ."""
    from convlens.data import load_dataset, to_float
    from convlens.inspect import picture_for_model

    faces = load_dataset("faces")
    for image in to_float(faces.test_images):
        assert not check_shift(image, faces.mean, faces.std).is_far
    for photo in PHOTOS:
        assert not check_shift(picture_for_model(photo, faces.input_shape), faces.mean, faces.std).is_far
    white = check_shift(torch.ones(faces.input_shape), faces.mean, faces.std)
    assert white.is_far and white.reason == "brightness" and white.distance > FAR_DISTANCE
    assert white.looks_inverted  # black is nearer their mean than white


def test_blank_images_and_rgb_channels():
    mean, std = (0.13, 0.31), (0.31, 0.31)
    black = check_shift(torch.zeros(2, 6, 6), mean, std)
    assert not black.is_far and black.contrast is None  # a blank canvas is dark like the training images
    rgb = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(Exception, match="3 channels"):
        check_shift(rgb, mean, std)
    assert json.dumps(check_shift(rgb, (0.5,) * 3, (0.29,) * 3).to_json())  # JSON-ready


def _save(array: np.ndarray, path) -> None:
    Image.fromarray(array).resize((32, 32), Image.NEAREST).save(path)


def test_predict_warns_and_invert_fixes_it(run_cli, digits_run, digits, tmp_path):
    digit = digits.test_images[3, 0].numpy()
    _save(digit, tmp_path / "white-on-black.png")
    _save(255 - digit, tmp_path / "black-on-white.png")
    code, out, err = run_cli("predict", digits_run, tmp_path / "white-on-black.png", "--json")
    assert code == 0 and err == "" and json.loads(out)[0]["shift"]["is_far"] is False

    code, out, err = run_cli("predict", digits_run, tmp_path / "black-on-white.png", "--json")
    row = json.loads(out)[0]
    assert code == 0 and row["shift"]["looks_inverted"] is True
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and "black-on-white.png: looks inverted" in lines[0]
        and lines[0].endswith("try --invert")
    )

    code, out, err = run_cli("predict", digits_run, tmp_path / "black-on-white.png", "--invert", "--json")
    inverted = json.loads(out)[0]
    assert code == 0 and err == "" and inverted["shift"]["is_far"] is False
    code, out, _ = run_cli("predict", digits_run, tmp_path / "white-on-black.png", "--json")
    plain = json.loads(out)[0]["predictions"]  # 1 − (1 − x) is x again, up to float rounding
    assert [p["class"] for p in inverted["predictions"]] == [p["class"] for p in plain]
    assert [p["probability"] for p in inverted["predictions"]] == pytest.approx(
        [p["probability"] for p in plain], abs=1e-4
    )


def test_explain_warns_on_a_photo_and_carries_the_check(run_cli, digits_run, tmp_path):
    code, out, err = run_cli("explain", digits_run, "camera", "--out", tmp_path, "--json")
    assert code == 0 and json.loads(out)["shift"]["reason"] == "tones"
    assert err.count("\n") == 1 and "camera: far from the training images" in err
    code, out, err = run_cli(
        "explain", digits_run, "digits:3", "--invert", "--stage", "conv1", "--at", "0,1,1", "--json"
    )
    assert code == 0 and json.loads(out)["shift"]["looks_inverted"] is True
    assert "try without --invert" in err
