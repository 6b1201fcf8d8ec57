"""`convlens explain`, `convolve` and `features` end to end, and one clear line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.models import list_families
from test_convolve import SMILEY_EDGES  # the hand-computed edge map


def _one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:"), err
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, digits) -> Path:
    """A test digit saved as a larger RGB PNG: explain must adapt it to the model's 1x8x8."""
    path = tmp_path_factory.mktemp("images") / "digit.png"
    array = digits.test_images[0, 0].numpy()
    Image.fromarray(np.stack([array] * 3, axis=-1)).resize((32, 32), Image.NEAREST).save(path)
    return path


def test_explain_writes_every_picture(run_cli, digits_run, digit_png, tmp_path):
    code, out, _ = run_cli("explain", digits_run, digit_png, "--out", tmp_path / "x", "--json")
    assert code == 0
    summary = json.loads(out)
    names = {Path(f).name for f in summary["files"]}
    assert {
        "input.png",
        "stage-conv1.png",
        "stage-pool2.png",
        "filters-conv1.png",
        "filters-conv2.png",
    } <= names
    assert "probabilities.png" in names
    drawn = summary["attribution"]["method"]  # the run's measured default
    assert ("gradcam.png" if drawn == "grad-cam" else f"attribution-{drawn}.png") in names
    for file in summary["files"]:
        assert Path(file).stat().st_size > 1000 and Path(file).read_bytes()[:4] == b"\x89PNG"
    assert sum(summary["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert summary["attribution"]["chosen_by"] == "measurement"
    assert [s["stage"] for s in summary["stages"]][-1] == "softmax"
    code, out, _ = run_cli(
        "explain", digits_run, "digits:5", "--out", tmp_path / "y", "--stage", "conv1", "--method", "grad-cam"
    )
    assert code == 0 and "receptive field" in out and "prediction:" in out
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == [
        "filters-conv1.png", "gradcam.png", "input.png", "probabilities.png", "stage-conv1.png",
    ]  # fmt: skip
    code, out, _ = run_cli(
        "explain", digits_run, "digits:5", "--method", "grad-cam", "--json", "--out", tmp_path / "z"
    )
    assert json.loads(out)["grad_cam"]["stage"] == "pool2"  # the last rectified stage


def test_explain_at_prints_the_cell_arithmetic(run_cli, digits_run, digit_png):
    code, out, _ = run_cli("explain", digits_run, digit_png, "--stage", "conv1", "--at", "3,0,0", "--json")
    assert code == 0
    cell = json.loads(out)
    assert cell["kind"] == "conv" and cell["padding"][0][0] == [True, True, True]
    assert cell["total"] == pytest.approx(cell["output"], abs=1e-5)
    code, out, _ = run_cli("explain", digits_run, digit_png, "--stage", "conv1", "--at", "3,0,0")
    assert code == 0 and "pad" in out and "the layer's own output" in out
    code, out, _ = run_cli("explain", digits_run, digit_png, "--stage", "softmax", "--at", "2")
    assert code == 0 and "exp(logit - max)" in out


def test_convolve_smiley_json_and_picture(run_cli, tmp_path):
    png = tmp_path / "edges.png"
    code, out, _ = run_cli("convolve", "smiley", "--kernel", "edge", "--at", "2,2", "--out", png, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["output"] == SMILEY_EDGES
    assert result["at"]["patch"] == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert result["at"]["kernel"] == [[-1, 0, 1]] * 3 and result["at"]["sum"] == -2
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli("convolve", "smiley", "--kernel", "1,1;1,1", "--stride", "2", "--padding", "1")
    assert code == 0 and "5x5 feature map" in out


def test_convolve_photo_and_xray(run_cli, tmp_path):
    code, out, _ = run_cli("convolve", "coffee", "--kernel", "sobel-y", "--stride", "4", "--json")
    assert code == 0 and np.array(json.loads(out)["output"]).shape == (100, 150)
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    if not get_testdata_file("RG1_UNCI.dcm", download=False):
        pytest.skip("pydicom-data is not installed")
    code, out, _ = run_cli(
        "convolve", "xray", "--kernel", "laplacian", "--stride", "8", "--out", tmp_path / "x.png"
    )
    assert code == 0 and "245x230 feature map" in out


def test_features_writes_a_picture(run_cli, digits_run, tmp_path):
    code, out, _ = run_cli(
        "features", digits_run, "--stage", "conv2", "--channels", "1,3", "--steps", "32", "--top-k", "3",
        "--out", tmp_path, "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert result["channels"] == [1, 3] and len(result["top_images"][0]) == 3
    assert Path(result["file"]).name == "features-conv2.png" and Path(result["file"]).is_file()


def _empty_dicom(tmp_path) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    del dataset.PixelData
    dataset.save_as(tmp_path / "empty.dcm")
    return tmp_path / "empty.dcm"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--stage", "conv9"], "unknown stage 'conv9'; this model's stages are: normalize, conv1, relu1"),
        (["--stage", "conv1", "--at", "0,9,0"], "cell (0, 9, 0) is outside stage 'conv1'"),
        (["--stage", "conv1", "--at", "0,a,0"], "--at: expected C,ROW,COL"),
        (["--at", "0,0,0"], "--at needs --stage"),
        (["--target", "10", "--out", "OUT"], "--target must be a class index 0..9 or a class name, got '10'"),
        (
            ["--target", "eleven", "--out", "OUT"],
            "--target must be a class index 0..9 or a class name, got 'eleven'",
        ),
    ],
)
def test_explain_bad_input(run_cli, digits_run, digit_png, tmp_path, args, expected):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    _one_line_error(*run_cli("explain", digits_run, digit_png, *args)[::2], expected)


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of a session-wide run, for commands that write into the run folder."""
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_explain_and_features_write_into_the_run_folder_by_default(run_cli, digits_run, tmp_path):
    run = _copy_run(digits_run, tmp_path)
    code, out, err = run_cli("explain", run / "model.json", "digits:5", "--stage", "conv1", "--json")
    assert code == 0, err
    files = [Path(f) for f in json.loads(out)["files"]]
    assert files and all(f.parent == run / "explain" and f.is_file() for f in files)
    # -k is --top-k, as in predict
    code, out, err = run_cli(
        "features", run, "--stage", "conv1", "--mean", "--channels", "0,1", "--steps", "2", "-k", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert Path(result["file"]) == run / "features" / "features-conv1.png" and Path(result["file"]).is_file()
    assert [len(row) for row in result["top_images"]] == [1, 1]


def test_explain_at_writes_nothing(run_cli, digits_run, tmp_path):
    run = _copy_run(digits_run, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    code, out, err = run_cli("explain", run, "digits:5", "--stage", "conv1", "--at", "0,1,1")
    assert code == 0, err
    assert "total =" in out and sorted(p.name for p in run.iterdir()) == before


def test_explain_bad_images(run_cli, digits_run, tmp_path):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((2, 200), dtype=np.uint8)).save(strip)
    code, _, err = run_cli("explain", digits_run, strip, "--out", tmp_path / "o")
    _one_line_error(code, err, "a 2x200 picture cannot be adapted to the model's 8x8 input")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    code, _, err = run_cli("explain", digits_run, text, "--out", tmp_path / "o")
    _one_line_error(code, err, "notes.png: cannot decode image")
    code, _, err = run_cli("explain", digits_run, _empty_dicom(tmp_path), "--out", tmp_path / "o")
    _one_line_error(code, err, "empty.dcm: DICOM file has no pixel data")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["smiley", "--kernel", "wobble"], "kernel 'wobble': expected a name (edge, sobel-x"),
        (["smiley", "--kernel", "1,2;3"], "rows must have the same number of values"),
        (["smiley", "--kernel", "[[[1]]]"], "expected a 2-D numeric matrix"),
        (["smiley", "--at", "6,0"], "cell (6, 0) is outside the 6x6 feature map"),
        (["smiley", "--stride", "0"], "stride: expected a whole number >= 1"),
        (["smiley", "--out", "edges.jpg"], "--out: expected a .png file name"),
        (["nothing-here.png"], "nothing-here.png: no such file"),
    ],
)
def test_convolve_bad_input(run_cli, args, expected):
    _one_line_error(*run_cli("convolve", *args)[::2], expected)


def test_convolve_dicom_without_pixels(run_cli, tmp_path):
    _one_line_error(*run_cli("convolve", _empty_dicom(tmp_path))[::2], "DICOM file has no pixel data")


def test_features_bad_input(run_cli, digits_run, tmp_path):
    code, _, err = run_cli(
        "features", digits_run, "--stage", "conv1", "--channels", "0,16", "--out", tmp_path
    )
    _one_line_error(code, err, "channels [16]: stage 'conv1' has channels 0..15")
    code, _, err = run_cli("features", digits_run, "--stage", "pool9", "--out", tmp_path)
    _one_line_error(code, err, "unknown stage 'pool9'")


DEEP = 12  # convolutions past which drawing everything (a PNG per stage and per convolution) takes ~20 s


def _convolutions(name: str) -> int:
    from torch import nn

    from convlens.models import create_model

    return sum(isinstance(m, nn.Conv2d) for m in create_model(name, (1, 12, 12), 3).modules())


DEEP_FAMILIES = [name for name in list_families("classification") if _convolutions(name) > DEEP]
FAMILIES = [
    pytest.param(name, marks=pytest.mark.slow) if name in DEEP_FAMILIES else name
    for name in list_families("classification")
]  # every registered family; the deep ones draw everything only in the slow run


@pytest.mark.parametrize("name", FAMILIES)
def test_explain_every_model_family(run_cli, tmp_path, name):
    """Untrained checkpoints are enough: the pictures depend on the stages, not on the weights."""
    from convlens.checkpoint import save_checkpoint
    from convlens.models import create_model

    model = create_model(name, (1, 12, 12), 3)
    save_checkpoint(tmp_path / "run" / "model", model, {"class_names": ["a", "b", "c"]})
    code, out, err = run_cli("explain", tmp_path / "run", "smiley", "--out", tmp_path / "x", "--json")
    assert code == 0, err
    names = {Path(f).name for f in json.loads(out)["files"]}
    assert {"input.png", "probabilities.png"} <= names
    if name == "mlp":
        assert "gradcam.png" not in names and not any(n.startswith("filters-") for n in names)
    else:
        assert "gradcam.png" in names and any(n.startswith("filters-") for n in names)
    if name == "resnet8":
        assert {"filters-block2.conv1.png", "filters-block2.shortcut.0.png", "stage-block3.png"} <= names


@pytest.mark.parametrize("name", DEEP_FAMILIES)
def test_explain_one_stage_of_every_deep_family(run_cli, tmp_path, name):
    """A deep family in the default run: one stage (the last convolution's), its filters and Grad-CAM."""
    from convlens.checkpoint import save_checkpoint
    from convlens.inspect import last_conv_stage
    from convlens.models import create_model

    model = create_model(name, (1, 12, 12), 3)
    save_checkpoint(tmp_path / "run" / "model", model, {"class_names": ["a", "b", "c"]})
    stage = last_conv_stage(model)
    code, out, err = run_cli(
        "explain", tmp_path / "run", "smiley", "--stage", stage, "--out", tmp_path / "x", "--json"
    )
    assert code == 0, err
    names = {Path(f).name for f in json.loads(out)["files"]}
    assert {"input.png", "probabilities.png", "gradcam.png", f"stage-{stage}.png"} <= names
    assert any(n.startswith("filters-") for n in names)


def test_features_labels_a_dead_channel(run_cli, digits_run, tmp_path, monkeypatch):
    import torch

    from convlens.run import Run

    opened = Run.open

    def with_a_dead_channel(*args, **kwargs):
        run = opened(*args, **kwargs)
        with torch.no_grad():
            dict(run.model.stages())["conv1"].bias[2] = -1e4  # relu1 channel 2 never fires
        return run

    monkeypatch.setattr(Run, "open", with_a_dead_channel)
    code, out, _ = run_cli(
        "features", digits_run, "--stage", "relu1", "--channels", "1,2", "--steps", "2", "-k", "2", "--out", tmp_path
    )  # fmt: skip
    assert code == 0 and "channel 2: dead: never active on the 360 test images" in out, out
    assert "channel 1: dead" not in out
    code, out, _ = run_cli(
        "features", digits_run, "--stage", "relu1", "--channels", "2", "--steps", "2", "--out", tmp_path, "--json"
    )  # fmt: skip
    assert json.loads(out)["dead"] == ["dead: never active on the 360 test images"]
