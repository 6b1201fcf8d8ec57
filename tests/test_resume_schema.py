"""``resume`` on a last.json from another convlens version, or edited: one line, nothing touched.

Each case edits one section of a real ``last.json`` (the tensors' SHA-256 covers only the
tensor file, so the JSON can be edited by hand or written by a newer convlens) and checks that
``fit(resume=True)`` raises one ConvlensError naming the file and the field, and that the run
folder is byte-for-byte what it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from convlens.errors import ConvlensError
from convlens.train import TrainConfig, fit

CONFIG = {"epochs": 2, "batch_size": 256, "snapshots": False}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits) -> Path:
    run = tmp_path_factory.mktemp("resume") / "run"
    fit(digits, TrainConfig(**CONFIG), run)
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _edit(run: Path, change) -> None:
    meta = json.loads((run / "last.json").read_text())
    change(meta)
    (run / "last.json").write_text(json.dumps(meta))


def _contents(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _pop(*keys):
    def change(meta):
        section = meta
        for key in keys[:-1]:
            section = section[key]
        del section[keys[-1]]

    return change


def _set(value, *keys):
    def change(meta):
        section = meta
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value

    return change


CASES = {
    "missing resume": (_pop("resume"), r"resume must be an object"),
    "missing training key": (_pop("training", "lr"), r"training\.lr is missing"),
    "training epochs as text": (_set("2", "training", "epochs"), r"training\.epochs: "),
    "training epochs 1e12": (_set(1e12, "training", "epochs"), r"training\.epochs: "),
    "training not an object": (_set([1], "training"), r"training must be an object"),
    "label smoothing as text": (_set("fast", "training", "label_smoothing"), r"training: "),
    "missing dataset fingerprint": (_pop("dataset", "fingerprint"), r"dataset\.fingerprint must be"),
    "history of numbers": (_set([1, 2], "history"), r"history\[0\] must be an object"),
    "resume epoch as text": (_set("2", "resume", "epoch"), r"resume\.epoch must be"),
    "best score short": (_set([1], "resume", "best_score"), r"resume\.best_score must be"),
    "optimizer groups": (_set([], "resume", "optimizer", "param_groups"), r"param_groups must be"),
    "scheduler steps": (_set("12", "resume", "scheduler", "total_steps"), r"total_steps must be"),
    "history longer than training": (
        lambda meta: meta["history"].append({**meta["history"][-1], "epoch": 3}),
        r"resume\.epoch must be the last epoch of the history \(3\)",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_section_is_refused_naming_it(digits, run, case):
    change, message = CASES[case]
    _edit(run, change)
    before = _contents(run)
    with pytest.raises(ConvlensError, match=message) as caught:
        fit(digits, TrainConfig(), run, resume=True)
    assert caught.value.parameter == "resume"
    assert str(run / "last.json") in str(caught.value) and "\n" not in str(caught.value)
    assert _contents(run) == before


def test_an_unknown_training_key_names_it_and_the_version_that_wrote_it(digits, run, run_cli):
    def newer(meta):
        meta["training"]["warmup_shape"] = "linear"
        meta["versions"]["convlens"] = "9.1.0"

    _edit(run, newer)
    before = _contents(run)
    with pytest.raises(ConvlensError, match=r"training\.warmup_shape .*written by convlens 9\.1\.0"):
        fit(digits, TrainConfig(), run, resume=True)
    code, _, err = run_cli("train", "--data", "digits", "--out", run, "--resume")
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the line announcing the training
    assert last.startswith("convlens: error: ") and "training.warmup_shape" in last
    assert "convlens 9.1.0" in last and err.count("error") == 1
    assert _contents(run) == before


def test_missing_generator_state_is_refused(digits, run):
    """A tensor file without the random generator's state (its SHA-256 updated to match)."""
    tensors = load_file(run / "last.safetensors")
    del tensors["state.rng.generator"]
    save_file(tensors, run / "last.safetensors")
    digest = hashlib.sha256((run / "last.safetensors").read_bytes()).hexdigest()
    _edit(run, _set(digest, "weights", "sha256"))
    _edit(run, _set(len(tensors), "weights", "tensors"))
    with pytest.raises(ConvlensError, match=r"state\.rng\.generator must be"):
        fit(digits, TrainConfig(), run, resume=True)


def test_a_key_added_later_is_filled_with_the_value_that_trains_as_before(digits, run):
    """max_seconds did not exist once: no time budget is exactly what that version did."""
    _edit(run, _pop("training", "max_seconds"))
    resumed = fit(digits, TrainConfig(), run, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
