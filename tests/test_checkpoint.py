"""Checkpoints: exact round trip, atomic files, and a clear error for every kind of damage."""

from __future__ import annotations

import json

import pytest
import torch

from convlens.checkpoint import load_checkpoint, save_checkpoint
from convlens.errors import ConvlensError
from convlens.models import create_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("convnet", (1, 8, 8), 3, mean=[0.3], std=[0.4], batchnorm=True)
    model.eval()
    path = save_checkpoint(tmp_path / "model", model, {"class_names": ["a", "b", "c"]})
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, meta = load_checkpoint(path.parent)
    images = torch.rand(5, 1, 8, 8)
    assert torch.equal(model(images), loaded(images))
    assert meta["class_names"] == ["a", "b", "c"]
    assert meta["model"]["options"] == {"batchnorm": True}
    assert {"torch", "convlens", "python"} <= set(meta["versions"])
    assert not list(path.parent.glob("*.tmp"))  # temp files were renamed away


def test_loads_from_safetensors_path_too(saved):
    _, path = saved
    load_checkpoint(path.with_suffix(".safetensors"))


def test_tampered_tensor_file(saved):
    _, path = saved
    weights = path.with_suffix(".safetensors")
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ConvlensError, match="SHA-256 differs"):
        load_checkpoint(path)


def test_json_and_tensors_disagree(saved, tmp_path):
    _, path = saved
    meta = json.loads(path.read_text())
    meta["model"]["options"] = {"width": 8, "batchnorm": True}  # tensors were saved for width 16
    path.write_text(json.dumps(meta))
    with pytest.raises(ConvlensError, match="expects"):
        load_checkpoint(path)
    meta["model"]["options"] = {}  # no BatchNorm: the bn tensors are left over
    path.write_text(json.dumps(meta))
    with pytest.raises(ConvlensError, match="tensors do not fit"):
        load_checkpoint(path)


def test_unknown_model_name(saved):
    _, path = saved
    meta = json.loads(path.read_text())
    meta["model"]["name"] = "vgg16"
    path.write_text(json.dumps(meta))
    with pytest.raises(ConvlensError, match="unknown model 'vgg16'; choose one of"):
        load_checkpoint(path)


def test_missing_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(ConvlensError, match="no checkpoint here"):
        load_checkpoint(tmp_path / "elsewhere")
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(ConvlensError, match="missing tensor file"):
        load_checkpoint(path)


def test_not_json(saved):
    _, path = saved
    path.write_text("{not json")
    with pytest.raises(ConvlensError, match="not valid JSON"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl"])
def test_pickles_are_refused_without_being_read(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"this would be unpickled by torch.load")
    with pytest.raises(ConvlensError, match="refusing a pickle file: unpickling can run arbitrary code"):
        load_checkpoint(path)


def test_checkpoint_data_reloads_the_training_data_at_its_trained_size(tmp_path):
    """A run trained with --image-size gets its own data resized again (eval, attack, report,
    the explorer all use this); other data must already fit the model."""
    from convlens.checkpoint import checkpoint_data
    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    fit(load_dataset("digits", image_size=16), TrainConfig(epochs=1), tmp_path / "run")
    _, meta = load_checkpoint(tmp_path / "run")
    dataset, spec = checkpoint_data(meta)
    assert spec == "digits" and dataset.input_shape == (1, 16, 16)
    with pytest.raises(ConvlensError, match="--data faces: images are 1x25x25, the model takes 1x16x16"):
        checkpoint_data(meta, "faces")
    meta["dataset"] = {}
    with pytest.raises(ConvlensError, match="does not say which data set"):
        checkpoint_data(meta)


def test_attack_runs_on_a_model_trained_at_another_size(run_cli, tmp_path):
    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    fit(load_dataset("digits", image_size=16), TrainConfig(epochs=1), tmp_path / "run")
    code, out, err = run_cli("attack", tmp_path / "run", "--eps", "0.05", "--json", "--out", tmp_path / "a")
    assert code == 0, err
    assert json.loads(out)["eps"] == 0.05
