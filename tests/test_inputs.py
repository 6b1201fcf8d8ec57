"""One input pipeline (``Run.input``, convlens.inputs): the same image gives the same pixels, and the
same bad image the same error, in the library, the CLI (explain, predict) and the explorer's uploads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from convlens.errors import ConvlensError
from convlens.inputs import InputTooLarge, UnreadableInput, read_header
from convlens.run import Run


@pytest.fixture(scope="module")
def run(digits_run) -> Run:
    return Run.open(digits_run)


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    from convlens.server import create_app

    return TestClient(create_app([digits_run], allowed_hosts=["testserver"]), raise_server_exceptions=False)


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _empty_dicom(tmp_path: Path) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    del dataset.PixelData
    dataset.save_as(tmp_path / "empty.dcm")
    return tmp_path / "empty.dcm"


def _ct_dicom() -> Path:
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm", download=False))


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    """name → (file, the explorer's HTTP status for it)."""
    return {
        "aspect": (_png(tmp_path / "strip.png", np.zeros((2, 200), dtype=np.uint8)), 400),
        "not an image": ((tmp_path / "notes.png"), 415),
        "dicom without pixels": (_empty_dicom(tmp_path), 415),
    }


def _cli_error(run_cli, *args) -> str:
    code, _, err = run_cli(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("convlens: error: "), err
    return lines[0].removeprefix("convlens: error: ")


@pytest.mark.parametrize("case", ["aspect", "not an image", "dicom without pixels"])
def test_a_bad_image_is_the_same_error_everywhere(case, run, client, run_cli, digits_run, tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    path, status = _bad_inputs(tmp_path)[case]
    with pytest.raises(ConvlensError) as caught:
        run.input(path)
    library = str(caught.value)
    assert library.startswith(f"{path}: ")
    reason = library.removeprefix(f"{path}: ")  # what is wrong, after the name of the file
    assert _cli_error(run_cli, "explain", digits_run, path, "--out", tmp_path / "x") == library
    assert _cli_error(run_cli, "predict", digits_run, path) == library
    answer = client.post(
        f"/api/runs/{digits_run.name}/predict", files={"image": (path.name, path.read_bytes(), "image/png")}
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"] == f"upload {path.name!r}: {reason}"
    assert not (tmp_path / "x").exists()


def test_the_words_of_each_bad_image(run, tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    cases = _bad_inputs(tmp_path)
    expected = {
        "aspect": "a 2x200 picture cannot be adapted to the model's 8x8 input (aspect ratio off by more than 4x)",
        "not an image": "cannot decode image: not an image convlens reads; expected PNG, JPEG, GIF, BMP",
        "dicom without pixels": "DICOM file has no pixel data",
    }
    for case, (path, _) in cases.items():
        with pytest.raises(ConvlensError, match=expected[case].replace("(", r"\(").replace(")", r"\)")):
            run.input(path)
    with pytest.raises(UnreadableInput):
        run.input(cases["not an image"][0].read_bytes(), name="upload 'notes.png'")


def test_a_file_its_bytes_and_a_folder_give_the_same_pixels_and_predictions(
    run, client, digits, digits_run, tmp_path
):
    digit = _png(tmp_path / "seven.png", np.kron(digits.test_images[0, 0].numpy(), np.ones((4, 4), np.uint8)))
    from_file = run.input(digit)
    from_bytes = run.input(digit.read_bytes(), name="upload 'seven.png'")
    assert from_file.pixels.shape == (1, 8, 8) and torch.equal(from_file.pixels, from_bytes.pixels)
    assert from_bytes.source == "upload 'seven.png'" and from_file.shift_json() == from_bytes.shift_json()
    probabilities = run.predict(from_file.batch)[0]
    (row,) = run.predict_files([digit], top_k=1)
    assert row["predictions"][0]["probability"] == pytest.approx(float(probabilities.max()))
    answer = client.post(
        f"/api/runs/{digits_run.name}/predict",
        files={"image": ("seven.png", digit.read_bytes(), "image/png")},
    ).json()
    assert answer["probabilities"] == pytest.approx(probabilities.tolist(), abs=1e-6)
    inverted = run.input(digit, invert=True)
    assert inverted.inverted and torch.allclose(inverted.pixels, 1 - from_file.pixels)


def test_a_dicom_file_reads_the_same_from_disk_from_bytes_and_through_the_explorer(run, client, digits_run):
    path = _ct_dicom()
    from_file, from_bytes = run.input(path), run.input(path.read_bytes(), name="upload 'ct.dcm'")
    assert from_file.pixels.shape == (1, 8, 8) and torch.equal(from_file.pixels, from_bytes.pixels)
    assert read_header(path).kind == "dicom" and read_header(path.read_bytes()).kind == "dicom"
    answer = client.post(
        f"/api/runs/{digits_run.name}/predict",
        files={"image": ("ct.dcm", path.read_bytes(), "application/dicom")},
    )
    assert answer.status_code == 200, answer.text
    expected = run.predict(from_file.batch)[0]
    assert answer.json()["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_built_in_pictures_and_tensors(run):
    smiley = run.input("smiley")
    assert smiley.source == "smiley" and smiley.pixels.shape == (1, 8, 8)
    same = run.input(smiley.pixels.clone(), name="test image 3")
    assert same.source == "test image 3" and torch.equal(same.pixels, smiley.pixels)
    with pytest.raises(
        ConvlensError, match=r"image: image tensor is torch.float32 of shape \(3, 8, 8\)"
    ) as caught:
        run.input(torch.rand(3, 8, 8))
    assert caught.value.parameter == "image"


def test_the_header_is_read_without_decoding_and_bombs_are_refused(tmp_path):
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    with pytest.raises(InputTooLarge, match="refused, image too large"):
        read_header(buffer.getvalue(), name="bomb.png")
    header = read_header(_png(tmp_path / "wide.png", np.zeros((30, 40), np.uint8)))
    assert (header.kind, header.height, header.width) == ("image", 30, 40)
    with pytest.raises(UnreadableInput, match="not an image convlens reads"):
        read_header(b"%!PS-Adobe-3.0 EPSF-3.0\n", name="script.eps")  # Pillow could run Ghostscript
