"""Training from the explorer: POST /api/train starts a training job (convlens.train.jobs) in a
child process, its events stream one per epoch then done, DELETE stops it resumably, a stopped
one is listed with its epoch and POST .../resume continues it to the end, a body
that breaks the schema is a 422 and a bad value a 400, each naming the request's field, too
many at once is 429; runs written by a separate training are followed; the per-epoch
snapshots are what the model really held (checked against last.* and a fresh initialization).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.server import create_app
from convlens.server.background import BackgroundServer
from testing_helpers import unpacked


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """An explorer with no run yet, training into its own runs dir, one training at a time."""
    runs_dir = tmp_path_factory.mktemp("served") / "runs"
    with BackgroundServer([], runs_dir=runs_dir, max_trainings=1) as url:
        yield url, runs_dir


def start(url: str, **body) -> httpx.Response:
    return httpx.post(url + "api/train", json=body, timeout=60)


def events(url: str, run_id: str, first_only: bool = False) -> list[dict]:
    """The events of a run's stream, up to done (or only the first with ``first_only``)."""
    found = []
    with httpx.stream("GET", f"{url}api/train/{run_id}/events", timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[len("data: ") :]))
                if first_only or found[-1].get("done"):
                    break
    return found


def test_post_train_streams_each_epoch_then_done_and_the_run_joins(explorer, digits):
    from convlens.checkpoint import read_checkpoint
    from convlens.data import to_float
    from convlens.inspect import activations
    from convlens.models import create_model
    from convlens.train.snapshots import first_convolution
    from convlens.views.maps import map_limits

    url, runs_dir = explorer
    answer = start(url, data="digits", model="convnet", epochs=3, seed=1)
    assert answer.status_code == 202
    run_id = answer.json()["id"]
    stream = events(url, run_id)
    epochs, done = stream[:-1], stream[-1]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all({"train_loss", "test_accuracy", "snapshot"} <= set(e) and e["id"] == run_id for e in epochs)
    assert done == {**done, "id": run_id, "done": True, "status": "finished", "run": run_id}
    assert run_id in [run["id"] for run in httpx.get(url + "api/runs").json()]
    assert [e["epoch"] for e in events(url, run_id)[:-1]] == [1, 2, 3]  # a finished run replays

    # the snapshots are the model's real weights and feature maps at that epoch
    folder = runs_dir / run_id
    index = httpx.get(f"{url}api/train/{run_id}/snapshots").json()
    assert index["epochs"] == [0, 1, 2, 3] and index["stage"] == "conv1"
    probe = torch.from_numpy(unpacked(index["probe"]["input"]).copy())
    assert torch.equal(probe, to_float(digits.test_images[0]))
    last = httpx.get(f"{url}api/train/{run_id}/snapshots/3").json()
    _, model, _, _ = read_checkpoint(folder / "last.json")  # last.* holds epoch 3's weights
    conv = first_convolution(model)[2]
    assert torch.equal(torch.from_numpy(unpacked(last["kernels"]).copy()), conv.weight.detach())
    maps = torch.from_numpy(unpacked(last["feature_maps"]).copy())
    torch.testing.assert_close(maps, activations(model, probe)["conv1"], rtol=1e-5, atol=1e-5)
    # the page draws them with the library's colour limits, signed around 0
    assert last["kernel_limits"] == map_limits(conv.weight.detach(), signed=True)
    assert last["feature_map_limits"]["signed"] and last["feature_map_limits"]["low"] < 0
    # epoch 0 is the initialization: the same seed builds the same kernels
    torch.manual_seed(1)
    fresh = create_model("convnet", digits.input_shape, digits.num_classes, digits.mean, digits.std)
    first = httpx.get(f"{url}api/train/{run_id}/snapshots/0").json()
    assert torch.equal(
        torch.from_numpy(unpacked(first["kernels"]).copy()), first_convolution(fresh)[2].weight
    )
    missing = httpx.get(f"{url}api/train/{run_id}/snapshots/9")
    assert missing.status_code == 400 and "0..3" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b'{"data": "nope"}', 400, "data: unknown data set 'nope'; choose one of: digits"),
        (b'{"data": "/etc"}', 400, "data: unknown data set '/etc'"),  # a client never names a path
        (b'{"data": "digits", "model": "nope"}', 400, "model: unknown model 'nope'"),
        (b'{"data": "digits", "epochs": 0}', 400, "epochs must be a whole number 1..100, got 0"),
        (b'{"data": "digits", "epochs": 101}', 400, "epochs must be a whole number 1..100"),
        (b'{"data": "digits", "batch_size": 5000}', 400, "batch_size must be a whole number 1..1024"),
        (b'{"data": "digits", "lr": -1}', 400, "lr must be a number in (0, 10]"),
        (b'{"data": "digits", "seed": 1' + b"0" * 400 + b"}", 400, "seed must be a whole number 0.."),
        (b'{"data": "digits", "page": "../x"}', 400, "page: expected the page's id"),
        (b'{"data": "digits", "epochs": "4"}', 422, "epochs: Input should be a valid integer"),
        (b'{"data": "digits", "epochs": true}', 422, "epochs: Input should be a valid integer"),
        (b'{"data": "digits", "out": "/etc"}', 422, "out: Extra inputs are not permitted"),
        (b"{bad json", 422, "JSON decode error"),
        (b"[1, 2]", 422, "Input should be a valid dictionary"),
        (b"[" * 100_000, 400, "error parsing the body"),  # nested too deep for the parser
        (b"{}", 422, "data: Field required"),
    ],
)
def test_bad_training_requests_are_one_line_naming_the_field(explorer, body, status, expected):
    url, _ = explorer
    answer = httpx.post(url + "api/train", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == status
    detail = answer.json()["detail"]
    assert expected in detail and "\n" not in detail and "--" not in detail


def test_the_body_schema_is_the_jobs_fields_with_their_bounds(explorer):
    from convlens.train.jobs import MAX_EPOCHS, TrainJob

    url, _ = explorer
    schema = httpx.get(url + "openapi.json").json()
    body = schema["paths"]["/api/train"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    fields = [spec.name for spec in dataclasses.fields(TrainJob)]
    assert list(body["properties"]) == [*fields, "page"] and body["required"] == ["data"]
    assert body["additionalProperties"] is False
    assert (body["properties"]["epochs"]["minimum"], body["properties"]["epochs"]["maximum"]) == (
        1,
        MAX_EPOCHS,
    )
    assert body["properties"]["lr"]["exclusiveMinimum"] == 0


def test_delete_stops_resumably_and_a_second_training_is_429_or_replaces(explorer, digits):
    from convlens.train import TrainConfig, fit

    url, runs_dir = explorer
    # batches of 1: a few seconds an epoch, so the training is still running when it is stopped
    # (two epochs after the first one's event: a stop after the final model.json says "finished")
    first = start(url, data="digits", epochs=3, batch_size=1, page="page-aaaa").json()["id"]
    assert events(url, first, first_only=True)[0]["epoch"] == 1
    busy = start(url, data="digits", epochs=4, page="page-bbbb")
    assert busy.status_code == 429 and "at once" in busy.json()["detail"]
    foreign = httpx.delete(f"{url}api/train/{first}", headers={"Origin": "http://elsewhere.example"})
    assert foreign.status_code == 403
    stopped = httpx.delete(f"{url}api/train/{first}", timeout=60).json()
    assert stopped["status"] == "stopped" and stopped["resumable"] is True
    done = events(url, first)[-1]
    assert done["status"] == "stopped" and done["resumable"] is True and done["run"] is None
    assert not (runs_dir / first / "training.lock").exists()
    resumed = fit(digits, TrainConfig(epochs=3, batch_size=1), runs_dir / first, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]

    # the same page asking again replaces its running training instead of being refused
    # (batches of 1 again: a stop that lands after the final model.json reports "finished")
    second = start(url, data="digits", epochs=4, batch_size=1, page="page-aaaa").json()["id"]
    assert events(url, second, first_only=True)[0]["epoch"] == 1  # running, its SIGINT handler set
    third = start(url, data="digits", epochs=4, batch_size=1, page="page-aaaa")
    assert third.status_code == 202
    assert events(url, second)[-1]["status"] == "stopped"
    assert events(url, third.json()["id"], first_only=True)[0]["epoch"] == 1
    assert httpx.delete(f"{url}api/train/{third.json()['id']}", timeout=60).json()["status"] == "stopped"


def test_a_stopped_training_is_listed_watchable_and_resumes_to_the_end(explorer, digits):
    """A training interrupted after epoch 1 of 2 (as a stop or a reload leaves it) is listed as
    stopped with its epoch, replays its epoch and snapshots, and POST .../resume continues it in
    its own folder to a finished run; what cannot be resumed is refused naming why."""
    from convlens.train import TrainConfig, fit
    from testing_helpers import StopAfter

    url, runs_dir = explorer
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C once epoch 1 is saved
        fit(digits, TrainConfig(epochs=2, seed=4), runs_dir / "cut", observer=StopAfter(1))
    (runs_dir / "nothing-saved").mkdir()
    deadline = time.monotonic() + 30
    while "cut" not in (listed := {s["id"]: s for s in httpx.get(url + "api/train").json()["stopped"]}):
        assert time.monotonic() < deadline  # the runs dir is looked at again within a second
        time.sleep(0.2)
    assert listed["cut"] == {
        "id": "cut",
        "epoch": 1,
        "epochs": 2,
        "status": "stopped",
        "resumable": True,
        "message": "interrupted; it resumes from its last saved epoch",
        "folder": str(runs_dir / "cut"),
        "data": "digits",
    }
    assert "nothing-saved" not in listed  # nothing to resume there
    assert httpx.get(f"{url}api/train/cut/snapshots").json()["epochs"] == [0, 1]
    replay = events(url, "cut")
    assert [e["epoch"] for e in replay[:-1]] == [1]
    assert replay[-1] == {**replay[-1], "status": "stopped", "resumable": True, "run": None}

    foreign = httpx.post(
        f"{url}api/train/cut/resume", json={}, headers={"Origin": "http://elsewhere.example"}
    )
    assert foreign.status_code == 403
    answer = httpx.post(f"{url}api/train/cut/resume", json={"page": "page-resume"}, timeout=60)
    assert answer.status_code == 202
    assert answer.json() == {"id": "cut", "events": "/api/train/cut/events"}
    twice = httpx.post(f"{url}api/train/cut/resume", timeout=60)  # no body: no page
    assert (
        twice.status_code == 409
        and twice.json()["detail"] == "run 'cut' is training now; stop it first or wait for it to end"
    )
    stream = events(url, "cut")
    assert [e["epoch"] for e in stream[:-1]] == [1, 2] and stream[0]["epochs"] == 2
    assert stream[-1] == {**stream[-1], "status": "finished", "epochs_done": 2, "run": "cut"}
    rows = (runs_dir / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
    listing = httpx.get(url + "api/train").json()
    assert "cut" in listing["runs"] and "cut" not in [s["id"] for s in listing["stopped"]]

    for run_id, status, detail in [
        ("cut", 409, "run 'cut' has finished; there is nothing to resume"),
        ("nothing-saved", 409, "run 'nothing-saved' saved no epoch; there is nothing to resume"),
        ("no-such-run", 404, "no run 'no-such-run'"),
    ]:
        refused = httpx.post(f"{url}api/train/{run_id}/resume", json={}, timeout=60)
        assert refused.status_code == status and refused.json()["detail"].startswith(detail), refused.json()
        assert "\n" not in refused.json()["detail"] and "--" not in refused.json()["detail"]
    for body, status, detail in [
        ({"page": "../x"}, 400, "page: expected the page's id"),
        ({"data": "digits"}, 422, "data: Extra inputs are not permitted"),
    ]:
        refused = httpx.post(f"{url}api/train/cut/resume", json=body, timeout=60)
        assert refused.status_code == status and detail in refused.json()["detail"]


def test_a_run_written_by_another_training_is_followed(explorer, digits):
    from convlens.train import TrainConfig, fit

    url, runs_dir = explorer
    thread = threading.Thread(target=fit, args=(digits, TrainConfig(epochs=2), runs_dir / "outside"))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}api/train/outside/snapshots").status_code == 404:  # not seen yet
            assert time.monotonic() < deadline
            time.sleep(0.2)
        stream = events(url, "outside")
    finally:
        thread.join()
    assert [e["epoch"] for e in stream[:-1]] == [1, 2]
    assert stream[-1]["status"] == "finished" and stream[-1]["run"] == "outside"
    assert "outside" in [run["id"] for run in httpx.get(url + "api/runs").json()]
    refused = httpx.delete(f"{url}api/train/outside")
    assert refused.status_code == 409 and "not started from this explorer" in refused.json()["detail"]


def test_runs_dir_folders_join_and_broken_ones_are_skipped(digits_run, tmp_path, caplog, monkeypatch):
    import logging
    import shutil

    from convlens.server.runs import RunStore

    store = RunStore([], tmp_path)
    assert store.summaries() == []
    shutil.copytree(digits_run, tmp_path / "copied")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{not json")
    monkeypatch.setattr(logging.getLogger("convlens"), "propagate", True)  # the CLI's main() turns it off
    with caplog.at_level(logging.WARNING, logger="convlens"):
        store.refresh(force=True)
    assert [run["id"] for run in store.summaries()] == ["copied"]
    assert "broken" in store.folders() and "not loaded" in caplog.text


def test_training_needs_a_runs_dir(digits_run):
    client = TestClient(create_app([digits_run], allowed_hosts=["testserver"]))
    answer = client.post("/api/train", json={"data": "digits", "epochs": 1})
    assert answer.status_code == 409 and "runs folder" in answer.json()["detail"]
    run_id = client.get("/api/runs").json()[0]["id"]
    answer = client.post(f"/api/train/{run_id}/resume", json={})
    assert answer.status_code == 409 and "runs folder" in answer.json()["detail"]
    assert client.get("/api/train").json()["stopped"] == []
    assert client.get("/api/train").json()["runs_dir"] is None


def stream_of(folder, running) -> list[dict]:
    """The events ``train_api.epoch_events`` sends for ``folder``, asking ``running`` each look."""
    import asyncio
    import concurrent.futures

    from convlens.server.runs import RunStore
    from convlens.server.train_api import epoch_events
    from convlens.train.follow import Follower

    async def collect() -> list[dict]:
        async def connected() -> bool:
            return False

        # built on a worker thread: loading the folder is work the event loop must not do
        follower, store = await asyncio.to_thread(lambda: (Follower(folder), RunStore([], folder)))
        follower.running = running
        stream = epoch_events("again", follower, store, lambda: False, connected)
        return [json.loads(event[len("data: ") :]) async for event in stream]

    # a thread of its own: Playwright's sync API, once a browser test has run, leaves an event loop
    # running in the test thread, and everything done there would count as done on a loop
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(collect())).result()


def write(folder, *losses: float) -> None:
    rows = [{"epoch": i + 1, "train_loss": loss, "test_loss": loss} for i, loss in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_folder_trained_again_from_epoch_1_restarts_its_stream(tmp_path):
    calls = []

    def running() -> bool:  # asked once per look at the folder
        calls.append(1)
        if len(calls) == 2:
            write(tmp_path, 0.9)  # convlens train --overwrite: a new run's first epoch
        return len(calls) < 3

    write(tmp_path, 2.0, 1.5, 1.2)
    found = stream_of(tmp_path, running)
    assert [(e.get("epoch"), e.get("train_loss"), e.get("restart"), e.get("done")) for e in found] == [
        (1, 2.0, None, None),
        (2, 1.5, None, None),
        (3, 1.2, None, None),
        (None, None, True, None),
        (1, 0.9, None, None),
        (None, None, None, True),
    ]
    assert found[-1] == {**found[-1], "status": "stopped", "epochs_done": 1, "run": None}


def test_following_a_folder_reads_it_off_the_event_loop(tmp_path, monkeypatch):
    import asyncio

    from convlens.server.runs import RunStore
    from convlens.train.follow import Follower

    on_the_loop = []

    def off_loop(function):
        def call(*args, **kwargs):
            try:
                asyncio.get_running_loop()
                on_the_loop.append(function.__name__)  # would stall every other request
            except RuntimeError:
                pass  # a worker thread
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(Follower, "poll", off_loop(Follower.poll))  # reads the folder, judges the end
    monkeypatch.setattr(RunStore, "refresh", off_loop(RunStore.refresh))  # loads the finished model
    write(tmp_path, 0.5)
    found = stream_of(tmp_path, lambda: False)
    assert [(e.get("epoch"), e.get("status")) for e in found] == [(1, None), (None, "stopped")]
    assert on_the_loop == []


def test_a_run_whose_tensors_land_after_its_json_joins_once_they_do(digits_run, tmp_path):
    import shutil

    from convlens.run import Run
    from convlens.server.runs import RunStore

    runs_dir = tmp_path / "runs"
    shutil.copytree(digits_run, runs_dir / "late")
    tensors = runs_dir / "late" / "model.safetensors"
    tensors.rename(tmp_path / "aside.safetensors")  # a save between committing model.json and its tensors
    store = RunStore([], runs_dir)
    assert "late" in store.folders() and "late" not in store.runs
    (tmp_path / "aside.safetensors").rename(tensors)  # the save's last rename
    store.refresh(force=True)
    assert "late" in store.runs
    assert store.get("late").run.test_accuracy == Run.open(digits_run).test_accuracy


def child_trainings(runs_dir, monkeypatch, script: str, at_once: int):
    """``Trainings`` whose jobs run the Python ``script`` instead of training."""
    import subprocess
    import sys

    from convlens.server.runs import RunStore
    from convlens.server.training import Trainings
    from convlens.train.jobs import TrainingJob

    trainings = Trainings(RunStore([], runs_dir), at_once=at_once)

    def spawn(job, folder) -> TrainingJob:
        return TrainingJob(folder, subprocess.Popen([sys.executable, "-c", script]))

    monkeypatch.setattr(trainings, "_start", spawn)
    return trainings


def test_trainings_can_be_listed_while_another_starts(tmp_path, monkeypatch):
    from convlens.train.jobs import TrainJob

    trainings = child_trainings(tmp_path, monkeypatch, "import time; time.sleep(60)", at_once=2)
    try:
        first = trainings.start(TrainJob("digits"))
        listing = iter(trainings.trainings.values())  # GET /api/train going over them ...
        assert next(listing) is first
        second = trainings.start(TrainJob("digits"))  # ... while another page starts one
        assert list(listing) == []  # the listing it began with: no "changed size during iteration"
        assert {t.run_id for t in trainings.running()} == {first.run_id, second.run_id}
    finally:
        trainings.shut_down()
    assert not trainings.running()


def test_a_stopping_server_interrupts_each_training_once(tmp_path, monkeypatch):
    from convlens.train.jobs import TrainJob

    said = tmp_path / "said.txt"
    script = f"""
import signal, time
said = open({str(said)!r}, "a", buffering=1)
asked = []
signal.signal(signal.SIGINT, lambda *_: (asked.append(1), said.write("SIGINT\\n")))
said.write("ready\\n")
while not asked:
    time.sleep(0.01)
time.sleep(0.5)  # finishing its batch and saving: a second SIGINT would land here
"""
    (tmp_path / "runs").mkdir()
    trainings = child_trainings(tmp_path / "runs", monkeypatch, script, at_once=1)
    training = trainings.start(TrainJob("digits"))
    deadline = time.monotonic() + 30
    while not said.is_file() or "ready" not in said.read_text():
        assert time.monotonic() < deadline and training.running
        time.sleep(0.02)
    trainings.close()  # Ctrl-C at the server: the streams end, the children are asked to stop
    time.sleep(0.2)  # the server closes its connections
    trainings.shut_down()  # then its last step waits for the children
    assert said.read_text().splitlines() == ["ready", "SIGINT"]
    assert training.job.process.returncode == 0  # it ended by itself, after its batch: not killed


def test_a_training_starting_while_the_server_stops_is_stopped_too(tmp_path, monkeypatch):
    from convlens.server.streams import TooManyTrainings
    from convlens.train.jobs import TrainJob

    trainings = child_trainings(tmp_path, monkeypatch, "import time; time.sleep(60)", at_once=1)
    spawn, spawning, may_spawn = trainings._start, threading.Event(), threading.Event()

    def slow_spawn(job, folder):  # a start that has passed its checks and is launching its child
        spawning.set()
        may_spawn.wait(10)
        return spawn(job, folder)

    monkeypatch.setattr(trainings, "_start", slow_spawn)
    starting = threading.Thread(target=trainings.start, args=(TrainJob("digits"),))
    starting.start()
    assert spawning.wait(10)
    stopping = threading.Thread(target=trainings.shut_down)
    stopping.start()
    time.sleep(0.2)
    may_spawn.set()
    starting.join(10)
    stopping.join(30)
    assert not stopping.is_alive() and not trainings.running()  # no child outlives the server
    with pytest.raises(TooManyTrainings, match="stopping"):
        trainings.start(TrainJob("digits"))


def test_the_server_forgets_the_oldest_ended_trainings_but_never_a_running_one(tmp_path, monkeypatch):
    import subprocess
    import sys

    import convlens.server.training as training_module
    from convlens.server.runs import RunStore
    from convlens.server.training import Training, Trainings
    from convlens.train.jobs import TrainingJob

    monkeypatch.setattr(training_module, "KEPT_ENDED", 2)
    trainings = Trainings(RunStore([], tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        trainings._remember(Training("busy", TrainingJob(tmp_path, running), None))
        for number in range(4):
            trainings._remember(Training(f"done{number}", TrainingJob(tmp_path, ended), None))
        assert list(trainings.trainings) == ["busy", "done1", "done2", "done3"]  # 2 ended + the new one
    finally:
        running.kill()
        running.wait()


def test_convlens_train_stops_on_sigint_though_started_with_sigint_ignored_when_told(tmp_path, digits):
    """A script that stops `convlens train` with SIGINT from a background job sets CONVLENS_STOP_ON_SIGINT
    (the explorer's own jobs take SIGINT back by themselves: test_train_jobs.py)."""
    import signal
    import subprocess
    import sys

    from convlens.process import SIGINT_VARIABLE

    run = tmp_path / "run"
    command = [sys.executable, "-m", "convlens", "train", "--data", "digits", "--epochs", "50"]
    child = subprocess.Popen(
        [*command, "--batch-size", "1", "--no-snapshots", "--out", str(run)],
        env={**os.environ, SIGINT_VARIABLE: "1"},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a background job's
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.json").is_file():  # one epoch saved: the stop must leave it resumable
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)  # ignored, it would run its 50 epochs
    finally:
        child.kill()
    assert child.returncode == 2 and "interrupted; continue with" in err and "--resume" in err, err
    assert not (run / "model.json").exists()
