"""The sections of model.json the faces compute with, and the weights, are checked on load.

A malformed ``normalization`` once passed the schema and made ``predict`` and every image
endpoint of the explorer fail with a traceback; NaN weights under a matching SHA-256 made
``predict --json`` print ``NaN`` (not JSON) and exit 0; a ``history`` or ``metrics`` of the
wrong types broke ``report``. Each is now one ConvlensError naming the field, on load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from convlens import Run
from convlens.errors import ConvlensError


@pytest.fixture
def run(digits_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy)
    return copy


def _edit(run: Path, change) -> None:
    meta = json.loads((run / "model.json").read_text())
    change(meta)
    (run / "model.json").write_text(json.dumps(meta))


BAD_SECTIONS = {
    "mean of text": (lambda m: m["normalization"].update(mean=["x"]), r"normalization\.mean must be"),
    "mean nested": (lambda m: m["normalization"].update(mean=[[0.3]]), r"normalization\.mean must be"),
    "std of zero": (lambda m: m["normalization"].update(std=[0]), r"normalization\.std must be"),
    "two means for one channel": (
        lambda m: m["normalization"].update(mean=[0.1, 0.2]),
        r"normalization\.mean must be null or a list of 1",
    ),
    "history row of text": (lambda m: m.update(history=["epoch 1"]), r"history\[0\] must be"),
    "history loss of text": (
        lambda m: m["history"][0].update(train_loss="low"),
        r"history\[0\]\.train_loss must be a number",
    ),
    "accuracy of text": (
        lambda m: m["metrics"].update(test_accuracy="97%"),
        r"metrics\.test_accuracy must be a number",
    ),
    "selection not text": (lambda m: m["metrics"].update(selection=[1]), r"metrics\.selection must be"),
}


@pytest.mark.parametrize("case", BAD_SECTIONS, ids=list(BAD_SECTIONS))
def test_a_malformed_section_is_refused_on_load(run, case):
    change, message = BAD_SECTIONS[case]
    _edit(run, change)
    with pytest.raises(ConvlensError, match=message):
        Run.open(run)


def test_the_cli_and_the_explorer_refuse_a_malformed_normalization(run, run_cli):
    from convlens.server.app import create_app

    _edit(run, lambda m: m["normalization"].update(mean=["x"]))
    code, out, err = run_cli("predict", run, "digits:3", "--json")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "normalization.mean must be" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConvlensError, match=r"normalization\.mean must be"):
        create_app([run])


def test_report_refuses_a_history_of_the_wrong_types(run, run_cli, tmp_path):
    _edit(run, lambda m: m["history"][0].update(val_accuracy={"a": 1}))
    code, _, err = run_cli("report", run, "--out", tmp_path / "report.html")
    assert code == 2 and "Traceback" not in err and "history[0].val_accuracy" in err
    assert not (tmp_path / "report.html").exists()


def test_nan_weights_with_a_matching_hash_are_refused(run, run_cli):
    tensors = load_file(run / "model.safetensors")
    name = next(key for key, value in tensors.items() if value.is_floating_point())
    tensors[name][0] = float("nan")
    save_file(tensors, run / "model.safetensors")
    digest = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    _edit(run, lambda m: m["weights"].update(sha256=digest))
    with pytest.raises(ConvlensError, match=rf"tensor {name[len('model.') :]!r} holds NaN"):
        Run.open(run)
    code, out, err = run_cli("predict", run, "digits:3", "--json")
    assert code == 2 and out == "" and "holds NaN" in err
