"""The Python API fails like the CLI: a wrong argument is a ConvlensError naming it, never a
torch, NumPy or stdlib error from deep inside, and never a silent misreading.

Each case below is one exported function with valid arguments; Hypothesis replaces one argument
by a value of the wrong type, shape, dtype or range and asserts that only ConvlensError escapes.
The named cases after it are the ones an outside probe found escaping (or silently misread).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convlens
from convlens import ConvlensError


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, fill: float) -> torch.Tensor:
    return torch.full(shape, fill).to(dtype)


SHAPES = st.lists(st.integers(0, 9), min_size=0, max_size=5).map(tuple)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool])
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-3, 300), max_size=4),
    st.lists(st.lists(st.floats(-2, 2), min_size=1, max_size=3), min_size=1, max_size=3),
    st.builds(_tensor, SHAPES, DTYPES, st.sampled_from([0.0, 0.5, 1.0, 7.0, -1.0, math.nan])),
    st.builds(lambda shape: np.zeros(shape, np.float32), SHAPES),
)


@pytest.fixture(scope="module")
def run(digits_run):
    return convlens.Run.open(digits_run)


def _cases(run, tmp_path_factory):
    """name -> (function, valid keyword arguments)."""
    model, image_file = run.model, tmp_path_factory.mktemp("api") / "digit.png"
    from PIL import Image

    Image.new("L", (8, 8), 128).save(image_file)
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    return {
        "Run.predict": (run.predict, {"images": images}),
        "predict_probabilities": (
            lambda **kw: convlens.predict_probabilities(model, **kw),
            {"images": images, "batch_size": 2},
        ),
        "top_predictions": (
            convlens.top_predictions,
            {"probabilities": torch.full((2, 10), 0.1), "class_names": run.class_names, "k": 3},
        ),
        "Run.predict_files": (run.predict_files, {"paths": [image_file], "top_k": 2}),
        "load_image": (convlens.load_image, {"path": image_file, "input_shape": (1, 8, 8)}),
        "create_model": (
            convlens.create_model,
            {"name": "convnet", "in_shape": (1, 8, 8), "num_classes": 3, "mean": [0.5], "std": [0.5]},
        ),
        "fgsm": (
            lambda **kw: convlens.fgsm(model, **kw),
            {"images": images, "labels": labels, "eps": 0.1},
        ),
        "pgd": (
            lambda **kw: convlens.pgd(model, **kw),
            {"images": images, "labels": labels, "eps": 0.1, "steps": 2},
        ),
        "convolve": (
            convlens.convolve,
            {"image": torch.rand(6, 6), "kernel": "edge", "stride": 1, "padding": 0},
        ),
        "Run.open": (convlens.Run.open, {"path": run.folder}),
        "evaluate": (
            lambda **kw: convlens.evaluate(model, **kw),
            {"images": images, "labels": labels, "batch_size": 2},
        ),
        "cell_arithmetic": (
            lambda **kw: convlens.cell_arithmetic(model, **kw),
            {"image": images[0], "stage": "conv1", "channel": 0, "row": 1, "col": 1},
        ),
        "TrainConfig.check": (
            lambda **kw: convlens.TrainConfig(**kw).check(),
            {"epochs": 1, "lr": 0.1, "momentum": 0.9, "pct_start": 0.25, "eval_batch_size": 100},
        ),
    }


@pytest.fixture(scope="module")
def cases(run, tmp_path_factory):
    return _cases(run, tmp_path_factory)


CASE_NAMES = [
    "Run.predict",
    "predict_probabilities",
    "top_predictions",
    "Run.predict_files",
    "load_image",
    "create_model",
    "fgsm",
    "pgd",
    "convolve",
    "Run.open",
    "evaluate",
    "cell_arithmetic",
    "TrainConfig.check",
]


@pytest.mark.parametrize("name", CASE_NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_only_convlens_errors_escape(cases, name, data):
    function, valid = cases[name]
    parameter = data.draw(st.sampled_from(sorted(valid)), label="parameter")
    value = data.draw(JUNK, label="value")
    try:
        function(**{**valid, parameter: value})
    except ConvlensError as error:
        assert "\n" not in str(error)


def test_the_valid_calls_work(cases):
    for name in CASE_NAMES:
        function, valid = cases[name]
        function(**valid)


# --- the cases found escaping or misread ------------------------------------------------------


def test_wrong_images_name_the_parameter(run):
    for images in (
        torch.rand(1, 8, 8),  # no batch dimension
        torch.rand(2, 1, 9, 8),  # wrong H x W
        torch.rand(2, 3, 8, 8),  # wrong channels
        np.zeros((2, 1, 8, 8), np.float32),  # NumPy
        torch.full((2, 1, 8, 8), 255, dtype=torch.uint8),  # 0..255 read as pixels
    ):
        with pytest.raises(ConvlensError) as caught:
            run.predict(images)
        assert caught.value.parameter == "images"
    assert run.predict(torch.rand(2, 1, 8, 8, dtype=torch.float64)).shape == (2, 10)  # converted


def test_misread_arguments_are_refused_or_taken_as_meant(run, digits_run, tmp_path):
    from PIL import Image

    with pytest.raises(ConvlensError, match="labels must be class indices 0..9") as caught:
        convlens.fgsm(run.model, torch.rand(1, 1, 8, 8), torch.tensor([99]), 0.1)
    assert caught.value.parameter == "labels"
    with pytest.raises(ConvlensError, match="batch_size must be a whole number"):
        convlens.predict_probabilities(run.model, torch.rand(1, 1, 8, 8), batch_size=0)
    with pytest.raises(ConvlensError, match="input_shape must be"):
        convlens.load_image(tmp_path / "x.png", (1, 0, 8))
    with pytest.raises(ConvlensError, match="path must be a run folder") as caught:
        convlens.Run.open(None)
    assert caught.value.parameter == "path"
    with pytest.raises(ConvlensError, match="std must be 1 finite positive"):
        convlens.create_model("convnet", (1, 8, 8), 3, std=[0])
    with pytest.raises(ConvlensError, match="metadata must hold class_names"):
        convlens.save_checkpoint(tmp_path / "model", run.model, {})
    assert not (tmp_path / "model.json").exists()
    for bad in ({"momentum": 5}, {"pct_start": 1.5}, {"eval_batch_size": 0}):
        with pytest.raises(ConvlensError) as caught:
            convlens.TrainConfig(**bad).check()
        assert caught.value.parameter == next(iter(bad))
    with pytest.raises(ConvlensError, match="channel must be a whole number") as caught:
        convlens.cell_arithmetic(run.model, torch.rand(1, 8, 8), "conv1", channel="0")
    for bad in ({"lr": math.nan}, {"steps": "8"}):
        with pytest.raises(ConvlensError) as caught:
            convlens.feature_visualization(run.model, "conv1", **bad)
        assert caught.value.parameter == next(iter(bad))
    Image.new("L", (8, 8), 200).save(tmp_path / "digit.png")
    rows = run.predict_files(str(tmp_path / "digit.png"))  # a str is one path, not its characters
    assert [row["file"] for row in rows] == [str(tmp_path / "digit.png")]
