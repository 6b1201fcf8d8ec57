"""Training jobs (convlens.train.jobs) and following a run folder (convlens.train.follow): a job
trains digits in a child process running the library's entry point and is followed epoch by
epoch; a bad request is a ConvlensError naming its field; a child's failure is a record in the
run folder; a stop leaves the run resumable though the caller ignores SIGINT, and a resumed job
ends as the run never stopped (or is refused, naming why); a run started
with `convlens train` is followed the same way; metrics.jsonl is read incrementally and a
folder trained again from its first epoch is told from fit's last rewrite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from convlens.errors import ConvlensError
from convlens.train.follow import Ended, EpochEvent, Follower, MetricsReader, Restart, folder_outcome, follow
from convlens.train.jobs import ERROR_RECORD, JobOutcome, TrainingJob, TrainJob, read_error, start


def wait_for(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_job_trains_in_a_child_and_is_followed_epoch_by_epoch(tmp_path):
    folder = tmp_path / "run"
    job = start(TrainJob("digits", epochs=2, seed=3), folder)
    events = list(follow(folder, job, poll_s=0.05))
    epochs, ended = events[:-1], events[-1]
    assert [(type(e), e.epoch, e.planned_epochs) for e in epochs] == [(EpochEvent, 1, 2), (EpochEvent, 2, 2)]
    assert all(e.snapshot and e.train_loss > 0 and 0 <= e.test_accuracy <= 1 for e in epochs)
    assert ended == Ended(JobOutcome("finished"), 2)
    assert job.outcome() == JobOutcome("finished")
    saved = json.loads((folder / "model.json").read_text())["training"]
    assert (saved["epochs"], saved["seed"], saved["model"]) == (2, 3, "convnet")  # the job's TrainConfig
    assert not (folder / ERROR_RECORD).exists()
    replay = list(follow(folder, poll_s=0.05))  # a finished run replays, from its files alone
    assert [e.epoch for e in replay[:-1]] == [1, 2] and replay[-1].outcome.status == "finished"


@pytest.mark.parametrize(
    ("job", "parameter", "message"),
    [
        (TrainJob("nope"), "data", "data: unknown data set 'nope'; choose one of: "),
        (TrainJob("digits", model="nope"), "model", "model: unknown model 'nope'"),
        (TrainJob("digits", epochs=0), "epochs", "epochs must be a whole number 1..100, got 0"),
        (TrainJob("digits", epochs=True), "epochs", "epochs must be a whole number 1..100, got True"),
        (TrainJob("digits", batch_size=1025), "batch_size", "batch_size must be a whole number 1..1024"),
        (TrainJob("digits", lr=0), "lr", "lr must be a number in (0, 10], got 0"),
        (TrainJob("digits", lr=float("nan")), "lr", "lr must be a number in (0, 10], got nan"),
        (TrainJob("digits", seed=-1), "seed", "seed must be a whole number 0..9223372036854775807"),
        (TrainJob("digits", seed=10**400), "seed", "seed must be a whole number 0..9223372036854775807"),
        (TrainJob("digits", lr=10**400), "lr", "lr must be a number in (0, 10], got 1000"),
        (TrainJob("digits", epochs=2.0), "epochs", "epochs must be a whole number 1..100, got 2.0"),
    ],
)
def test_a_bad_job_is_an_error_naming_its_field_before_any_child_starts(tmp_path, job, parameter, message):
    with pytest.raises(ConvlensError) as raised:
        start(job, tmp_path / "run")
    assert raised.value.parameter == parameter and str(raised.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_a_server_accepts_built_in_data_only(tmp_path):
    TrainJob(str(tmp_path)).check()  # from Python, a path is data
    with pytest.raises(ConvlensError, match="unknown data set") as raised:
        TrainJob(str(tmp_path)).check(paths=False)
    assert raised.value.parameter == "data"


def test_a_failing_child_leaves_a_record_that_its_outcome_and_any_follower_read(tmp_path):
    empty = tmp_path / "empty"  # exists, so the job starts; holds no images, so loading fails
    empty.mkdir()
    folder = tmp_path / "run"
    job = start(TrainJob(str(empty), epochs=1), folder)
    ended = list(follow(folder, job, poll_s=0.05))[-1]
    assert ended.outcome.status == "failed" and ended.outcome.parameter == "data"
    assert ended.outcome.message.startswith("data: ") and "--" not in ended.outcome.message
    record = read_error(folder)
    assert record is not None and record.kind == "bad_input" and record.message == ended.outcome.message
    assert json.loads((folder / ERROR_RECORD).read_text())["parameter"] == "data"
    assert folder_outcome(folder) == ended.outcome  # a follower that did not start it reads the same


def test_a_child_that_dies_without_a_record_fails_with_its_exit(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    assert TrainingJob(tmp_path, process).outcome() == JobOutcome(
        "failed", False, "the training process exited with code 3"
    )


def test_a_stop_after_the_final_model_was_written_reports_finished(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(130)"])  # as after a late SIGINT
    process.wait()
    job = TrainingJob(tmp_path, process, stopping=True)
    assert job.outcome().status == "stopped"  # no final model: the stop ended it
    (tmp_path / "model.json").write_text("{}")
    assert job.outcome() == JobOutcome("finished")


def test_a_job_stops_resumably_though_its_caller_ignores_sigint(tmp_path):
    """A server started as a script's background job ignores SIGINT, and so would its children."""
    folder = tmp_path / "run"
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        job = start(TrainJob("digits", epochs=50, batch_size=1), folder)  # seconds per epoch
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        wait_for(lambda: (folder / "last.json").is_file() or not job.running)
        assert job.running
        job.stop(wait_s=30)  # ignored, it would be killed after 30 s, or run its 50 epochs
    finally:
        job.process.kill()
        job.process.wait()
    assert job.process.returncode == 130  # it took SIGINT back and ended by itself
    outcome = job.outcome()
    assert outcome.status == "stopped" and outcome.resumable and "resumes" in outcome.message
    assert not (folder / "model.json").exists() and not (folder / ERROR_RECORD).exists()


def test_a_run_started_with_convlens_train_is_followed(tmp_path):
    folder = tmp_path / "shell"
    command = [
        sys.executable,
        "-m",
        "convlens",
        "train",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--out",
        str(folder),
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (folder / "training.lock").exists() or child.poll() is not None)
        events = list(follow(folder, poll_s=0.05))
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0
    assert [e.epoch for e in events[:-1]] == [1, 2]
    assert events[-1] == Ended(JobOutcome("finished"), 2)


def write_rows(folder: Path, *losses: float, selected: int | None = None) -> None:
    """metrics.jsonl as fit writes it: the whole history, replaced at once."""
    rows = [{"epoch": i + 1, "train_loss": loss, "test_loss": loss} for i, loss in enumerate(losses)]
    if selected is not None:
        rows = [{**row, "selected": row["epoch"] == selected} for row in rows]
    temp = folder / ".metrics.jsonl.tmp"
    temp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    temp.replace(folder / "metrics.jsonl")


def test_metrics_are_read_incrementally_and_a_restart_is_told_from_fits_last_rewrite(tmp_path, monkeypatch):
    reader = MetricsReader(tmp_path)
    assert reader.read() == (False, [])  # no file yet
    write_rows(tmp_path, 2.0, 1.5)
    assert [row["epoch"] for row in reader.read()[1]] == [1, 2]
    read_from = []
    lines = MetricsReader._lines
    monkeypatch.setattr(
        MetricsReader, "_lines", staticmethod(lambda f, o: read_from.append(o) or lines(f, o))
    )
    assert reader.read() == (False, [])  # unchanged: nothing read at all
    assert read_from == []
    write_rows(tmp_path, 2.0, 1.5, 1.2)  # the next epoch
    assert [row["epoch"] for row in reader.read()[1]] == [3]
    assert read_from[-1] == len((tmp_path / "metrics.jsonl").read_bytes().splitlines(keepends=True)[0]) * 2
    write_rows(tmp_path, 2.0, 1.5, 1.2, selected=2)  # the end of training marks the kept epoch
    assert reader.read() == (False, [])
    write_rows(tmp_path, 2.0, 1.5, 1.2, float("nan"), selected=2)  # a row past the moved lines
    restarted, rows = reader.read()
    assert not restarted and [(r["epoch"], r["train_loss"]) for r in rows] == [(4, None)]
    write_rows(tmp_path, 0.9)  # trained again from its first epoch
    restarted, rows = reader.read()
    assert restarted and [(r["epoch"], r["train_loss"]) for r in rows] == [(1, 0.9)]
    write_rows(tmp_path, 0.9, 0.8)  # ... and it goes on from there
    assert [row["epoch"] for row in reader.read()[1]] == [2]


def test_a_follower_says_restart_then_the_new_epochs(tmp_path):
    write_rows(tmp_path, 2.0, 1.5)
    follower = Follower(tmp_path)
    looks = iter([True, True, False])
    follower.running = lambda: next(looks)
    first = follower.poll()
    write_rows(tmp_path, 0.9)
    second = follower.poll()
    third = follower.poll()
    assert [e.epoch for e in first] == [1, 2]
    assert isinstance(second[0], Restart) and [e.epoch for e in second[1:]] == [1]
    assert third == [Ended(folder_outcome(tmp_path), 1)] and follower.ended


def test_a_stopped_training_resumed_as_a_job_ends_as_the_uninterrupted_run(tmp_path, digits):
    """``resume`` continues from last.* in a child: the epochs saved are replayed, the rest follow,
    and history and weights are those of the same seed trained without a stop."""
    from convlens.checkpoint import load_checkpoint
    from convlens.train import TrainConfig, fit
    from convlens.train.follow import interrupted_at
    from convlens.train.jobs import NotResumable, resume
    from testing_helpers import StopAfter

    config = TrainConfig(epochs=2, seed=2)
    whole = fit(digits, config, tmp_path / "whole")
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C once epoch 1 is saved
        fit(digits, config, cut, observer=StopAfter(1))
    assert interrupted_at(cut) == 1 and interrupted_at(tmp_path / "whole") is None
    job = resume(cut, threads=torch.get_num_threads())  # the reference's threads: the same sums, bit for bit
    events = list(follow(cut, job, poll_s=0.05))
    assert [e.epoch for e in events[:-1]] == [1, 2] and all(e.planned_epochs == 2 for e in events[:-1])
    assert events[-1] == Ended(JobOutcome("finished"), 2)
    assert interrupted_at(cut) is None

    def timeless(rows):
        return [{k: v for k, v in row.items() if "second" not in k} for row in rows]

    resumed = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert timeless(resumed) == timeless(whole.history)
    model_whole, _ = load_checkpoint(tmp_path / "whole")
    model_cut, _ = load_checkpoint(cut)
    for (name, a), (_, b) in zip(
        model_whole.state_dict().items(), model_cut.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(NotResumable, match="has finished; there is nothing to resume") as raised:
        resume(cut)
    assert raised.value.parameter == "run_folder" and raised.value.why.startswith("has finished")


def test_resume_refuses_a_folder_with_no_epoch_saved_one_in_training_and_a_path_for_a_server(
    tmp_path, digits
):
    import shutil

    from convlens.runlock import RunLock
    from convlens.train import TrainConfig, fit
    from convlens.train.jobs import NotResumable, resumable_data, resume
    from testing_helpers import StopAfter

    (tmp_path / "empty").mkdir()
    with pytest.raises(NotResumable, match="saved no epoch"):
        resume(tmp_path / "empty")
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(digits, TrainConfig(epochs=2), cut, observer=StopAfter(1))
    with RunLock(cut), pytest.raises(NotResumable, match="is training now"):
        resume(cut)
    assert resumable_data(cut) == "digits"
    folder_data = tmp_path / "cut-on-a-path"
    shutil.copytree(cut, folder_data)
    last = json.loads((folder_data / "last.json").read_text())
    last["dataset"]["spec"] = str(tmp_path / "images")
    (folder_data / "last.json").write_text(json.dumps(last))
    assert resumable_data(folder_data) == str(tmp_path / "images")  # from Python, a path is data
    with pytest.raises(NotResumable, match="not a built-in data set"):
        resumable_data(folder_data, builtin_only=True)
