"""Extension points on the one Registry: a model, a built-in data set and a data format registered
at run time reach the CLI's listings, its choices and the catalog with no other edit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from convlens.data import DATASETS
from convlens.errors import ConvlensError

TOY_SUFFIX = ".toyimg"


def read_toyimg(path: Path, image_size=None):
    """Toy images: one line per 4x4 image, "CLASS: 16 digits 0-9", the last quarter for testing."""
    from convlens.data import Dataset, resize_images

    rows = [line.split(":") for line in path.read_text().splitlines() if line.strip()]
    class_names = sorted({name.strip() for name, _ in rows})
    pixels = torch.tensor([[int(d) * 28 for d in digits.strip()] for _, digits in rows], dtype=torch.uint8)
    images = pixels.view(-1, 1, 4, 4)  # (N, 1, 4, 4)
    if image_size is not None:
        images = resize_images(images, image_size)
    labels = torch.tensor([class_names.index(name.strip()) for name, _ in rows])
    cut = len(rows) * 3 // 4
    return Dataset(
        name=path.stem,
        train_images=images[:cut],
        train_labels=labels[:cut],
        test_images=images[cut:],
        test_labels=labels[cut:],
        class_names=class_names,
        source=f"toy images in {path}",
    )


def write_toyimg(path: Path, count: int = 48) -> Path:
    """Bright-left images are class "left", bright-right ones "right"."""
    left, right = "9900" * 4, "0099" * 4
    path.write_text(
        "".join(f"{'left' if i % 2 else 'right'}: {left if i % 2 else right}\n" for i in range(count))
    )
    return path


@pytest.fixture
def toy_format():
    from convlens.data import DATA_FORMATS, register_format

    register_format("toyimg", read_toyimg, lambda p: p.suffix == TOY_SUFFIX, "a .toyimg file")
    try:
        yield
    finally:
        DATA_FORMATS.unregister("toyimg")


def test_every_built_in_format_claims_its_own_kind_of_path(tmp_path):
    from convlens.data.formats import DATA_FORMATS, format_for

    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"")
    (tmp_path / "x.npz").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    for sub in ("images", "masks"):
        (tmp_path / "segmentation" / sub).mkdir(parents=True)
    np.savez(tmp_path / "masks.npz", images=np.zeros((1, 2, 2)), masks=np.zeros((1, 2, 2), dtype=np.uint8))
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "train-000000.tar").write_bytes(b"")
    expected = {
        "idx-folder": tmp_path / "idx",
        "npz": tmp_path / "x.npz",
        "image-folder": tmp_path / "folder",
        "mask-folder": tmp_path / "segmentation",
        "mask-npz": tmp_path / "masks.npz",
        "tar-shards": tmp_path / "shards",
    }
    assert set(expected) == set(DATA_FORMATS.names())
    for name, path in expected.items():
        assert format_for(path).name == name


def test_a_path_no_format_opens_lists_every_format(tmp_path, toy_format):
    from convlens.data import load_dataset

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(
        ConvlensError,
        match="expected an image folder, a folder of images/ and masks/, a folder of IDX files, "
        "an .npz file of images and masks, an .npz file, a folder of tar shards or a .toyimg",
    ):
        load_dataset(text)


def test_toy_format_trains_and_evaluates_from_the_cli(toy_format, run_cli, tmp_path):
    data = write_toyimg(tmp_path / "lr.toyimg")
    code, out, err = run_cli("datasets")
    assert code == 0, err
    assert "toyimg" in out and "Toy images" in out
    code, out, err = run_cli("methods", "--json")
    assert code == 0, err
    toy = next(e for e in json.loads(out)["data_formats"] if e["name"] == "toyimg")
    assert toy["help"].startswith("Toy images: one line per 4x4 image")

    run = tmp_path / "run"
    code, out, err = run_cli(
        "train", "--data", data, "--model", "mlp", "--epochs", "2", "--out", run, "--no-snapshots", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["epochs"] == 2
    code, out, err = run_cli("eval", run, "--data", data, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 12 and summary["data"] == str(data)


def test_toy_format_reaches_the_report_and_the_explorer(toy_format, tmp_path):
    """A run trained on the toy format: the report and the explorer read its data through the
    format (the confusion matrix, the test images), and the page's registry lists it."""
    from fastapi.testclient import TestClient

    from convlens.data import load_dataset
    from convlens.report import report_sections
    from convlens.server import create_app
    from convlens.train import TrainConfig, fit

    data = write_toyimg(tmp_path / "lr.toyimg")
    dataset = load_dataset(data)
    fit(dataset, TrainConfig(model="mlp", epochs=2, snapshots=False, seed=0), tmp_path / "run")
    _, sections = report_sections(tmp_path / "run")
    confusion = next(section for section in sections if section.id == "confusion")
    assert f"On the test split of {data} (12 images)" in confusion.text

    client = TestClient(create_app([tmp_path / "run"], allowed_hosts=["testserver"]))
    formats = client.get("/api/registry").json()["data_formats"]
    assert "toyimg" in [entry["name"] for entry in formats]
    (run_id,) = [run["id"] for run in client.get("/api/runs").json()]
    images = client.get(f"/api/runs/{run_id}/test-images", params={"count": 12}).json()
    assert images["total"] == 12
    assert [item["label"] for item in images["images"]] == dataset.test_labels.tolist()


def test_a_registered_model_is_listed_and_built(run_cli):
    from torch import nn

    from convlens.models import MODELS, Normalize, StagedModel, create_model, list_models, register_model

    @register_model("toy-linear", limits={"scale": (0.5, 2.0)})
    def toy_linear(in_shape, num_classes, mean, std, scale: float = 1.0) -> StagedModel:
        """Toy: one linear layer on the pixels."""
        flat = in_shape[0] * in_shape[1] * in_shape[2]
        stages = [
            ("normalize", Normalize(mean, std)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(flat, num_classes)),
        ]
        return StagedModel(stages, in_shape, num_classes)

    try:
        assert "toy-linear" in list_models()
        assert create_model("toy-linear", (1, 4, 4), 2, scale=2.0).arguments["options"] == {"scale": 2.0}
        with pytest.raises(ConvlensError, match="scale must be a float from 0.5 to 2"):
            create_model("toy-linear", (1, 4, 4), 2, scale=3.0)
        code, out, err = run_cli("models", "--input", "1x4x4", "--classes", "2", "--json")
        assert code == 0, err
        row = next(r for r in json.loads(out) if r["name"] == "toy-linear")
        assert (
            row["parameters"] == 16 * 2 + 2 and row["description"] == "Toy: one linear layer on the pixels."
        )
        code, out, err = run_cli("methods", "--json")
        listed = next(e for e in json.loads(out)["models"] if e["name"] == "toy-linear")
        assert listed["parameters"] == [{"name": "scale", "default": 1.0, "kind": "float", "required": False}]
    finally:
        MODELS.unregister("toy-linear")
    assert "toy-linear" not in list_models()


def test_a_registered_built_in_loads_by_name(run_cli, monkeypatch, tmp_path):
    import numpy as np

    from convlens.data import BuiltinInfo, load_dataset, register_dataset

    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path / "cache"))
    images = np.zeros((8, 1, 4, 4), np.uint8)
    images[1::2] = 255
    labels = np.arange(8) % 2

    def arrays():
        return images[:6], labels[:6], images[6:], labels[6:]

    register_dataset(
        BuiltinInfo(
            "toy-dark-light", "Toy: dark or light", (1, 4, 4), ("dark", "light"), 6, 2, "a test", arrays
        )
    )
    try:
        dataset = load_dataset("toy-dark-light")
        assert dataset.class_names == ["dark", "light"] and dataset.spec == "toy-dark-light"
        code, out, err = run_cli("datasets", "--json")
        assert code == 0, err
        assert {"name": "toy-dark-light", "classes": 2, "available": True}.items() <= next(
            row for row in json.loads(out) if row["name"] == "toy-dark-light"
        ).items()
        with pytest.raises(ConvlensError, match="built-ins are digits, .*toy-dark-light, or give a path"):
            load_dataset("mnist6k")
    finally:
        DATASETS.unregister("toy-dark-light")


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_built_in_is_listed_with_its_facts(name):
    from convlens.data import list_datasets

    row = next(row for row in list_datasets() if row["name"] == name)
    info = DATASETS.get(name).extras["info"]
    assert row["input_shape"] == list(info.input_shape) and row["classes"] == len(info.class_names) >= 2
    assert DATASETS.get(name).help == info.description
