"""Tar shards of an image folder (``data.shards``, ``convlens pack``): written in the WebDataset
layout, checked with ``tarfile`` itself, and read back as the same images and labels."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data import load_dataset
from convlens.data.cache import read_image_folder
from convlens.data.shards import pack_folder
from convlens.errors import ConvlensError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVLENS_FOLDER_CACHE", "always")  # the shards' images through the decoded cache


def _folder(root, per_class: int = 7):
    """3 classes of distinct 12x12 images, JPEG and PNG."""
    rng = np.random.default_rng(1)
    for name in ("cat", "dog", "owl"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.{'png' if index % 2 else 'jpeg'}")
    return root


def _rows(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, int]]:
    """Each image's bytes hashed, with its label, sorted: the set of samples, whatever their order."""
    return sorted(
        (hashlib.sha256(image.numpy().tobytes()).hexdigest(), int(label))
        for image, label in zip(images, labels, strict=True)
    )


def test_pack_writes_webdataset_shards_read_back_as_the_same_images(tmp_path, run_cli):
    folder = _folder(tmp_path / "photos")
    code, stdout, stderr = run_cli("pack", folder, tmp_path / "shards", "--shard-size", "5", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["samples"] == {"train": 17, "test": 4}  # 21 images, the folder's 20 % test split
    assert result["shards"] == {
        "train": ["train-000000.tar", "train-000001.tar", "train-000002.tar", "train-000003.tar"],
        "test": ["test-000000.tar"],
    }
    assert (tmp_path / "shards" / "classes.txt").read_text() == "cat\ndog\nowl\n"
    originals = {p.read_bytes(): ["cat", "dog", "owl"].index(p.parent.name) for p in folder.rglob("*.*")}
    packed = []
    for shard in sorted((tmp_path / "shards").glob("*.tar")):
        with tarfile.open(shard) as archive:
            names = archive.getnames()
            for image_name, label_name in zip(names[0::2], names[1::2], strict=True):
                key = image_name.split(".")[0]
                assert (
                    len(key) == 6
                    and label_name == f"{key}.cls"
                    and image_name.split(".")[1] in ("jpg", "png")
                )
                data = archive.extractfile(image_name).read()
                label = int(archive.extractfile(label_name).read())
                packed.append((data, label))
    assert len(packed) == 21 and all(originals[data] == label for data, label in packed)
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as archive:
        first = {int(archive.extractfile(n).read()) for n in archive.getnames() if n.endswith(".cls")}
    assert len(first) >= 2  # shuffled: a shard is not one class

    shards = load_dataset(tmp_path / "shards")
    direct = read_image_folder(folder, cache=False)
    assert shards.class_names == direct.class_names and shards.input_shape == direct.input_shape
    assert _rows(shards.train_images, shards.train_labels) == _rows(direct.train_images, direct.train_labels)
    assert _rows(shards.test_images, shards.test_labels) == _rows(direct.test_images, direct.test_labels)
    again = load_dataset(tmp_path / "shards")  # decoded once: the same cache entry
    assert torch.equal(again.train_images, shards.train_images)
    assert not (tmp_path / "cache" / "shards").exists()  # decoded from the members: no unpacked copy
    entries = [p.name for p in (tmp_path / "cache" / "folders").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and entries[0].startswith("shards-")


def test_a_replaced_shard_decodes_only_its_images_and_a_bad_member_is_skipped(tmp_path, caplog):
    import io
    import logging

    from convlens.data import decode_workers

    folder = _folder(tmp_path / "photos")
    pack_folder(folder, tmp_path / "shards", shard_size=5)
    first = load_dataset(tmp_path / "shards")
    shard = tmp_path / "shards" / "train-000001.tar"
    with tarfile.open(shard) as archive:  # the same samples, one image's bytes broken
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
    broken = members[0][0].name
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in members:
            data = b"not an image" if member.name == broken else data
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    decoded = []
    real = decode_workers._decode_into
    caplog.set_level(logging.WARNING, logger="convlens")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            decode_workers,
            "_decode_into",
            lambda row, path, target: decoded.append(path.split("\0")[-1]) or real(row, path, target),
        )
        second = load_dataset(tmp_path / "shards")
    assert sorted(decoded) == sorted(m.name for m, _ in members if not m.name.endswith(".cls"))
    assert "(5 modified)" in caplog.text and "keeping 16 from the cache" in caplog.text
    assert f"train-000001.tar:{broken}: cannot decode image" in caplog.text
    assert second.train_labels.shape[0] == first.train_labels.shape[0] - 1
    assert torch.equal(second.test_images, first.test_images)


def test_bad_pack_arguments_and_damaged_shards_are_one_line_errors(tmp_path, run_cli):
    folder = _folder(tmp_path / "photos", per_class=3)
    with pytest.raises(ConvlensError, match="shard_size must be a whole number") as caught:
        pack_folder(folder, tmp_path / "out", shard_size=0)
    assert caught.value.parameter == "shard_size"
    code, _, stderr = run_cli("pack", folder, tmp_path / "out", "--shard-size", "0")
    assert code == 2 and stderr.startswith("convlens: error: --shard-size must be a whole number")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    code, _, stderr = run_cli("pack", folder, tmp_path / "full")
    assert code == 2 and "exists and is not an empty folder" in stderr and stderr.count("\n") == 1
    pack_folder(folder, tmp_path / "shards", shard_size=4)
    shard = tmp_path / "shards" / "train-000000.tar"
    with tarfile.open(shard, "a") as archive:
        info = tarfile.TarInfo("000099.cls")
        info.size = 1
        archive.addfile(info, __import__("io").BytesIO(b"7"))
    with pytest.raises(ConvlensError, match=r"000099.cls holds '7'; expected a class index 0..2"):
        load_dataset(tmp_path / "shards")
