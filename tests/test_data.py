"""Data: built-ins, the readers on small fixtures made here, and every bad input."""

from __future__ import annotations

import gzip
import logging
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data import list_datasets, load_dataset, read_idx
from convlens.errors import ConvlensError


def test_digits_builtin_shapes(digits):
    assert digits.input_shape == (1, 8, 8)
    assert len(digits.train_labels) == 1437 and len(digits.test_labels) == 360
    assert digits.train_images.dtype == torch.uint8 and int(digits.train_images.max()) == 255
    assert digits.class_names == [str(i) for i in range(10)]


def test_mnist5k_split_is_stratified_and_cached():
    from convlens.data import cache_dir

    dataset = load_dataset("mnist5k")
    assert dataset.input_shape == (1, 28, 28)
    assert torch.bincount(dataset.train_labels).tolist() == [400] * 10  # the source is sorted by class
    assert torch.bincount(dataset.test_labels).tolist() == [100] * 10
    assert (cache_dir() / "mnist5k-v1.npz").is_file()
    again = load_dataset("mnist5k")
    assert again.fingerprint() == dataset.fingerprint()


def test_list_datasets_has_every_builtin():
    from convlens.data import DATASETS

    assert [row["name"] for row in list_datasets()] == DATASETS.names()
    assert {"digits", "mnist5k", "fashion-mnist", "faces"} <= set(DATASETS.names())  # the four shipped


def test_faces_builtin():
    dataset = load_dataset("faces")
    assert dataset.input_shape == (1, 25, 25)
    assert dataset.class_names == ["face", "not-face"]
    assert torch.bincount(dataset.test_labels).tolist() == [25, 25]


def test_normalization_matches_training_pixels(digits):
    pixels = digits.train_images.float() / 255
    assert digits.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-4)
    assert digits.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-4)


# ---------------------------------------------------------------- image folders


def _write(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


@pytest.fixture
def gray_folder(tmp_path):
    rng = np.random.default_rng(0)
    suffixes = ["png", "jpg", "bmp", "gif", "tif"]
    for label in ("cat", "dog"):
        for i in range(10):
            array = rng.integers(0, 255, (12, 12), dtype=np.uint8)
            _write(tmp_path / "pets" / label / f"{i}.{suffixes[i % 5]}", array)
    return tmp_path / "pets"


def test_image_folder_grayscale_all_formats(gray_folder):
    dataset = load_dataset(gray_folder)
    assert dataset.class_names == ["cat", "dog"]
    assert dataset.input_shape == (1, 12, 12)
    assert len(dataset.train_labels) + len(dataset.test_labels) == 20
    assert torch.bincount(dataset.test_labels).tolist() == [2, 2]  # stratified 20 %


def test_image_folder_png_pixels_survive_exactly(tmp_path):
    arrays = {}
    for label in ("a", "b"):
        for i in range(5):
            array = np.full((4, 4), 10 * i + (label == "b"), dtype=np.uint8)
            arrays[int(array[0, 0])] = array
            _write(tmp_path / label / f"{i}.png", array)
    dataset = load_dataset(tmp_path)
    for images in (dataset.train_images, dataset.test_images):
        for image in images:
            value = int(image[0, 0, 0])
            assert torch.equal(image[0], torch.from_numpy(arrays[value]))


def test_image_folder_rgb_resize_and_train_test_subfolders(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 6), ("test", 2)):
        for label in ("red", "blue"):
            for i in range(count):
                _write(
                    tmp_path / split / label / f"{i}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
                )
    dataset = load_dataset(tmp_path, image_size="16x24")
    assert dataset.input_shape == (3, 16, 24)
    assert len(dataset.train_labels) == 12 and len(dataset.test_labels) == 4
    assert dataset.class_names == ["blue", "red"]
    assert "train/ and test/" in dataset.source


def test_corrupt_image_is_skipped_with_a_warning(gray_folder, caplog):
    (gray_folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level(logging.WARNING, logger="convlens"):
        dataset = load_dataset(gray_folder)
    assert len(dataset.train_labels) + len(dataset.test_labels) == 20
    assert "skipped 1 file" in caplog.text


def test_truncated_image_is_skipped(gray_folder, caplog):
    good = gray_folder / "dog" / "0.png"
    (gray_folder / "dog" / "cut.png").write_bytes(good.read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="convlens"):
        load_dataset(gray_folder)
    assert "skipped 1 file" in caplog.text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such file or folder"),
        ("empty", "no images found"),
        ("one_class", "only one class"),
        ("unknown_name", "unknown data set 'mnist6k'"),
        ("pickle", "refusing a pickle file"),
    ],
)
def test_bad_data_specs(tmp_path, setup, message):
    spec = tmp_path / "data"
    if setup == "empty":
        (spec / "cat").mkdir(parents=True)
    elif setup == "one_class":
        _write(spec / "cat" / "0.png", np.zeros((4, 4), np.uint8))
        _write(spec / "cat" / "1.png", np.zeros((4, 4), np.uint8))
    elif setup == "unknown_name":
        spec = "mnist6k"
    elif setup == "pickle":
        spec = tmp_path / "data.pkl"
        spec.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ConvlensError, match=message):
        load_dataset(spec)


def test_bad_image_size():
    with pytest.raises(ConvlensError, match="image_size: expected N or HxW") as caught:
        load_dataset("digits", image_size="big")
    assert caught.value.parameter == "image_size"


# ---------------------------------------------------------------- IDX and NPZ


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "idx"
    folder.mkdir()
    labels = np.arange(40) % 4
    images = rng.integers(0, 255, (40, 6, 6), dtype=np.uint8)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))  # raw, not gzipped
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(images[:8]))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels[:8])))
    return folder, images, labels


def test_idx_folder(idx_folder):
    folder, images, labels = idx_folder
    dataset = load_dataset(folder)
    assert dataset.input_shape == (1, 6, 6)
    assert torch.equal(dataset.train_images[:, 0], torch.from_numpy(images))
    assert dataset.train_labels.tolist() == labels.tolist()
    assert len(dataset.test_labels) == 8 and dataset.class_names == ["0", "1", "2", "3"]


def test_truncated_idx(idx_folder, tmp_path):
    folder, _, _ = idx_folder
    raw = (folder / "t10k-images-idx3-ubyte").read_bytes()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(ConvlensError, match="truncated"):
        load_dataset(folder)
    bad_gzip = tmp_path / "cut.gz"
    bad_gzip.write_bytes(gzip.compress(raw)[:30])
    with pytest.raises(ConvlensError, match="cut.gz"):
        read_idx(bad_gzip)


def test_idx_images_and_labels_disagree(idx_folder):
    folder, _, labels = idx_folder
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels[:39]))
    with pytest.raises(ConvlensError, match="40 images but 39 labels"):
        load_dataset(folder)


def test_npz_channels_last_float_and_split(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.random((30, 10, 10, 3)).astype(np.float32)  # N, H, W, C in [0, 1]
    y = np.arange(30) % 3
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["a", "b", "c"]))
    dataset = load_dataset(path)
    assert dataset.input_shape == (3, 10, 10)
    assert dataset.class_names == ["a", "b", "c"]
    assert len(dataset.train_labels) == 24 and len(dataset.test_labels) == 6


def test_npz_bad_inputs(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(ConvlensError, match="5 images but 4 labels"):
        load_dataset(path)
    np.savez(path, images=np.zeros((5, 4, 4)))
    with pytest.raises(ConvlensError, match="expected arrays 'x'"):
        load_dataset(path)
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(ConvlensError, match="object arrays, which need pickle to load"):
        load_dataset(path)
    path.write_bytes(b"x,y\n1,2\n")  # not an archive: said so, not blamed on pickle
    with pytest.raises(ConvlensError, match=r"not a valid \.npz file \(not a zip archive\)"):
        load_dataset(path)
