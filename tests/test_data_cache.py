"""The decoded-image cache of large folders (``data.cache``) and reading it a batch at a time.

Every folder here is small; ``cache=True`` sends it through the cache that ``auto`` keeps for
folders of ``MIN_FILES`` images or more. Each test gets its own cache folder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import convlens.data.cache as cache
import convlens.data.cache_build as cache_build
import convlens.data.decode_workers as decode_workers
import convlens.data.readers as readers
import convlens.data.rows as rows
from convlens.data import load_dataset
from convlens.data.cache import read_image_folder, use_cache
from convlens.data.readers import list_image_folder
from convlens.data.rows import Rows, is_mapped, open_mapped, take
from convlens.errors import ConvlensError
from convlens.train import TrainConfig, fit, validation_split

SPLITS = ("train_images", "train_labels", "test_images", "test_labels")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVLENS_FOLDER_CACHE", raising=False)
    return tmp_path / "cache"


def _folder(root, per_class=12, gray=False, broken=True):
    """3 classes of small photo crops (JPEG and PNG, two sizes) and one file that is no image."""
    import skimage.data

    rng = np.random.default_rng(0)
    for name in ("astronaut", "chelsea", "coffee"):
        photo = getattr(skimage.data, name)()
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            top, left = rng.integers(0, 200, 2)
            side = 20 if index % 3 else 24
            crop = photo[top : top + side, left : left + side]
            image = Image.fromarray(crop).convert("L") if gray else Image.fromarray(crop)
            image.save(root / name / f"{index:02d}.{'png' if index % 2 else 'jpg'}")
    if broken:
        (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    return root


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, key), getattr(b, key)) for key in SPLITS)


def _entry(own_cache):
    (entry,) = [p for p in (own_cache / "folders").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return entry


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decode_workers, "decode_image", refuse)
    monkeypatch.setattr(readers, "decode_image", refuse)
    monkeypatch.setattr(cache_build, "decode_all", refuse)


@pytest.mark.parametrize("gray", [False, True])
def test_cache_is_written_once_then_read_without_decoding(tmp_path, own_cache, monkeypatch, caplog, gray):
    folder = _folder(tmp_path / "photos", gray=gray)
    memory = read_image_folder(folder, cache=False)
    with caplog.at_level(logging.INFO, logger="convlens"):
        built = read_image_folder(folder, cache=True)
    assert "decoding 37 images into the cache" in caplog.text and "skipped 1 file" in caplog.text
    _no_decoding(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="convlens"):
        again = read_image_folder(folder, cache=True)
    assert "skipped 1 file" in caplog.text and "decoding" not in caplog.text  # warned again, not decoded
    assert "different sizes" in caplog.text
    for dataset in (built, again):
        assert _same(memory, dataset) and is_mapped(dataset.train_images)
        assert (dataset.mean, dataset.std, dataset.source) == (memory.mean, memory.std, memory.source)
        assert dataset.fingerprint() == memory.fingerprint()
        assert dataset.input_shape == memory.input_shape == ((1 if gray else 3), 20, 20)
    again.train_images = again.train_images.clone()  # a changed bundle is hashed again, not trusted
    assert again.fingerprint() == memory.fingerprint()


@pytest.mark.parametrize(
    ("change", "reason", "decoded"),
    [
        ("touch", "1 modified", 1),
        ("add", "1 added", 1),
        ("remove", "1 removed", 0),
        ("gray", "1 modified", 1),
    ],
)
def test_a_changed_folder_decodes_only_what_changed(
    tmp_path, own_cache, caplog, monkeypatch, change, reason, decoded
):
    monkeypatch.setenv("CONVLENS_DECODE_WORKERS", "1")  # decoding in this process, where it is counted
    folder = _folder(tmp_path / "photos", gray=change == "gray", broken=True)
    first = read_image_folder(folder, image_size=(16, 16), cache=True)
    target = folder / "chelsea" / "03.png"
    if change in ("touch", "gray"):  # "gray": a gray folder gains one colour image (1 → 3 channels)
        pixels = np.asarray(Image.open(target).convert("RGB")).copy()
        pixels[0, 0] = (255, 0, 0)
        Image.fromarray(pixels).save(target)
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    elif change == "add":
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "chelsea" / "new.png")
    else:
        target.unlink()
    opened = []
    original = decode_workers.decode_image
    monkeypatch.setattr(
        decode_workers, "decode_image", lambda path, *a: opened.append(path) or original(path, *a)
    )
    with caplog.at_level(logging.WARNING, logger="convlens"):
        second = read_image_folder(folder, image_size=(16, 16), cache=True)
    assert f"changed since it was cached ({reason}); decoding only what changed" in caplog.text
    assert f"decoding {decoded} new or changed image(s), keeping" in caplog.text
    assert len(opened) == decoded and all(path.name in ("03.png", "new.png") for path in opened)
    assert "skipped 1 file" in caplog.text  # the broken file, skipped again without being read
    assert _same(second, read_image_folder(folder, image_size=(16, 16), cache=False))
    if change == "gray":
        assert (first.input_shape[0], second.input_shape[0]) == (1, 3)
    count = {"touch": 0, "gray": 0, "add": 1, "remove": -1}[change]
    assert (
        len(second.train_labels) + len(second.test_labels)
        == len(first.train_labels) + len(first.test_labels) + count
    )
    assert len([p for p in (own_cache / "folders").iterdir() if p.is_dir()]) == 1  # replaced, not added


@pytest.mark.parametrize("damage", ["truncate", "garbage-meta", "edit"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, own_cache, caplog, damage):
    folder = _folder(tmp_path / "photos")
    memory = read_image_folder(folder, cache=False)
    read_image_folder(folder, cache=True)
    entry = _entry(own_cache)
    if damage == "truncate":
        with open(entry / "train.npy", "r+b") as handle:
            handle.truncate(entry.joinpath("train.npy").stat().st_size - 100)
    elif damage == "garbage-meta":
        (entry / "meta.json").write_text('{"version": 1, "sig')
    else:  # same size, new bytes, written a moment later: its modification time gives it away
        path = entry / "test.npy"
        written = path.stat()
        data = bytearray(path.read_bytes())
        data[-10:] = b"\xff" * 10
        path.write_bytes(bytes(data))
        os.utime(path, ns=(written.st_atime_ns, written.st_mtime_ns + 10**7))
    with caplog.at_level(logging.WARNING, logger="convlens"):
        again = read_image_folder(folder, cache=True)
    assert "damaged" in caplog.text and "decoding it again" in caplog.text
    assert _same(again, memory)


def test_same_training_history_through_the_cache_and_batch_sized_reads(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "photos", per_class=20)
    histories, reads = [], []
    original = rows._read_rows

    def recording(images, mapped, index):
        reads.append(int(index.shape[0]))
        return original(images, mapped, index)

    monkeypatch.setattr(rows, "_read_rows", recording)
    for through_cache in (False, True):
        dataset = read_image_folder(folder, image_size=(16, 16), cache=through_cache)
        reads.clear()  # what training reads, not what building the cache did
        config = TrainConfig(epochs=2, seed=3, snapshots=False, batch_size=8, eval_batch_size=8)
        result = fit(dataset, config, tmp_path / f"run-{through_cache}")
        noise = ("epoch_seconds", "images_per_second", "train_seconds")
        histories.append([{k: v for k, v in row.items() if k not in noise} for row in result.history])
        histories[-1].append((result.test_accuracy, result.per_class, result.confusion))
    assert histories[0] == histories[1]
    assert json.loads((tmp_path / "run-True" / "model.json").read_text())["training"]["batch_size"] == 8
    assert len(reads) > 15 and max(reads) <= 8 < len(dataset.train_labels)  # never the whole set
    split = validation_split(dataset, 0.1)
    assert isinstance(split.train_images, Rows) and isinstance(split.val_images, Rows)  # no copy


def test_parallel_decoding_gives_the_same_arrays_as_one_worker(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "photos", per_class=10)
    monkeypatch.setattr(decode_workers, "MIN_FILES_PER_TASK", 4)  # 8 tasks for 31 files
    files = list_image_folder(folder).files
    outcomes = {}
    for workers in (1, 2):
        outcomes[workers] = decode_workers.decode_all(
            files, (16, 16), (16, 16), tmp_path / f"{workers}.npy", workers
        )
    assert outcomes[1] == outcomes[2]
    assert np.array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))
    assert sum(outcome[2] is not None for outcome in outcomes[2]) == 1  # the broken file, with its reason
    listing = list_image_folder(folder)
    parallel = cache.read_cached_folder(listing, (16, 16), workers=2)
    assert _same(parallel, read_image_folder(folder, image_size=(16, 16), cache=False))


def test_take_reads_rows_like_indexing(tmp_path):
    array = np.arange(7 * 2 * 3 * 3, dtype=np.uint8).reshape(7, 2, 3, 3)
    np.save(tmp_path / "a.npy", array)
    mapped, plain = open_mapped(tmp_path / "a.npy"), torch.from_numpy(array)
    assert is_mapped(mapped) and not is_mapped(plain)
    for index in (
        slice(1, 5),
        slice(None, None, 2),
        torch.tensor([6, 0, 1, 2, 2, -1]),
        torch.tensor([], dtype=torch.int64),
    ):
        assert torch.equal(take(mapped, index), plain[index])
    assert torch.equal(take(mapped[1::3], torch.tensor([1, 0])), plain[1::3][torch.tensor([1, 0])])
    subset = Rows(mapped, torch.tensor([5, 3, 1]))
    assert subset.shape == (3, 2, 3, 3) and torch.equal(take(subset[1:], torch.tensor([1, 0])), plain[[1, 3]])
    with pytest.raises(IndexError):
        take(mapped, torch.tensor([7]))


def test_cache_folder_setting_disk_full_and_auto(tmp_path, own_cache, monkeypatch):
    folder = _folder(tmp_path / "photos", per_class=4, broken=False)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(ConvlensError, match="no space left on the device") as caught:
        read_image_folder(folder, cache=True)
    assert "\n" not in str(caught.value) and "CONVLENS_CACHE_DIR" in str(caught.value)
    assert [p.name for p in (own_cache / "folders").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "elsewhere"))
    listing = list_image_folder(folder)
    assert not use_cache(listing)  # 12 files: decoded in memory
    monkeypatch.setattr(cache, "MIN_FILES", 12)
    assert use_cache(listing)
    monkeypatch.setenv("CONVLENS_FOLDER_CACHE", "never")
    assert not use_cache(listing) and use_cache(listing, True)
    monkeypatch.setenv("CONVLENS_FOLDER_CACHE", "always")
    dataset = load_dataset(folder)
    assert is_mapped(dataset.test_images) and (tmp_path / "elsewhere" / "folders").is_dir()
    shutil.copytree(folder, tmp_path / "gone")
    load_dataset(tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone")
    shutil.copytree(folder, tmp_path / "other")
    load_dataset(tmp_path / "other")  # a build tidies away the entry of a folder that is gone
    entries = [p for p in (tmp_path / "elsewhere" / "folders").iterdir() if p.is_dir()]
    assert sorted(p.name.split("-")[0] for p in entries) == ["other", "photos"]


def test_evaluating_a_share_keeps_no_graph(tmp_path):
    """Evaluation holds one batch: no autograd graph may link the batches of a split."""
    from convlens.models import create_model
    from convlens.train.loop import evaluate_share

    model = create_model("convnet", (1, 8, 8), 3, (0.5,), (0.25,))
    grad_on = []
    model.register_forward_hook(lambda module, inputs, output: grad_on.append(torch.is_grad_enabled()))
    images, labels = torch.randint(0, 255, (10, 1, 8, 8), dtype=torch.uint8), torch.arange(10) % 3
    result = evaluate_share(model, images, labels, batch_size=4)
    assert grad_on == [False, False, False] and not result["predictions"].requires_grad


def test_the_validation_split_is_remembered_and_checked(own_cache):
    from convlens.data.transforms import stratified_split
    from convlens.train.validation import remembered_split

    labels = np.random.default_rng(0).integers(0, 4, 400)
    expected = stratified_split(labels, 0.1, 0)
    first = remembered_split(labels, 0.1)
    (stored,) = (own_cache / "splits").iterdir()
    second = remembered_split(labels, 0.1)
    np.savez(stored, train=np.arange(350), held_out=np.arange(350, 400))  # a split, but not of this size
    for train, held in (first, second, remembered_split(labels, 0.1)):
        assert np.array_equal(train, expected[0]) and np.array_equal(held, expected[1])
    assert len(remembered_split(labels, 0.2)[1]) == 80  # another fraction: its own entry
    stored.write_bytes(b"garbage")
    assert np.array_equal(remembered_split(labels, 0.1)[1], expected[1])


TEST_DATA_MEMORY = r"""
import json, resource, sys, types
import numpy as np, torch
from convlens.data.rows import open_mapped
from convlens.run import Run

path, count = sys.argv[1], 20_000
with open(path, "wb") as handle:  # a sparse file: 20,000 test images at 3x64x64 (0.98 GB as floats)
    np.lib.format.write_array_header_1_0(
        handle, {"descr": "|u1", "fortran_order": False, "shape": (count, 3, 64, 64)}
    )
    handle.truncate(handle.tell() + count * 3 * 64 * 64)
images = open_mapped(path)
dataset = types.SimpleNamespace(test_images=images, test_labels=torch.arange(count) % 4)
run = types.SimpleNamespace(data=lambda data: (dataset, "a cached folder"))
run.test_split = lambda *args: Run.test_split(run, *args)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels, labels, spec = Run.test_data(run, limit=50, seed=3)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_kib": grown, "shape": list(pixels.shape), "dtype": str(pixels.dtype)}))
"""


def test_a_sample_of_the_test_split_reads_only_its_images(tmp_path, monkeypatch):
    import subprocess
    import sys

    from convlens.run import Run

    done = subprocess.run(
        [sys.executable, "-c", TEST_DATA_MEMORY, str(tmp_path / "test.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout)
    assert facts["shape"] == [50, 3, 64, 64] and facts["dtype"] == "torch.float32"
    assert facts["grown_kib"] < 32 * 1024  # the split as floats would be 960 MiB
    folder = _folder(tmp_path / "photos", per_class=8, broken=False)
    dataset = read_image_folder(folder, image_size=(16, 16), cache=True)
    run = type(
        "FakeRun", (), {"data": lambda self, data: (dataset, "photos"), "test_split": Run.test_split}
    )()
    reads = []
    original = rows._read_rows
    monkeypatch.setattr(
        rows,
        "_read_rows",
        lambda images, mapped, index: reads.append(len(index)) or original(images, mapped, index),
    )
    pixels, labels, _ = Run.test_data(run, limit=3, seed=1)
    plain = torch.from_numpy(np.load(_entry(cache.folders_dir().parent) / "test.npy"))
    index = torch.randperm(len(dataset.test_labels), generator=torch.Generator().manual_seed(1))[:3]
    assert reads == [3] and torch.equal(pixels, plain[index].float() / 255)  # to_float by hand
    assert torch.equal(labels, dataset.test_labels[index])
    everything, _, _ = Run.test_data(run, seed=1)
    assert everything.shape[0] == len(dataset.test_labels)
