"""The explorer's guard reads a ``Host`` strictly, and a training's end says what happened.

``Host: [::1]evil`` was taken for ``[::1]`` (everything after the bracket was ignored); a port
that is not a number hid a foreign name the same way. Explorer trainings are library jobs: a
body that is not JSON starts nothing, and a child killed with SIGKILL ends with a message that
says so (it once read ``"s"``, a fragment of a progress bar).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from convlens.server import create_app
from convlens.train.jobs import TrainingJob


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    return TestClient(create_app([digits_run]), raise_server_exceptions=False)


@pytest.mark.parametrize("host", ["[::1]evil", "[::1]:evil", "[::1]:80x", "localhost:abc", "[::1"])
def test_a_malformed_host_is_not_this_server(client, host):
    response = client.get("/api/runs", headers={"host": host})
    assert response.status_code == 421 and "not this server" in response.text


@pytest.mark.parametrize("host", ["[::1]", "[::1]:8000", "localhost:8000"])
def test_well_formed_loopback_hosts_still_pass(client, host):
    assert client.get("/api/runs", headers={"host": host}).status_code == 200


def test_a_training_body_that_is_not_json_starts_nothing(client, tmp_path):
    response = client.post(
        "/api/train",
        content=b'{"data": "digits", "epochs": 1}',
        headers={"content-type": "text/plain", "host": "127.0.0.1"},
    )
    assert response.status_code == 422
    assert client.get("/api/train", headers={"host": "127.0.0.1"}).json()["trainings"] == []


def test_a_killed_training_says_it_was_killed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job = TrainingJob(tmp_path, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    outcome = job.outcome()
    assert outcome.status == "failed"
    assert outcome.message == f"the training process was killed by signal {signal.SIGKILL.value}"
