"""Per-epoch snapshots written by fit(): every epoch once, also across an interruption and resume,
equal to the weights last.* holds; off with --no-snapshots; skipped with one note over the limit."""

from __future__ import annotations

import logging

import pytest
import torch

from convlens.train import TrainConfig, fit
from convlens.train import snapshots as snapshots_module
from convlens.train.snapshots import first_convolution, read_index, read_snapshot
from testing_helpers import StopAfter


def test_resume_keeps_one_snapshot_per_epoch(digits, tmp_path):
    from convlens.checkpoint import read_checkpoint

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(digits, TrainConfig(epochs=3), run, observer=StopAfter(2))
    assert read_index(run)["epochs"] == [0, 1, 2]
    fit(digits, TrainConfig(epochs=3), run, resume=True)
    assert read_index(run)["epochs"] == [0, 1, 2, 3]
    _, model, _, _ = read_checkpoint(run / "last.json")
    kernels = first_convolution(model)[2].weight.detach()
    assert torch.equal(read_snapshot(run, 3)["kernels"], kernels)
    assert not torch.equal(read_snapshot(run, 0)["kernels"], kernels)  # the initialization


def test_no_snapshots_flag_writes_none(tmp_path, run_cli):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", run, "--no-snapshots")
    assert code == 0, err
    assert (run / "model.json").is_file() and not (run / "snapshots").exists()


def test_snapshots_over_the_limit_are_skipped_with_one_note(digits, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(snapshots_module, "MAX_RUN_BYTES", 1000)
    monkeypatch.setattr(logging.getLogger("convlens"), "propagate", True)  # the CLI's main() turns it off
    with caplog.at_level(logging.WARNING, logger="convlens"):
        fit(digits, TrainConfig(epochs=1), tmp_path / "run")
    notes = {r.getMessage() for r in caplog.records if "snapshots" in r.getMessage()}
    assert len(notes) == 1, notes
    note = notes.pop()
    assert note.startswith("snapshots: skipped") and "limit" in note and "\n" not in note
    assert not (tmp_path / "run" / "snapshots").exists()
