"""The run folder before the first epoch: what a killed training left, and whether it may be written.

Only the process that writes the folder calls these: the one process of a normal run, rank 0
of a distributed one (``train.distributed``), which then tells the others what it decided.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from convlens.checkpoint import tidy_checkpoint
from convlens.errors import ConvlensError
from convlens.storage import MiB, format_bytes, preflight, remove_stale_temp_files
from convlens.train.resume_schema import check_resumable

log = logging.getLogger("convlens")


def prepare_run_folder(run_dir: Path, resume: bool, overwrite: bool, took_over: bool) -> bool:
    """Tidy what a killed training left and check the folder may be trained into; returns
    whether to resume (False when the run to resume died before its first epoch was saved)."""
    interrupted = resume and _interrupted_before_first_save(run_dir, took_over)  # its traces, before tidying
    for name in ("model", "best", "last"):
        tidy_checkpoint(run_dir / name)  # what a killed training left half-saved
    remove_stale_temp_files(run_dir, "metrics.jsonl")
    if interrupted:
        log.warning(
            "resume: %s was interrupted before its first epoch was saved; starting from epoch 1",
            run_dir,
        )
        return False
    if resume and not (run_dir / "last.json").is_file():
        raise ConvlensError(f"resume: {run_dir} has no last.json to resume from", parameter="resume")
    if resume:
        check_resumable(run_dir / "last.json")  # every section resume uses, before any is used
    if not resume and not overwrite and any((run_dir / f"{n}.json").exists() for n in ("model", "last")):
        raise ConvlensError(
            f"run_dir {run_dir}: already holds a run; pass resume=True to continue it or "
            "overwrite=True to replace it",
            parameter="run_dir",
        )
    return resume


def _interrupted_before_first_save(run_dir: Path, took_over: bool) -> bool:
    """A run folder with traces of a training killed before its first last.* was committed:
    the lock of a dead training, or files of best.* / last.*."""
    if (run_dir / "last.json").exists() or (run_dir / "model.json").exists() or not run_dir.is_dir():
        return False
    return took_over or any(
        p.name.startswith(("best.", "last.", ".best.", ".last.")) for p in run_dir.iterdir()
    )


def preflight_run_folder(run_dir: Path, model: torch.nn.Module, name: str) -> None:
    """Enough free space for model.*, best.*, last.* (weights and momentum) and one save in flight."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    preflight(
        run_dir,
        6 * size + 16 * MiB,
        f"training {name} ({format_bytes(size)} of weights; model.*, best.*, last.* with optimizer "
        "state, one save in flight and a margin)",
    )
