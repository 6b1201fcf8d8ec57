"""Training from the explorer: POST /api/train starts `convlens train` in a child process, its
events stream one per epoch then done, DELETE stops it resumably, bad input is one 400 line,
too many at once is 429; runs written by a separate training are followed; the per-epoch
snapshots are what the model really held (checked against last.* and a fresh initialization).
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from convlens.server import create_app
from convlens.server.background import BackgroundServer
from convlens.server.encode import unpacked


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
    ("body", "expected"),
    [
        (b'{"data": "nope"}', "unknown data set 'nope'"),
        (b'{"data": "digits", "model": "nope"}', "unknown model 'nope'"),
        (b'{"data": "digits", "epochs": 0}', "epochs must be a whole number 1..100"),
        (b'{"data": "digits", "epochs": 101}', "epochs must be a whole number 1..100"),
        (b'{"data": "digits", "epochs": "4"}', "epochs must be a whole number"),
        (b'{"data": "digits", "lr": -1}', "lr must be a number"),
        (b'{"data": "digits", "out": "/etc"}', "unknown option 'out'"),
        (b'{"data": "digits", "page": "../x"}', "page must be"),
        (b"{bad json", "body must be a JSON object"),
        (b"[1, 2]", "body must be a JSON object"),
        (b"{}", "data: choose a built-in data set"),
    ],
)
def test_bad_training_requests_are_one_line_400s(explorer, body, expected):
    url, _ = explorer
    answer = httpx.post(url + "api/train", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert expected in detail and "\n" not in detail


def test_delete_stops_resumably_and_a_second_training_is_429_or_replaces(explorer, digits):
    from convlens.train import TrainConfig, fit

    url, runs_dir = explorer
    first = start(url, data="digits", epochs=2, page="page-a").json()["id"]
    assert events(url, first, first_only=True)[0]["epoch"] == 1
    busy = start(url, data="digits", epochs=4, page="page-b")
    assert busy.status_code == 429 and "at once" in busy.json()["detail"]
    foreign = httpx.delete(f"{url}api/train/{first}", headers={"Origin": "http://elsewhere.example"})
    assert foreign.status_code == 403
    stopped = httpx.delete(f"{url}api/train/{first}", timeout=60).json()
    assert stopped["status"] == "stopped" and stopped["resumable"] is True
    done = events(url, first)[-1]
    assert done["status"] == "stopped" and done["resumable"] is True and done["run"] is None
    assert not (runs_dir / first / "training.lock").exists()
    resumed = fit(digits, TrainConfig(epochs=2), runs_dir / first, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]

    # the same page asking again replaces its running training instead of being refused
    second = start(url, data="digits", epochs=4, page="page-a").json()["id"]
    third = start(url, data="digits", epochs=4, page="page-a")
    assert third.status_code == 202
    assert events(url, second)[-1]["status"] == "stopped"
    assert httpx.delete(f"{url}api/train/{third.json()['id']}", timeout=60).json()["status"] == "stopped"


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
    assert client.get("/api/train").json()["runs_dir"] is None


def test_a_folder_trained_again_from_epoch_1_restarts_its_stream(tmp_path):
    import asyncio
    import concurrent.futures

    from convlens.server.follow import epoch_events

    def write(*losses: float) -> None:
        rows = [{"epoch": i + 1, "train_loss": loss, "test_loss": loss} for i, loss in enumerate(losses)]
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    calls = []

    def running() -> bool:  # asked once per look at the folder
        calls.append(1)
        if len(calls) == 2:
            write(0.9)  # convlens train --overwrite: a new run's first epoch
        return len(calls) < 3

    async def collect() -> list[dict]:
        async def connected() -> bool:
            return False

        stream = epoch_events(
            "again", tmp_path, running, lambda: {"status": "finished"}, list, lambda: False, connected
        )
        return [json.loads(event[len("data: ") :]) async for event in stream]

    write(2.0, 1.5, 1.2)
    # a thread of its own: Playwright's sync API keeps an event loop running in the test thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        found = pool.submit(lambda: asyncio.run(collect())).result()
    assert [(e.get("epoch"), e.get("train_loss"), e.get("restart"), e.get("done")) for e in found] == [
        (1, 2.0, None, None),
        (2, 1.5, None, None),
        (3, 1.2, None, None),
        (None, None, True, None),
        (1, 0.9, None, None),
        (None, None, None, True),
    ]
