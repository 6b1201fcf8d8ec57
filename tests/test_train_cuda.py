"""Training on a CUDA device: the guard, the epoch selection and the diagnostics work there too."""

from __future__ import annotations

import json

import pytest
import torch

from convlens.train import TrainConfig, TrainingDiverged, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_training_is_finite_and_diagnosed(digits, tmp_path):
    result = fit(digits, TrainConfig(epochs=6, device="cuda"), tmp_path / "run")
    assert result.test_accuracy > 0.9 and result.validation["validation"] == 144
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["training"]["device"] == "cuda" and isinstance(meta["diagnostics"], list)


def test_cuda_spike_rolls_back(digits, tmp_path, monkeypatch):
    import convlens.train.fitting as fitting

    real, calls = fitting.train_one_epoch, []

    def spiking(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                dict(model.stages())["fc"].weight.mul_(200.0)
        return result

    monkeypatch.setattr(fitting, "train_one_epoch", spiking)
    result = fit(digits, TrainConfig(epochs=4, device="cuda"), tmp_path / "run")
    rollbacks = [d for d in result.diagnostics if d["kind"] == "rollback"]
    assert len(rollbacks) == 1 and [row["epoch"] for row in result.history] == [1, 2, 3, 4]


def test_cuda_divergence_stops_with_one_error(digits, tmp_path):
    with pytest.raises(TrainingDiverged, match="lr: training diverged at epoch 1"):
        fit(digits, TrainConfig(epochs=2, lr=1e30, device="cuda"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cuda_recipe_scales_the_batch_of_a_large_data_set(digits, tmp_path):
    copies = 25_000 // digits.train_labels.shape[0] + 1  # above LARGE_DATASET after the validation split
    large = type(digits)(
        **{
            **digits.__dict__,
            "train_images": digits.train_images.repeat(copies, 1, 1, 1),
            "train_labels": digits.train_labels.repeat(copies),
        }
    )
    result = fit(large, TrainConfig(epochs=4, device="cuda"), tmp_path / "run")
    training = json.loads((tmp_path / "run" / "model.json").read_text())["training"]
    assert (training["batch_size"], training["lr"], training["precision"]) == (512, 0.4, "bf16")
    assert training["model_options"]["convs"] == 2 and training["weight_decay"] == 5e-4
    assert result.test_accuracy > 0.8
