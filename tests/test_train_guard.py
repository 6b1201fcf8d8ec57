"""Training you can trust: validation split, divergence guard, the epoch kept, diagnostics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from convlens.checkpoint import load_checkpoint
from convlens.errors import ConvlensError
from convlens.train import TrainConfig, fit


def _finite_json(path) -> dict:
    """Parse a JSON file, failing on NaN or Infinity (which json.dumps would have written)."""

    def refuse(value):
        raise AssertionError(f"{path}: non-finite number {value}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_validation_split_is_stratified_and_held_out(digits, digits_run):
    from convlens.train import validation_split

    split = validation_split(digits, 0.1)
    assert split.val_labels.shape[0] == round(0.1 * digits.train_labels.shape[0])  # 144 of 1,437
    assert split.train_labels.shape[0] + split.val_labels.shape[0] == digits.train_labels.shape[0]
    assert torch.bincount(split.val_labels).min() >= 13  # every class, in proportion
    _, meta = load_checkpoint(digits_run)
    assert meta["validation"]["validation"] == 144 and meta["validation"]["train"] == 1293
    assert all("val_accuracy" in row and "test_accuracy" in row for row in meta["history"])


def test_no_validation_split_when_classes_are_tiny(digits):
    from convlens.train import validation_split

    few = type(digits)(
        **{
            **digits.__dict__,
            "train_images": digits.train_images[:30],
            "train_labels": digits.train_labels[:30],
        }
    )
    assert not validation_split(few, 0.1).has_validation


def test_injected_spike_rolls_back_and_finishes_finite(digits, tmp_path, monkeypatch):
    """Blow the classifier's weights up after epoch 3: the guard undoes it and training goes on."""
    import convlens.train.fitting as fit_module

    real = fit_module.train_one_epoch
    calls = []

    def spiking(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # the first try of epoch 3 only
            with torch.no_grad():
                dict(model.stages())["fc"].weight.mul_(200.0)
        return result

    monkeypatch.setattr(fit_module, "train_one_epoch", spiking)
    result = fit(digits, TrainConfig(epochs=5, seed=0), tmp_path / "run")
    meta = _finite_json(tmp_path / "run" / "model.json")
    rollbacks = meta["metrics"]["rollbacks"]
    assert [r["epoch"] for r in rollbacks] == [3] and rollbacks[0]["rolled_back_to"] == 2
    assert "validation loss jumped" in rollbacks[0]["reason"] and rollbacks[0]["lr_scale"] == pytest.approx(
        0.3
    )
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5]  # epoch 3 ran again
    assert result.test_accuracy > 0.8
    model, _ = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    assert any(d["kind"] == "rollback" for d in meta["diagnostics"])
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda v: pytest.fail(f"non-finite {v}"))


def test_a_learning_rate_that_always_diverges_stops_with_one_line(run_cli, tmp_path):
    code, _, err = run_cli("train", "--data", "digits", "--lr", "1e30", "--out", tmp_path / "run")
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("convlens: error:")]
    assert len(errors) == 1 and "--lr: training diverged at epoch 1" in errors[0], err
    assert "--lr 0.01" in errors[0]
    assert "Traceback" not in err and not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize(
    "failure",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    ],
)
def test_running_out_of_memory_is_one_line_naming_the_batch(run_cli, tmp_path, monkeypatch, failure):
    import convlens.train.fitting as fitting

    def allocation_fails(*args, **kwargs):
        raise failure

    monkeypatch.setattr(fitting, "train_one_epoch", allocation_fails)
    code, _, err = run_cli("train", "--data", "digits", "--batch-size", "256", "--out", tmp_path / "run")
    errors = [line for line in err.splitlines() if line.startswith("convlens: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "--batch-size: the " in errors[0] and "ran out of memory" in errors[0], errors[0]
    assert "batches of 256" in errors[0] and "--batch-size 64" in errors[0], errors[0]
    assert not (tmp_path / "run").exists()  # nothing written


def test_other_runtime_errors_are_not_called_memory(digits, tmp_path, monkeypatch):
    import convlens.train.fitting as fitting

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(fitting, "train_one_epoch", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        fit(digits, TrainConfig(epochs=1), tmp_path / "run")


def test_library_divergence_names_the_parameter(digits, tmp_path):
    from convlens.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="lr: training diverged") as caught:
        fit(digits, TrainConfig(epochs=2, lr=1e30), tmp_path / "run")
    assert caught.value.parameter == "lr"


def test_model_is_the_best_epoch_on_validation_when_the_last_is_clearly_worse(digits, tmp_path, monkeypatch):
    """Ruin the last epoch quietly (below the spike rule): model.* must be the best epoch, not the last."""
    import convlens.train.fitting as fit_module
    import convlens.train.guard as guard_module

    monkeypatch.setattr(guard_module, "SPIKE_FACTOR", 1e9)  # let the damage through the guard
    monkeypatch.setattr(guard_module, "SPIKE_MARGIN", 1e9)
    real = fit_module.train_one_epoch

    def damaging(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        if args[-3].epochs == len(damaging.calls) + 1:  # config is the fifth positional argument
            with torch.no_grad():
                dict(model.stages())["fc"].weight.mul_(-1.0)  # confident and wrong
        damaging.calls.append(1)
        return result

    damaging.calls = []
    monkeypatch.setattr(fit_module, "train_one_epoch", damaging)
    result = fit(digits, TrainConfig(epochs=4, seed=0), tmp_path / "run")
    meta = _finite_json(tmp_path / "run" / "model.json")
    last = result.history[-1]
    assert last["epoch"] == 4 and last["val_accuracy"] < 0.5
    assert result.selected_epoch == meta["metrics"]["selected_epoch"] == meta["metrics"]["best_epoch"] < 4
    assert "clearly worse on validation" in result.selection
    model, _ = load_checkpoint(tmp_path / "run")
    best, _ = load_checkpoint(tmp_path / "run" / "best.json")
    for (name, a), (_, b) in zip(model.state_dict().items(), best.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert result.test_accuracy > 0.8  # the kept weights, evaluated on the test split
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["selected"] for row in rows] == [row["epoch"] == result.selected_epoch for row in rows]
    assert any(d["kind"] == "selection" for d in meta["diagnostics"])


def test_early_stopping_ends_a_run_that_stopped_improving(digits, tmp_path, monkeypatch):
    import convlens.train.fitting as fit_module

    real = fit_module.evaluate_share

    def flat_validation(model, images, labels, batch_size=100):
        result = real(model, images, labels, batch_size)
        if images.shape[0] != digits.test_labels.shape[0]:  # the validation split: never improves
            result.update(accuracy=0.5, loss=1.0)
        return result

    monkeypatch.setattr(fit_module, "evaluate_share", flat_validation)
    result = fit(digits, TrainConfig(epochs=12, early_stopping=2), tmp_path / "run")
    # epoch 1 is the best; 2 and 3 are not (patience 2), and the warm-up (3 of 12 epochs) is over
    assert result.epochs == 3 and result.stopped.startswith("early stopping")
    again = fit(digits, TrainConfig(), tmp_path / "run", resume=True)  # a stopped run is finished
    assert again.epochs == 3


def test_diagnostics_find_a_dead_channel(digits, digits_run):
    from convlens.train import diagnose, relu_statistics

    model, meta = load_checkpoint(digits_run)
    with torch.no_grad():  # conv1 channel 5 can never be positive: zero kernel, negative bias
        conv1 = dict(model.stages())["conv1"]
        conv1.weight[5].zero_()
        conv1.bias[5] = -1.0
    stats = relu_statistics(model, digits.test_images[:200])
    assert 5 in stats["relu1"]["dead"] and stats["relu1"]["channels"] == 16
    findings = diagnose(
        model,
        digits.test_images[:200],
        "test",
        meta["history"],
        [],
        digits.train_labels,
        digits.class_names,
        {},
    )
    dead = [f for f in findings if f.kind == "dead-channels" and f.message.startswith("relu1")]
    assert dead and "channels 5" in dead[0].message.replace("channels 5,", "channels 5")


def test_diagnostics_name_class_imbalance_and_overfitting(digits):
    from convlens.models import create_model
    from convlens.train import diagnose

    model = create_model("convnet", (1, 8, 8), 10).eval()
    labels = torch.cat([torch.zeros(90, dtype=torch.int64), torch.arange(10).repeat(3)])
    history = [{"epoch": 1, "train_accuracy": 1.0, "val_accuracy": 0.6, "test_accuracy": 0.6}]
    findings = {
        f.kind: f
        for f in diagnose(
            model, digits.test_images[:50], "validation", history, [], labels, digits.class_names, {}
        )
    }
    assert "'0' has 93 training images, '1' 3 (31.0x)" in findings["class-imbalance"].message
    assert "train accuracy 100.0 % vs 60.0 %" in findings["overfitting"].message


def test_train_prints_the_recipe_the_kept_epoch_and_diagnostics(run_cli, tmp_path):
    code, out, err = run_cli("train", "--data", "digits", "--epochs", "3", "--out", tmp_path / "run")
    assert code == 0, err
    assert "validation images" in err and "model.* is epoch" in out
    assert "diagnostics" in err
    code, out, err = run_cli("train", "--data", "digits", "--epochs", "2", "--json", "--out", tmp_path / "j")
    summary = json.loads(out)
    assert summary["selected_epoch"] in (1, 2) and summary["validation"]["validation"] == 144
    assert isinstance(summary["diagnostics"], list)
    assert math.isfinite(summary["test_accuracy"])


def test_bad_new_settings_are_refused(digits, tmp_path):
    for config, message in (
        ({"early_stopping": -1}, "early_stopping must be 0"),
        ({"max_seconds": 0}, "max_seconds must be a positive number"),
        ({"seed": -1}, "seed must be a whole number"),
        ({"validation_fraction": 0.7}, "validation_fraction must be in"),
    ):
        with pytest.raises(ConvlensError, match=message):
            fit(digits, TrainConfig(**config), tmp_path / "run")


def test_spikes_are_undone_three_times_then_let_through_but_nan_is_fatal():
    from convlens.train.guard import MAX_ROLLBACKS, DivergenceGuard, Problem, TrainingDiverged

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    generator = torch.Generator().manual_seed(0)
    guard = DivergenceGuard(best_val_loss=0.1)
    guard.keep(0, model, optimizer, scheduler, generator)
    assert guard.problem(0.5, 0.5, model) is None  # 5x but only +0.4 nats: a wobble
    for _ in range(MAX_ROLLBACKS):
        spike = guard.problem(0.5, 5.0, model)
        assert spike.kind == "spike"
        guard.roll_back(2, spike, model, optimizer, scheduler, generator, peak_lr=0.1)
    assert guard.problem(0.5, 5.0, model) is None  # selection on validation handles later spikes
    assert optimizer.param_groups[0]["max_lr"] == pytest.approx(0.1 * 0.3**MAX_ROLLBACKS)
    nan = Problem("non-finite", "the training loss became infinite or NaN")
    for _ in range(MAX_ROLLBACKS):
        guard.roll_back(3, nan, model, optimizer, scheduler, generator, peak_lr=0.1)
    with pytest.raises(TrainingDiverged, match="lr: training diverged at epoch 3"):
        guard.roll_back(3, nan, model, optimizer, scheduler, generator, peak_lr=0.1)


def test_report_and_model_card_show_the_kept_epoch_and_diagnostics(digits_run):
    from fastapi.testclient import TestClient

    from convlens.report import report_sections
    from convlens.run import Run
    from convlens.server import create_app

    run = Run.open(digits_run)
    assert run.validation["validation"] == 144 and isinstance(run.diagnostics, list)
    _, sections = report_sections(digits_run)
    training = next(section for section in sections if section.id == "training")
    assert (
        "144 images held out" in training.text and f"epoch {run.metrics['selected_epoch']}" in training.text
    )
    card = (
        TestClient(create_app([digits_run], allowed_hosts=["testserver"]))
        .get(f"/api/runs/{digits_run.name}")
        .json()
    )
    assert card["validation"] == run.validation and card["diagnostics"] == run.diagnostics
    assert card["metrics"]["selection"] == run.metrics["selection"]


@pytest.mark.parametrize(
    ("interrupt_at", "expected"), [(1, "before the first epoch was saved"), (3, "--resume")]
)
def test_ctrl_c_says_how_to_go_on(run_cli, tmp_path, monkeypatch, interrupt_at, expected):
    import convlens.train.fitting as fitting

    real, calls = fitting.train_one_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fitting, "train_one_epoch", interrupted)
    code, _, err = run_cli("train", "--data", "digits", "--epochs", "4", "--out", tmp_path / "run")
    assert code == 2 and "interrupted" in err and expected in err, err
    if interrupt_at > 1:  # what it suggests works
        monkeypatch.setattr(fitting, "train_one_epoch", real)
        code, _, err = run_cli("train", "--data", "digits", "--out", tmp_path / "run", "--resume")
        assert code == 0, err
