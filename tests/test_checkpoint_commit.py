"""Crash-safe checkpoints, the run lock, and OS errors as one line.

A kill is simulated at every step of ``save_checkpoint`` (``convlens.checkpoint.save_step``)
for best.*, last.* and model.* during ``fit``; afterwards ``resume`` must finish the run and
``Run.open`` / ``convlens eval`` must work. One test kills a real training process with SIGKILL.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from convlens import checkpoint
from convlens.errors import ConvlensError
from convlens.run import Run
from convlens.runlock import LOCK_NAME, RunLock
from convlens.train import TrainConfig, fit

CONFIG = {"model": "convnet", "epochs": 2, "seed": 0}
STEPS = ("start", "staged", "committed", "renamed")


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way catches it."""


def _kill_at(monkeypatch, name: str, step: str, nth: int = 1) -> None:
    seen = {"count": 0}

    def hook(at: str, json_path: Path) -> None:
        if json_path.stem == name and at == step:
            seen["count"] += 1
            if seen["count"] == nth:
                raise Killed(f"{name}.* at {step}")

    monkeypatch.setattr(checkpoint, "save_step", hook)


def _leftovers(run: Path) -> list[str]:
    return sorted(
        p.name
        for p in run.iterdir()
        if p.name.endswith(".tmp") or p.name.count(".") > 1 or p.name == LOCK_NAME
    )


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    return fit(digits, TrainConfig(**CONFIG), tmp_path_factory.mktemp("whole"))


CASES = [("last", step, 2) for step in STEPS]  # epoch 2's last.*: last.* of epoch 1 is committed
CASES += [("best", step, 1) for step in STEPS]  # epoch 1's best.*: nothing committed yet
CASES += [("model", step, 1) for step in STEPS]  # the end of training
CASES += [("last", "staged", 1)]  # the very first last.*


@pytest.mark.parametrize(("name", "step", "nth"), CASES)
def test_kill_at_any_save_step_then_resume_and_eval(
    digits, tmp_path, monkeypatch, run_cli, reference, name, step, nth
):
    run = tmp_path / "run"
    _kill_at(monkeypatch, name, step, nth)
    with pytest.raises(Killed):
        fit(digits, TrainConfig(**CONFIG), run)
    monkeypatch.setattr(checkpoint, "save_step", None)
    _write_lock(run, _dead_pid())  # a killed process cannot release its lock
    (run / ".last.json.x1y2z3.tmp").write_bytes(b'{"half": ')  # what a kill inside a write leaves
    if (run / "last.json").exists() or (run / "best.json").exists():
        Run.open(run)  # whatever was committed loads, also before the resume
    resumed = fit(digits, TrainConfig(**CONFIG), run, resume=True)
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in reference.history]
    assert Run.open(run).checkpoint == run / "model.json"
    for stem in ("model", "best", "last"):
        Run.open(run / f"{stem}.json")
    assert _leftovers(run) == []  # no temp file, no content-named tensor file, no lock
    code, out, err = run_cli("eval", run, "--json")
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == pytest.approx(resumed.test_accuracy)


def test_reader_finds_tensors_committed_but_not_yet_renamed(tmp_path, monkeypatch):
    from convlens.models import create_model

    torch.manual_seed(0)
    model = create_model("convnet", (1, 8, 8), 3)
    checkpoint.save_checkpoint(tmp_path / "m", model, {"class_names": ["a", "b", "c"]})
    torch.manual_seed(1)
    newer = create_model("convnet", (1, 8, 8), 3)
    _kill_at(monkeypatch, "m", "committed")
    with pytest.raises(Killed):
        checkpoint.save_checkpoint(tmp_path / "m", newer, {"class_names": ["a", "b", "c"]})
    staged = [p.name for p in tmp_path.glob("m.*.safetensors")]
    assert len(staged) == 1  # m.<sha16>.safetensors: the committed tensors, not yet renamed
    loaded, _ = checkpoint.load_checkpoint(tmp_path / "m.json")
    images = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded(images), newer.eval()(images))
    checkpoint.load_checkpoint(tmp_path / staged[0])  # its name resolves to m.json too
    monkeypatch.setattr(checkpoint, "save_step", None)
    checkpoint.save_checkpoint(tmp_path / "m", model, {"class_names": ["a", "b", "c"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_old_format_checkpoint_still_loads(tmp_path):
    """Checkpoints written before the commit protocol: plain NAME.safetensors + NAME.json."""
    from safetensors.torch import save as save_tensors

    from convlens.models import create_model

    model = create_model("convnet", (1, 8, 8), 3)
    blob = save_tensors({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()})
    (tmp_path / "model.safetensors").write_bytes(blob)
    meta = {
        "format": checkpoint.FORMAT,
        "model": model.arguments,
        "input_shape": [1, 8, 8],
        "class_names": ["a", "b", "c"],
        "weights": {
            "file": "model.safetensors",
            "sha256": __import__("hashlib").sha256(blob).hexdigest(),
            "tensors": len(model.state_dict()),
        },
    }
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert Run.open(tmp_path).class_names == ["a", "b", "c"]


def test_run_folder_without_model_json_falls_back_with_a_warning(digits, tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    _kill_at(monkeypatch, "model", "start")
    with pytest.raises(Killed):
        fit(digits, TrainConfig(**CONFIG), run)
    with caplog.at_level(logging.WARNING, logger="convlens"):
        opened = Run.open(run)
    assert opened.checkpoint == run / "best.json"
    assert "no model.json" in caplog.text and "best.json" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(("name", "step"), [("last", "staged"), ("model", "committed")])
def test_real_sigkill_then_resume(digits, tmp_path, name, step, reference):
    run = tmp_path / "run"
    script = f"""
import os, signal
from convlens import checkpoint
from convlens.data import load_dataset
from convlens.train import TrainConfig, fit
seen = []
def hook(at, json_path):
    if json_path.stem == {name!r} and at == {step!r}:
        seen.append(1)
        if len(seen) == {2 if name == "last" else 1}:
            os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_step = hook
fit(load_dataset("digits"), TrainConfig(**{CONFIG!r}), {str(run)!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert (run / LOCK_NAME).exists()  # a killed process cannot release its lock
    resumed = fit(digits, TrainConfig(**CONFIG), run, resume=True)  # takes the stale lock over
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in reference.history]
    assert _leftovers(run) == []


# --- the run lock ---------------------------------------------------------------------------


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def _write_lock(run: Path, pid: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(
        json.dumps({"pid": pid, "host": os.uname().nodename, "started": time.time()})
    )


def test_second_training_into_a_locked_folder_is_refused(digits, tmp_path, run_cli):
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(run, sleeper.pid)
        with pytest.raises(
            ConvlensError, match=rf"run_dir {run}: another training \(pid {sleeper.pid}, started "
        ):
            fit(digits, TrainConfig(**CONFIG), run)
        code, _, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", run)
        assert code == 2
        assert err.startswith(f"convlens: error: --out {run}: another training (pid {sleeper.pid}, started ")
        assert len(err.strip().splitlines()) == 1  # refused before the data is loaded
        assert (run / LOCK_NAME).exists()  # the other training's lock is left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_two_locks_in_one_process(tmp_path):
    with RunLock(tmp_path / "run"), pytest.raises(ConvlensError, match="another training"):
        RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run").exists()  # created by the lock, empty: removed again


def test_stale_lock_is_taken_over_with_a_warning(digits, tmp_path, caplog):
    dead = _dead_pid()
    run = tmp_path / "run"
    _write_lock(run, dead)
    with caplog.at_level(logging.WARNING, logger="convlens"):
        fit(digits, TrainConfig(**CONFIG), run)
    assert f"taking over the lock of a training that no longer runs (pid {dead}" in caplog.text
    assert not (run / LOCK_NAME).exists()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_lock_released_on_exceptions(digits, tmp_path, monkeypatch, interrupt):
    def hook(at, json_path):
        raise interrupt("stop")

    monkeypatch.setattr(checkpoint, "save_step", hook)
    with pytest.raises(interrupt):
        fit(digits, TrainConfig(**CONFIG), tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


# --- OS errors: one line, exit 2, nothing half-written ----------------------------------------


def _fail_replace(monkeypatch, code: int, suffix: str) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(suffix):
            raise OSError(code, os.strerror(code))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.EROFS, "read-only file system"), (errno.ENOSPC, "no space left on the device")],
)
def test_train_os_error_is_one_line(tmp_path, monkeypatch, run_cli, code, reason):
    run = tmp_path / "run"
    _fail_replace(monkeypatch, code, ".json")
    exit_code, _, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", run)
    assert exit_code == 2
    assert err.strip().splitlines()[-1] == f"convlens: error: {run / 'best.json'}: {reason}"
    assert "Traceback" not in err
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    assert not (run / LOCK_NAME).exists()


def test_fsync_enospc_names_the_file(tmp_path, monkeypatch, run_cli):
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", run)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"convlens: error: {run}/best.") and line.endswith(": no space left on the device")
    assert not run.exists()  # nothing was committed: the folder the training made is gone again


def test_report_and_lab_os_errors_are_one_line(digits_run, tmp_path, monkeypatch, run_cli):
    _fail_replace(monkeypatch, errno.EACCES, ".html")
    code, _, err = run_cli("report", digits_run, "--out", tmp_path / "r.html")
    assert (
        code == 2
        and err.strip().splitlines()[-1] == f"convlens: error: {tmp_path / 'r.html'}: permission denied"
    )
    assert not list(tmp_path.glob(".*.tmp"))
    _fail_replace(monkeypatch, errno.EROFS, "result.json")
    code, _, err = run_cli("lab", "params", "--data", "digits", "--out", tmp_path / "lab")
    assert code == 2
    assert (
        err.strip().splitlines()[-1]
        == f"convlens: error: {tmp_path / 'lab' / 'result.json'}: read-only file system"
    )
    assert not list((tmp_path / "lab").glob(".*.tmp"))


def test_preflight_before_loading_data(tmp_path, monkeypatch, run_cli):
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("train", "--data", "digits", "--out", tmp_path / "file" / "run")
    assert (
        code == 2
        and err.strip()
        == f"convlens: error: --out {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder"
    )

    import shutil

    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20)
    )
    monkeypatch.setattr(
        "convlens.data.load_dataset", lambda *a, **k: pytest.fail("data loaded before preflight")
    )
    code, _, err = run_cli("train", "--data", "digits", "--out", tmp_path / "run")
    assert code == 2
    assert (
        err.strip()
        == f"convlens: error: --out {tmp_path / 'run'}: only 1.0 MiB free, writing here needs about 16.0 MiB"
    )
    assert not (tmp_path / "run").exists()


def test_fit_preflight_estimates_from_model_size(digits, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 17 << 20)
    )
    with pytest.raises(
        ConvlensError, match=r"run_dir .*: only 17.0 MiB free, training convnet \(.* of weights; model\.\*"
    ):
        fit(digits, TrainConfig(model="convnet", model_options={"width": 64}, epochs=1), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_os_error_texts():
    from convlens.storage import os_error_text

    assert (
        os_error_text(OSError(errno.ENOTDIR, "Not a directory", "/a/b"))
        == "/a/b: not a folder (a file stands where a folder is needed)"
    )
    assert (
        os_error_text(OSError(errno.EACCES, "Permission denied", "/a", None, "/b"))
        == "/a → /b: permission denied"
    )
    assert (
        os_error_text(OSError(errno.ELOOP, "Too many levels of symbolic links", "/x"))
        == "/x: too many levels of symbolic links"
    )


@pytest.mark.parametrize("name", ["best", "last"])
def test_kill_inside_the_staged_tensor_write_leaves_nothing_after_resume(digits, tmp_path, monkeypatch, name):
    """Killed while writing ``NAME.<sha16>.safetensors``: its temp file is cleared on resume."""
    import tempfile

    real_write, run = checkpoint.atomic_write, tmp_path / "run"

    def killed_mid_write(path, data, durable=True):
        if path.name.startswith(f"{name}.") and path.name.count(".") == 2:  # the staged tensors
            fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.write(fd, data[: len(data) // 2])
            os.close(fd)
            raise Killed(f"inside the write of {path.name}")
        real_write(path, data, durable)

    monkeypatch.setattr(checkpoint, "atomic_write", killed_mid_write)
    with pytest.raises(Killed):
        fit(digits, TrainConfig(**CONFIG), run)
    assert any(p.name.endswith(".tmp") for p in run.iterdir())
    monkeypatch.setattr(checkpoint, "atomic_write", real_write)
    fit(digits, TrainConfig(**CONFIG), run, resume=True)
    assert _leftovers(run) == []
