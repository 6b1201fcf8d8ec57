"""Data that would train the wrong model, or fail after training, is refused when it is read.

A class folder that cannot be listed once vanished (a 2-class model from 3 classes, exit 0); an
empty ``test/`` trained to the end and then failed measuring nothing; an NPZ whose test labels
name a class with no training image trained empty classes; a 0-d ``class_names`` was a traceback.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from convlens.data import load_dataset
from convlens.errors import ConvlensError


def _folder(root, classes=("a", "b", "c"), images=4, split=""):
    for name in classes:
        folder = root / split / name
        folder.mkdir(parents=True)
        for index in range(images):
            shade = 40 * index + 10 * classes.index(name)
            Image.new("L", (6, 6), color=shade).save(folder / f"{index}.png")
    return root


def _unlistable(monkeypatch, folder) -> None:
    """``folder`` cannot be listed (as under chmod 000 for another user; root reads anything)."""
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == os.fspath(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)


def test_an_unreadable_class_folder_is_refused_not_dropped(tmp_path, monkeypatch, run_cli):
    data = _folder(tmp_path / "data")
    _unlistable(monkeypatch, data / "a")
    with pytest.raises(ConvlensError, match=r"data/a: cannot be read \(Permission denied\)"):
        load_dataset(data)
    code, _, err = run_cli("train", "--data", data, "--epochs", "1", "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err and "data/a: cannot be read" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder")
def test_a_chmod_000_class_folder_is_refused(tmp_path):
    data = _folder(tmp_path / "data")
    (data / "a").chmod(0)
    try:
        with pytest.raises(ConvlensError, match="cannot be read"):
            load_dataset(data)
    finally:
        (data / "a").chmod(0o755)


def test_an_unreadable_hidden_folder_is_still_skipped(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data")
    (data / "a" / ".cache").mkdir()
    _unlistable(monkeypatch, data / "a" / ".cache")
    assert load_dataset(data).class_names == ["a", "b", "c"]


def test_an_empty_test_folder_is_refused_before_training(tmp_path):
    data = _folder(tmp_path / "data", split="train")
    (data / "test").mkdir()
    with pytest.raises(ConvlensError, match=r"data/test: no readable image"):
        load_dataset(data)
    (data / "test" / "a").mkdir()  # class folders, but no image in any
    with pytest.raises(ConvlensError, match=r"data/test: no readable image"):
        load_dataset(data)


def _npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = {"x": rng.integers(0, 255, (12, 6, 6), dtype=np.uint8), "y": np.arange(12) % 3}
    np.savez(path, **{**base, **arrays})
    return path


def test_npz_class_names_must_be_a_list(tmp_path):
    path = _npz(tmp_path / "set.npz", class_names=np.array("abc"))
    with pytest.raises(ConvlensError, match=r"set\.npz:class_names: expected a 1-D array"):
        load_dataset(path)


def test_npz_test_label_without_training_images_is_refused(tmp_path):
    x_test = np.zeros((4, 6, 6), np.uint8)
    path = _npz(tmp_path / "set.npz", x_test=x_test, y_test=np.array([0, 1, 2, 5]))
    with pytest.raises(ConvlensError, match=r"test label 5 has no training image"):
        load_dataset(path)
