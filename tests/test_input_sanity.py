"""Bad input is one clear error (exit 2 from the CLI), never a traceback, a hang or a NaN model.

NaN/inf pixels in every reader, labels checked before anything is sized by them, empty data,
model options checked against each model, image sizes checked against memory, and predict
over many files skipping the unreadable ones.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import signal
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data import load_dataset, read_image_folder, read_npz, resize_images
from convlens.errors import ConvlensError
from convlens.models import check_model_options, create_model


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) if the block blocks, e.g. on opening a FIFO."""

    def fail(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _one_line_error(code: int, err: str, expected: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:"), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def _npz(path, x, y, **extra):
    np.savez(path, x=x, y=y, **extra)
    return path


def _images(n=20, dtype=np.float32):
    return np.random.default_rng(0).random((n, 6, 6)).astype(dtype)


def _labels(n=20, classes=2):
    return np.arange(n) % classes


def _idx_bytes(array: np.ndarray, code: int = 0x08, dtype: str = ">u1") -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _idx_folder(folder, images: np.ndarray, labels: np.ndarray, code=0x08, dtype=">u1"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images, code, dtype)))
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    return folder


# ---------------------------------------------------------------- NaN and inf pixels


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_non_finite_pixels_name_the_file_and_count(tmp_path, bad):
    x = _images()
    x[0, 0, :3] = bad
    path = _npz(tmp_path / "set.npz", x, _labels())
    with pytest.raises(ConvlensError, match=r"set\.npz:x: 3 non-finite pixel value\(s\) \(NaN or inf\)"):
        read_npz(path)


def test_npz_non_finite_test_split_and_float64_overflow(tmp_path):
    x_test = _images(4, np.float64)
    x_test[1, 2, 2] = np.nan
    path = _npz(tmp_path / "set.npz", _images(), _labels(), x_test=x_test, y_test=_labels(4))
    with pytest.raises(ConvlensError, match=r"set\.npz:x_test: 1 non-finite"):
        load_dataset(path)
    huge = _images(20, np.float64)
    huge[0, 0, 0] = 1e300  # finite in float64, inf once cast to float32: refused as out of range
    with pytest.raises(ConvlensError, match=r"pixel values must be in \[0, 1\] or \[0, 255\]"):
        load_dataset(_npz(tmp_path / "huge.npz", huge, _labels()))


def test_float_pixels_outside_the_range_are_refused_as_before(tmp_path):
    x = _images() * 2 - 0.5  # -0.5 .. 1.5
    with pytest.raises(ConvlensError, match=r"set\.npz:x: pixel values must be in \[0, 1\] or \[0, 255\]"):
        load_dataset(_npz(tmp_path / "set.npz", x, _labels()))
    scaled = load_dataset(_npz(tmp_path / "ok.npz", _images() * 255, _labels()))  # 0..255 floats: scaled
    assert float(scaled.train_images.max()) <= 1.0


def test_idx_float_pixels_with_nan(tmp_path):
    images = _images()
    images[3, 1, 1] = np.nan
    folder = _idx_folder(tmp_path / "idx", images, _labels(), code=0x0D, dtype=">f4")
    with pytest.raises(ConvlensError, match=r"train-images-idx3-ubyte\.gz: 1 non-finite pixel value"):
        load_dataset(folder)


def test_float_tiff_with_nan_stops_an_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for index in range(4):
            Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)).save(
                tmp_path / "set" / label / f"{index}.png"
            )
    float_image = rng.random((6, 6)).astype(np.float32)
    float_image[0, :2] = np.nan
    Image.fromarray(float_image).save(tmp_path / "set" / "a" / "nan.tif")  # Pillow mode "F"
    with pytest.raises(ConvlensError, match=r"nan\.tif: 2 non-finite pixel value"):
        read_image_folder(tmp_path / "set")


def test_dicom_float_pixels_with_nan(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from convlens.inspect import read_dicom

    def write(path, pixels):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 4, 4, 1, 32
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.FloatPixelData = pixels.astype(np.float32).tobytes()
        ds.save_as(path, enforce_file_format=True)
        assert pydicom.dcmread(path).FloatPixelData
        return path

    good = np.arange(16, dtype=np.float32).reshape(4, 4)
    gray = read_dicom(write(tmp_path / "ok.dcm", good))
    assert gray.shape == (4, 4) and float(gray.max()) == 1.0
    bad = good.copy()
    bad[0, 0], bad[2, 3] = np.nan, np.inf
    with pytest.raises(ConvlensError, match=r"bad\.dcm: 2 non-finite pixel value"):
        read_dicom(write(tmp_path / "bad.dcm", bad))


# ---------------------------------------------------------------- labels and empty data


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([0, 1] * 9 + [10**12, 1]), r"at most 10,000 classes, got label 1000000000000"),
        (np.array([0, 1] * 9 + [2**64 - 1, 1], dtype=np.uint64), r"got label 18446744073709551615"),
        (np.array([0, 1] * 9 + [-1, 1]), r"labels must be >= 0 \(class indices 0..K-1\), got -1"),
        (np.array([0.0, 1.5] * 10), r"labels must be integer class indices 0..K-1, got dtype float64"),
        (np.array([True, False] * 10), r"labels must be integer class indices"),
        (np.eye(2, dtype=np.int64)[_labels()], r"like one-hot rows; expected one class index per image"),
    ],
)
def test_bad_labels_are_refused_before_any_allocation(tmp_path, labels, message):
    with pytest.raises(ConvlensError, match=message):
        load_dataset(_npz(tmp_path / "set.npz", _images(), labels))


def test_labels_beyond_the_class_names(tmp_path):
    path = _npz(tmp_path / "set.npz", _images(), _labels(20, 3), class_names=np.array(["a", "b"]))
    with pytest.raises(ConvlensError, match=r"label 2 but only 2 class names; expected labels 0..1"):
        load_dataset(path)


def test_idx_labels_of_huge_value(tmp_path):
    folder = _idx_folder(tmp_path / "idx", (_images() * 255).astype(np.uint8), _labels())
    labels = _labels().astype(np.int64)
    labels[0] = 2**31 - 1
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x0C, ">i4"))
    with pytest.raises(ConvlensError, match=r"train-labels-idx1-ubyte: labels must be class indices 0..K-1"):
        load_dataset(folder)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((0, 6, 6), np.uint8), "y": np.zeros(0, np.int64)}, r"set\.npz:x: holds no images"),
        (
            {"x": np.zeros((4, 0, 6), np.uint8), "y": np.zeros(4, np.int64)},
            r"images of 0x6 pixels hold nothing",
        ),
        (
            {"x": _images(), "y": _labels(), "x_test": np.zeros((0, 6, 6)), "y_test": np.zeros(0, np.int64)},
            r"set\.npz:x_test: holds no images",
        ),
        ({"x": _images(3), "y": np.array([0, 1, 2])}, r"every class needs at least 2 images"),
    ],
)
def test_empty_data_is_a_clear_error(tmp_path, arrays, message):
    np.savez(tmp_path / "set.npz", **arrays)
    with pytest.raises(ConvlensError, match=message):
        load_dataset(tmp_path / "set.npz")


def test_empty_idx_and_empty_folder(tmp_path):
    folder = _idx_folder(tmp_path / "idx", np.zeros((0, 6, 6), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(ConvlensError, match=r"train-images-idx3-ubyte\.gz: holds no images"):
        load_dataset(folder)
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    with pytest.raises(ConvlensError, match="no images found"):
        load_dataset(tmp_path / "photos")


# ---------------------------------------------------------------- image size and memory


def test_image_size_beyond_the_memory_limit_is_refused_before_resizing():
    with pytest.raises(ConvlensError) as caught:
        load_dataset("digits", image_size=4096)
    assert caught.value.parameter == "image_size"
    assert str(caught.value) == (
        "image_size: 4096x4096 would make the data set 1,797 x 1 x 4096 x 4096 = 28.1 GiB as uint8, "
        "over the 4 GiB limit; choose a smaller size"
    )
    with pytest.raises(ConvlensError, match="sides between 1 and 4096 pixels, got 4097x4097"):
        load_dataset("digits", image_size=4097)
    assert load_dataset("digits", image_size=(16, 12)).input_shape == (1, 16, 12)


def test_image_folder_size_limit(tmp_path, monkeypatch):
    import convlens.data.transforms as transforms

    for label in ("a", "b"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((6, 6, 3), index * 40 + 1, np.uint8)).save(
                tmp_path / "set" / label / f"{index}.png"
            )
    monkeypatch.setattr(transforms, "MAX_DATA_BYTES", 6 * 1 * 64 * 64)
    assert read_image_folder(tmp_path / "set", image_size=(64, 64)).input_shape == (1, 64, 64)
    with pytest.raises(ConvlensError, match=r"image_size: 65x64 would make the data set 6 x 1 x 65 x 64"):
        read_image_folder(tmp_path / "set", image_size=(65, 64))


def test_resize_in_chunks_matches_one_batch_and_handles_no_images():
    images = torch.randint(0, 255, (5, 1, 9, 9), dtype=torch.uint8)
    whole = torch.cat([resize_images(images[i : i + 1], (4, 4)) for i in range(5)])
    assert torch.equal(resize_images(images, (4, 4)), whole)
    assert resize_images(images[:0], (4, 4)).shape == (0, 1, 4, 4)


# ---------------------------------------------------------------- model options and sizes

CONVNET_OPTIONS = (
    "valid options for convnet: width (int 1..1024, default 16), blocks (int 1..8, default 2), "
    "batchnorm (true/false, default false), pool (true/false, default true), convs (int 1..4, default 1), "
    "pool_last (true/false, default true), hidden (int 0..4096, default 0), stem_stride (int 1..2, default 1)"
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": -4}, "model_options: width must be an int from 1 to 1024, got -4; "),
        ({"width": "abc"}, "model_options: width must be an int from 1 to 1024, got 'abc'; "),
        ({"width": 10**6}, "model_options: width must be an int from 1 to 1024, got 1000000; "),
        ({"width": 16.5}, "model_options: width must be an int from 1 to 1024, got 16.5; "),
        ({"blocks": 0}, "model_options: blocks must be an int from 1 to 8, got 0; "),
        ({"batchnorm": 3}, "model_options: batchnorm must be true or false, got 3; "),
        ({"depth": 3}, "model_options: convnet has no option 'depth'; "),
    ],
)
def test_bad_model_options_list_the_valid_ones(options, message):
    with pytest.raises(ConvlensError) as caught:
        create_model("convnet", (1, 28, 28), 10, **options)
    assert caught.value.parameter == "model_options"
    assert str(caught.value) == message + CONVNET_OPTIONS
    with pytest.raises(ConvlensError):
        check_model_options("convnet", options)  # the same check, without building anything


def test_other_families_options_and_a_model_without_options():
    with pytest.raises(
        ConvlensError, match=r"padding must be an int from 0 to 2, got 5; valid options for tinyvgg"
    ):
        create_model("tinyvgg", (1, 28, 28), 10, padding=5)
    with pytest.raises(ConvlensError, match=r"hidden must be an int from 2 to 65536, got 1"):
        create_model("mlp", (1, 28, 28), 10, hidden=1)
    with pytest.raises(ConvlensError, match=r"width must be an int from 1 to 1024, got true"):
        create_model("resnet8", (1, 28, 28), 10, width=True)
    with pytest.raises(ConvlensError, match=r"lenet5 has no option 'width'; valid options for lenet5: none"):
        create_model("lenet5", (1, 28, 28), 10, width=8)
    assert create_model("convnet", (1, 8, 8), 3, width=4, blocks=1, batchnorm=True).arguments["options"] == {
        "width": 4,
        "blocks": 1,
        "batchnorm": True,
    }


def test_absurd_model_sizes_are_refused_without_allocating():
    with pytest.raises(ConvlensError) as caught:
        create_model("convnet", (1, 28, 28), 10, width=1024, blocks=8)
    assert caught.value.parameter == "model_options"
    assert "convnet with width=1024, blocks=8 for 1x28x28 input and 10 classes would have" in str(
        caught.value
    )
    assert "parameters, over the limit of 100,000,000" in str(caught.value)
    with pytest.raises(ConvlensError, match=r"mlp for 3x512x512 input and 10 classes would have 201,361,034"):
        create_model("mlp", (3, 512, 512), 10)
    with pytest.raises(
        ConvlensError, match="num_classes must be at most 10,000, got 1,000,000,000"
    ) as caught:
        create_model("convnet", (1, 28, 28), 10**9)
    assert caught.value.parameter == "num_classes"


def test_the_size_check_does_not_change_the_initialization():
    torch.manual_seed(3)
    model = create_model("convnet", (1, 8, 8), 3)
    torch.manual_seed(3)
    expected = torch.nn.Conv2d(1, 16, 3, padding=1, bias=True)  # the first layer draws first
    assert torch.equal(model.body.conv1.weight, expected.weight)


# ---------------------------------------------------------------- the CLI: one line, exit 2, nothing written


def test_cli_nan_in_npz_exits_2_and_writes_nothing(run_cli, tmp_path):
    x = _images()
    x[2, 3, 4] = np.nan
    path = _npz(tmp_path / "nan.npz", x, _labels())
    code, out, err = run_cli("train", "--data", path, "--epochs", "1", "--out", tmp_path / "run")
    _one_line_error(code, err, "nan.npz:x: 1 non-finite pixel value(s) (NaN or inf)")
    assert out == "" and not (tmp_path / "run").exists()


def test_cli_nan_in_idx_exits_2_and_writes_nothing(run_cli, tmp_path):
    images = _images()
    images[0, 0, 0] = np.inf
    folder = _idx_folder(tmp_path / "idx", images, _labels(), code=0x0E, dtype=">f8")
    code, out, err = run_cli("train", "--data", folder, "--epochs", "1", "--out", tmp_path / "run")
    _one_line_error(code, err, "train-images-idx3-ubyte.gz: 1 non-finite pixel value(s)")
    assert out == "" and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--model-option", "width=-4"],
            "--model-option: width must be an int from 1 to 1024, got -4; "
            "valid options for convnet: width (int 1..1024, default 16)",
        ),
        (["--model-option", "width=abc"], "--model-option: width must be an int from 1 to 1024, got 'abc'"),
        (["--model-option", "batchnorm=3"], "--model-option: batchnorm must be true or false, got 3"),
        (["--model-option", "depth=2"], "--model-option: convnet has no option 'depth'"),
        (["--model", "lenet5", "--model-option", "width=8"], "valid options for lenet5: none"),
        (["--seed", "-1"], "--seed must be a whole number 0..2**63-1, got -1"),
        (["--seed", str(2**63)], "--seed must be a whole number 0..2**63-1, got 9223372036854775808"),
        (["--image-size", "4096"], "--image-size: 4096x4096 would make the data set 1,797 x 1 x 4096 x 4096"),
        (["--image-size", "0"], "--image-size: expected sides between 1 and 4096 pixels"),
    ],
)
def test_cli_bad_train_options_are_one_line(run_cli, tmp_path, args, expected):
    code, _, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", tmp_path / "run", *args)
    _one_line_error(code, err, expected)
    assert not (tmp_path / "run").exists()


def test_cli_models_lists_what_fits_and_names_what_does_not(run_cli):
    code, out, _ = run_cli("models", "--input", "3x512x512", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and rows["convnet"]["parameters"] > 0
    assert "over the limit of 100,000,000" in rows["mlp"]["error"]
    code, _, err = run_cli("models", "--classes", "1")
    _one_line_error(code, err, "--classes must be at least 2, got 1")


# ---------------------------------------------------------------- predict over many files


@pytest.fixture
def mixed_folder(tmp_path, digits):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(digits.test_images[index, 0].numpy()).save(folder / f"{index}.png")
    (folder / "1b-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_predict_skips_unreadable_files_with_one_warning_each(digits_run, mixed_folder, caplog):
    from convlens.run import Run

    with caplog.at_level(logging.WARNING, logger="convlens"):
        rows = Run.open(digits_run).predict_files([mixed_folder], top_k=2)
    assert [os.path.basename(row["file"]) for row in rows] == ["0.png", "1.png", "1b-broken.png", "2.png"]
    broken = rows[2]
    assert broken["predictions"] == [] and "1b-broken.png: cannot decode image" in broken["error"]
    assert all(len(row["predictions"]) == 2 and "error" not in row for row in rows[:2] + rows[3:])
    warnings = [r.getMessage() for r in caplog.records if "1b-broken.png" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("; skipped")


def test_cli_predict_json_carries_the_errors(run_cli, digits_run, mixed_folder):
    code, out, err = run_cli("predict", digits_run, mixed_folder, "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 4
    assert next(row for row in rows if row.get("error"))["file"].endswith("1b-broken.png")
    assert (
        sum(1 for line in err.splitlines() if line.startswith("convlens: warning:") and "1b-broken" in line)
        == 1
    )
    code, out, err = run_cli("predict", digits_run, mixed_folder)  # the table shows the file as unreadable
    assert code == 0 and "unreadable" in out and "Traceback" not in err


def test_cli_predict_exits_2_only_when_nothing_can_be_read(run_cli, digits_run, tmp_path):
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"garbage")
    code, _, err = run_cli("predict", digits_run, tmp_path / "a.png", tmp_path / "b.jpg")
    _one_line_error(code, err, "none of the 2 files could be read, e.g. ")
    from convlens.run import Run

    with pytest.raises(ConvlensError, match="paths: no image files given"):
        Run.open(digits_run).predict_files([])


def test_predict_refuses_a_fifo_up_front(run_cli, digits_run, tmp_path, mixed_folder):
    from convlens.data.readers import decode_image
    from convlens.predict import image_files

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with no_hang():
        with pytest.raises(ConvlensError, match=r"pipe\.png: not a regular file"):
            image_files([fifo])
        with pytest.raises(ConvlensError, match=r"pipe\.png: not a regular file"):
            decode_image(fifo)
        code, _, err = run_cli("predict", digits_run, mixed_folder / "0.png", fifo)
        _one_line_error(code, err, "pipe.png: not a regular file (a pipe, device or socket)")
        walked = image_files([tmp_path])  # a folder walk passes the FIFO by, never opening it
    assert fifo not in walked and len(walked) == 4
