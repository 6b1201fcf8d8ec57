"""Checkpoints: exact round trip, atomic files, and a clear error for every kind of damage."""

from __future__ import annotations

import json
import os
import stat

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


def test_run_data_reloads_the_training_data_at_its_trained_size(tmp_path):
    """A run trained with --image-size gets its own data resized again (eval, attack, report,
    the explorer all use this); other data must already fit the model."""
    import dataclasses

    from convlens.data import load_dataset
    from convlens.run import Run
    from convlens.train import TrainConfig, fit

    fit(load_dataset("digits", image_size=16), TrainConfig(epochs=1), tmp_path / "run")
    run = Run.open(tmp_path / "run")
    dataset, spec = run.data()
    assert spec == "digits" and dataset.input_shape == (1, 16, 16)
    with pytest.raises(
        ConvlensError, match="data faces: images are 1x25x25, the model takes 1x16x16"
    ) as caught:
        run.data("faces")
    assert caught.value.parameter == "data"
    with pytest.raises(ConvlensError, match="does not say which data set"):
        dataclasses.replace(run, dataset={}).data()


def test_attack_runs_on_a_model_trained_at_another_size(run_cli, tmp_path):
    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    fit(load_dataset("digits", image_size=16), TrainConfig(epochs=1), tmp_path / "run")
    code, out, err = run_cli("attack", tmp_path / "run", "--eps", "0.05", "--json", "--out", tmp_path / "a")
    assert code == 0, err
    assert json.loads(out)["eps"] == 0.05


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_honours_the_umask(tmp_path, umask, mode):
    from convlens.checkpoint import atomic_write

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "sub" / "file.json", b"{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "sub" / "file.json").stat().st_mode) == mode
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["file.json"]  # no temp file left


def test_files_written_by_train_report_and_lab_are_0644_under_umask_022(run_cli, tmp_path):
    previous = os.umask(0o022)
    try:
        code, _, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", tmp_path / "run")
        assert code == 0, err
        code, _, err = run_cli("report", tmp_path / "run", "--json")
        assert code == 0, err
        code, _, err = run_cli("lab", "params", "--data", "digits", "--json", "--out", tmp_path / "lab")
        assert code == 0, err
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"run/model.json", "run/model.safetensors", "run/metrics.jsonl", "run/report.html"} <= names
    assert {"lab/result.json", "lab/plot.png"} <= names
    modes = {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == dict.fromkeys(names, oct(0o644))
