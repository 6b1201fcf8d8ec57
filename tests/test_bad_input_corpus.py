"""A corpus of bad inputs run through the CLI: each one exit 2, exactly one `convlens: error:`
line, no traceback, no raw control character, nothing written to --out.

Tampered checkpoints, damaged NPZ and IDX files, a gzip bomb (made small for the test by
lowering the limit), a class folder linked outside the data folder, file names with a newline
and an ESC code, and bad flags.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.checkpoint import save_checkpoint
from convlens.models import create_model

EVIL = "evil\n\x1b[31mred"  # a newline and an ESC code in a file name


def _checkpoint(tmp: Path) -> Path:
    """A small untrained convnet for 1x8x8 input and 3 classes; returns its model.json."""
    torch.manual_seed(0)
    model = create_model("convnet", (1, 8, 8), 3)
    return save_checkpoint(tmp / "run" / "model", model, {"class_names": ["a", "b", "c"]})


def _tampered(change):
    def build(tmp: Path, monkeypatch) -> list:
        path = _checkpoint(tmp)
        meta = json.loads(path.read_text())
        text = change(meta)
        path.write_text(text if isinstance(text, str) else json.dumps(meta))
        return ["attack", path.parent, "--eps", "0.1", "--json"]

    return build


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _both_shapes(shape):
    def change(meta):
        meta["model"]["in_shape"] = meta["input_shape"] = shape
        meta["model"]["mean"] = meta["model"]["std"] = [0.5] * shape[0]

    return change


def _train(data) -> list:
    return ["train", "--data", data, "--epochs", "1"]


def _npz(write):
    def build(tmp: Path, monkeypatch) -> list:
        path = tmp / "data.npz"
        write(path)
        return _train(path)

    return build


def _npz_member_header(path: Path) -> None:
    """An .npz whose 'x' header claims 10**6 x 10**6 bytes, with none of them present."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue())  # magic + header, no data
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(4, np.int64))
        archive.writestr("y.npy", buffer.getvalue())


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def _idx_folder(images: bytes, gz: bool = False):
    def build(tmp: Path, monkeypatch) -> list:
        folder = tmp / "idx"
        folder.mkdir()
        labels = b"\x00\x00\x08\x01" + struct.pack(">I", 4) + bytes([0, 1, 0, 1])
        name = "train-images-idx3-ubyte" + (".gz" if gz else "")
        (folder / name).write_bytes(gzip.compress(images) if gz else images)
        (folder / "train-labels-idx1-ubyte").write_bytes(labels)
        return _train(folder)

    return build


def _idx_header(*dims: int) -> bytes:
    return b"\x00\x00\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _gzip_bomb(claimed: int):
    """IDX images whose gzip holds 4 MB of zeros: refused once past the (lowered) limit."""

    def build(tmp: Path, monkeypatch) -> list:
        monkeypatch.setattr("convlens.data.arrays.MAX_ARRAY_BYTES", 100_000)
        return _idx_folder(_idx_header(claimed, 1000, 1) + bytes(4_000_000), gz=True)(tmp, monkeypatch)

    return build


def _png(path: Path, value: int) -> None:
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def _linked_class(tmp: Path, monkeypatch) -> list:
    outside = tmp / "outside"
    outside.mkdir()
    for i in range(3):
        _png(outside / f"{i}.png", 200)
    data = tmp / "data"
    (data / "cats").mkdir(parents=True)
    for i in range(3):
        _png(data / "cats" / f"{i}.png", 10)
    (data / "dogs").symlink_to(outside, target_is_directory=True)
    return _train(data)


def _evil_image_name(tmp: Path, monkeypatch) -> list:
    """A class whose one file (named with a newline and ESC) cannot be decoded: a warning, then the error."""
    data = tmp / "data"
    (data / "cats").mkdir(parents=True)
    (data / "dogs").mkdir()
    for i in range(3):
        _png(data / "cats" / f"{i}.png", 10)
    (data / "dogs" / f"{EVIL}.png").write_bytes(b"not a png")
    return _train(data)


def _evil_predict(tmp: Path, monkeypatch) -> list:
    path = _checkpoint(tmp)
    image = tmp / f"{EVIL}.png"
    image.write_bytes(b"not a png")
    return ["predict", path.parent, image]


def _evil_missing_folder(tmp: Path, monkeypatch) -> list:
    return _train(tmp / EVIL)


def _flags(*args):
    def build(tmp: Path, monkeypatch) -> list:
        if "RUN" in args:
            run = _checkpoint(tmp).parent
            return [run if a == "RUN" else a for a in args]
        return list(args)

    return build


CORPUS = {
    # tampered model.json
    "class_names-int": (_tampered(_set("class_names", 5)), "class_names must be a list of 3 strings"),
    "class_names-count": (_tampered(_set("class_names", ["a"])), "class_names holds 1 name(s)"),
    "class_name-not-str": (_tampered(_set("class_names", ["a", 2, "c"])), "class_names[1] must be a string"),
    "weights-string": (_tampered(_set("weights", "model.safetensors")), "weights must be an object"),
    "weights-file-parent": (
        _tampered(_set("weights", "file", "../x")),
        "weights.file must be a plain file name",
    ),
    "weights-file-absolute": (
        _tampered(_set("weights", "file", "/etc/model.safetensors")),
        "weights.file must be a plain file name",
    ),
    "weights-sha-not-hex": (
        _tampered(_set("weights", "sha256", "xyz")),
        "weights.sha256 must be 64 lowercase hex",
    ),
    "input_shape-missing": (
        _tampered(lambda meta: meta.pop("input_shape") and None),
        "checkpoint JSON is missing 'input_shape'",
    ),
    "width-negative": (
        _tampered(_set("model", "options", {"width": -4})),
        "model.options: width must be an int from 1 to 1024, got -4",
    ),
    "classes-1e9": (
        _tampered(_set("model", "num_classes", 10**9)),
        "model.num_classes must be an integer from 2 to 10,000, got int 1,000,000,000",
    ),
    "mean-nan": (
        _tampered(lambda meta: json.dumps(meta).replace('"mean": [0.5]', '"mean": [NaN]')),
        "model.mean must be null or a list of 1 finite number(s), got number nan",
    ),
    "std-zero": (
        _tampered(_set("model", "std", [0])),
        "model.std must be null or a list of 1 finite positive",
    ),
    "format": (_tampered(_set("format", "other/9")), "not a convlens checkpoint"),
    "not-an-object": (_tampered(lambda meta: "[1, 2]"), "not a convlens checkpoint"),
    "huge-integer": (
        _tampered(lambda meta: json.dumps(meta).replace('"num_classes": 3', '"num_classes": ' + "9" * 5000)),
        "not valid JSON",
    ),
    "deep-nesting": (_tampered(lambda meta: "[" * 100_000 + "]" * 100_000), "nested more than 32 levels"),
    "huge-input": (
        _tampered(_both_shapes([3, 4000, 4000])),
        "model.in_shape, model.num_classes or model.options differ from the saved tensors",
    ),
    "input-over-limit": (
        _tampered(_both_shapes([3, 5000, 5000])),
        "model.in_shape must be [C, H, W] with C = 1 or 3 and sides from 1 to 4096, got [3, 5000, 5000]",
    ),
    "input-shapes-differ": (_tampered(_set("input_shape", [1, 9, 9])), "input_shape [1, 9, 9] differs"),
    "unknown-model": (_tampered(_set("model", "name", "vgg16")), "model.name: unknown model 'vgg16'"),
    # bad NPZ files
    "npz-object-array": (
        _npz(lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, np.int64))),
        "object arrays, which need pickle to load",
    ),
    "npz-not-zip": (_npz(lambda p: p.write_text("x,y\n1,2\n")), "not a valid .npz file (not a zip archive)"),
    "npz-is-npy": (_npz(lambda p: p.write_bytes(_npy_bytes())), "a single .npy array"),
    "npz-huge-header": (_npz(_npz_member_header), "over the limit of 2,147,483,648 bytes for one array"),
    # bad IDX files
    "idx-huge-dims": (
        _idx_folder(_idx_header(2**31, 2**31, 2**31)),
        "over the limit of 2,147,483,648 bytes for one array",
    ),
    "idx-truncated": (_idx_folder(_idx_header(4, 28, 28) + bytes(100)), "truncated or padded IDX file"),
    "idx-bad-magic": (_idx_folder(b"\x01\x02\x03\x04"), "not an IDX file"),
    "gzip-bomb-header": (_gzip_bomb(4000), "over the limit of 100,000 bytes"),
    "gzip-bomb-lying-header": (_gzip_bomb(4), "found more than 4,000"),
    # image folders and file names
    "linked-class-folder": (_linked_class, "outside the data folder"),
    "evil-name-folder": (_evil_image_name, "class 'dogs' has no readable image"),
    "evil-name-predict": (_evil_predict, r"evil\n\x1b[31mred.png: cannot decode image"),
    "evil-name-missing": (_evil_missing_folder, r"evil\n\x1b[31mred"),
    # bad flags
    "flag-epochs-0": (_flags("train", "--data", "digits", "--epochs", "0"), "--epochs"),
    "flag-width": (_flags("train", "--data", "digits", "--model-option", "width=-4"), "--model-option"),
    "flag-eps": (_flags("attack", "RUN", "--eps", "2"), "--eps"),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_gives_one_error_line(case, tmp_path, monkeypatch, run_cli):
    build, expected = CORPUS[case]
    args = build(tmp_path, monkeypatch)
    out = tmp_path / "out"
    started = time.perf_counter()
    if args[0] != "predict":  # predict writes nothing and has no --out
        args = [*args, "--out", out]
    code, stdout, stderr = run_cli(*args)
    seconds = time.perf_counter() - started
    assert code == 2, (stdout, stderr)
    assert stderr.count("convlens: error:") == 1, stderr
    assert "Traceback" not in stderr + stdout
    assert "\x1b" not in stderr, stderr  # control characters escaped, never sent to the terminal
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("convlens: ") for line in lines), stderr  # nothing spilled onto a new line
    assert expected in stderr, stderr
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    assert seconds < 20, f"{case} took {seconds:.1f} s"


def test_error_names_the_file(tmp_path, monkeypatch, run_cli):
    args = _tampered(_set("class_names", 5))(tmp_path, monkeypatch)
    _, _, stderr = run_cli(*args)
    assert f"{tmp_path / 'run' / 'model.json'}: class_names must be" in stderr


def test_untampered_checkpoint_loads(tmp_path):
    from convlens.run import Run

    run = Run.open(_checkpoint(tmp_path).parent)
    assert run.class_names == ["a", "b", "c"] and run.input_shape == (1, 8, 8)
