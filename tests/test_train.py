"""Training: accuracy on real digits, reproducibility, resume, outputs and bad settings."""

from __future__ import annotations

import json

import pytest
import torch

from convlens.checkpoint import load_checkpoint
from convlens.errors import ConvlensError
from convlens.train import TrainConfig, fit
from testing_helpers import StopAfter


def test_digits_reaches_90_percent(digits_run):
    _, meta = load_checkpoint(digits_run)
    assert meta["metrics"]["test_accuracy"] >= 0.90
    lines = (digits_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8
    row = json.loads(lines[-1])
    assert {
        "epoch",
        "train_loss",
        "train_accuracy",
        "test_accuracy",
        "train_seconds",
        "images_per_second",
    } <= set(row)
    for name in ("model", "best", "last"):
        assert (digits_run / f"{name}.json").is_file() and (digits_run / f"{name}.safetensors").is_file()


def test_summary_has_per_class_metrics_and_confusion(digits_run, digits):
    _, meta = load_checkpoint(digits_run)
    confusion = meta["metrics"]["confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == len(digits.test_labels)
    correct = sum(confusion[i][i] for i in range(10))
    assert correct / len(digits.test_labels) == pytest.approx(meta["metrics"]["test_accuracy"])
    assert [row["support"] for row in meta["metrics"]["per_class"]] == [sum(r) for r in confusion]


def test_same_seed_same_metrics(digits, tmp_path):
    config = {"model": "tinyvgg", "epochs": 2, "seed": 3}
    first = fit(digits, TrainConfig(**config), tmp_path / "a")
    second = fit(digits, TrainConfig(**config), tmp_path / "b")
    strip = [{k: v for k, v in row.items() if "second" not in k} for row in first.history]
    assert strip == [{k: v for k, v in row.items() if "second" not in k} for row in second.history]


def test_resume_after_interruption_equals_uninterrupted_run(digits, tmp_path):
    config = dict(model="convnet", epochs=4, seed=1, model_options={"batchnorm": True})
    whole = fit(digits, TrainConfig(**config), tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(digits, TrainConfig(**config), tmp_path / "cut", observer=StopAfter(2))
    assert not (tmp_path / "cut" / "model.json").exists()
    resumed = fit(digits, TrainConfig(), tmp_path / "cut", resume=True)
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in whole.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    model_a, _ = load_checkpoint(tmp_path / "whole")
    model_b, _ = load_checkpoint(tmp_path / "cut")
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_existing_run_is_not_overwritten_by_accident(digits_run, digits):
    with pytest.raises(ConvlensError, match="already holds a run"):
        fit(digits, TrainConfig(epochs=1), digits_run)


def test_resume_refuses_other_data_or_schedule(digits, digits_run):
    with pytest.raises(ConvlensError, match="8-epoch schedule"):
        fit(digits, TrainConfig(epochs=3), digits_run, resume=True)
    digits_other = type(digits)(**{**digits.__dict__, "train_labels": digits.train_labels.flip(0)})
    with pytest.raises(ConvlensError, match="different data"):
        fit(digits_other, TrainConfig(), digits_run, resume=True)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"lr": -0.1}, "lr must be a positive number"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_settings(digits, tmp_path, config, message):
    with pytest.raises(ConvlensError, match=message):
        fit(digits, TrainConfig(**config), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_default_recipe_depends_on_data_size(digits):
    from convlens.train import resolve_defaults

    assert resolve_defaults(TrainConfig(), digits).epochs == 20  # 23 steps an epoch already
    assert resolve_defaults(TrainConfig(), digits).model_options == {}  # grayscale: no BatchNorm
    tiny = type(digits)(
        **{
            **digits.__dict__,
            "train_images": digits.train_images[:48],
            "train_labels": digits.train_labels[:48],
        }
    )
    config = resolve_defaults(TrainConfig(), tiny)
    assert config.batch_size == 32  # tiny folders: two steps an epoch instead of one
    assert config.epochs == 100  # 2 steps an epoch: capped, not 230 epochs
    assert config.early_stopping == 0  # no validation split worth stopping on
    with_validation = resolve_defaults(TrainConfig(), tiny, validation_images=100)
    assert with_validation.early_stopping == 20  # a fifth of the schedule
    assert config.augment == "affine"  # digits keep the augmentation of their kind
    explicit = resolve_defaults(TrainConfig(epochs=3, augment="none"), tiny)
    assert (explicit.epochs, explicit.augment) == (3, "none")  # what the user says wins


def test_resuming_a_finished_run_reports_its_final_accuracy(digits, tmp_path):
    done = fit(digits, TrainConfig(epochs=2), tmp_path / "run")
    again = fit(digits, TrainConfig(), tmp_path / "run", resume=True)
    assert again.test_accuracy == done.test_accuracy == done.history[-1]["test_accuracy"]
    assert again.history == done.history


def test_small_colour_folders_get_batchnorm_and_mirroring(digits):
    from convlens.train import resolve_defaults

    colour = type(digits)(
        **{
            **digits.__dict__,
            "train_images": digits.train_images[:300].expand(-1, 3, -1, -1),
            "train_labels": digits.train_labels[:300],
            "test_images": digits.test_images.expand(-1, 3, -1, -1),
            "augmentation": "shift",  # what a user's folder gets
            "mean": (),
        }
    )
    config = resolve_defaults(TrainConfig(), colour)
    assert config.model_options == {"batchnorm": True} and config.augment == "flip-shift"
    assert resolve_defaults(TrainConfig(model_options={"width": 8}), colour).model_options == {"width": 8}


def test_a_schedule_of_exactly_four_steps_trains(digits, tmp_path):
    """OneCycleLR divides by pct_start x steps - 1: 4 steps at pct_start 0.25 used to raise
    ZeroDivisionError (one batch per epoch, 4 epochs)."""
    from convlens.train.recipe import warmup_fraction

    assert warmup_fraction(0.25, 4) == 0.125 and warmup_fraction(0.25, 5) == 0.25
    result = fit(digits, TrainConfig(epochs=4, batch_size=2000, seed=0), tmp_path / "run")
    assert result.epochs == 4 and 0.0 <= result.test_accuracy <= 1.0
