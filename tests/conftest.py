"""Shared fixtures: small real data and trained checkpoints, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests must not depend on (or fill) the user's cache folder.
os.environ.setdefault(
    "CONVLENS_CACHE_DIR", str(Path(__file__).parent.parent / ".pytest_cache" / "convlens-data")
)
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as a Dataset bundle (1,437 train / 360 test)."""
    from convlens.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, digits) -> Path:
    """A convnet trained on digits for 8 epochs (about a second); returns the run folder."""
    from convlens.train import TrainConfig, fit

    run_dir = tmp_path_factory.mktemp("digits-run")
    fit(digits, TrainConfig(model="convnet", epochs=8, seed=0), run_dir, overwrite=True)
    return run_dir


@pytest.fixture(scope="session")
def digits_model(digits_run):
    """(model, metadata) of the trained digits convnet, in eval mode."""
    from convlens.checkpoint import load_checkpoint

    return load_checkpoint(digits_run)


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `convlens ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from convlens.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["convlens", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
