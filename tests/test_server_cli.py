"""`convlens serve`: clear errors for bad folders and ports, a warning off loopback, and a real
server that answers and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from convlens.cli.serve_cmd import explorer_url, is_loopback

CONVLENS = [sys.executable, "-m", "convlens"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CONVLENS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("::", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_explorer_url():
    assert explorer_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert explorer_url("0.0.0.0", 80) == "http://127.0.0.1:80/"
    assert explorer_url("::1", 8080) == "http://[::1]:8080/"


def test_serve_missing_folder_is_exit_2(tmp_path):
    result = run_cli("serve", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "convlens: error:" in result.stderr and "no checkpoint here" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_bad_port_is_exit_2(digits_run):
    result = run_cli("serve", str(digits_run), "--port", "70000")
    assert result.returncode == 2 and "--port must be 1..65535" in result.stderr


def test_serve_port_in_use_is_exit_2(digits_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", str(digits_run), "--port", str(port))
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_non_loopback_host_warns(digits_run, monkeypatch, capsys):
    import uvicorn

    from convlens.cli.serve_cmd import serve_runs

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets))
    serve_runs([digits_run], host="0.0.0.0", port=free_port())  # bound, never listening
    for sock in served[0]:
        sock.close()
    assert "not loopback" in capsys.readouterr().err


def test_serve_answers_and_stops_on_ctrl_c(digits_run):
    port = free_port()
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(
        [*CONVLENS, "serve", str(digits_run), "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        banner = process.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in banner and "not loopback" not in banner
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as response:
                    runs = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert runs[0]["id"] == Path(digits_run).name
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_demo_no_serve_exits_after_training(tmp_path):
    result = run_cli("demo", "--no-serve", "--out", str(tmp_path / "demo"), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert "explorer" not in result.stderr and (tmp_path / "demo" / "model.json").is_file()
