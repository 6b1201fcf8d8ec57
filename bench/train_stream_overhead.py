"""What training from the explorer costs on top of `convlens train`: the same training started
with POST /api/train on a running `convlens serve --runs-dir`, and followed to its last event
over the server-sent event stream, against `convlens train` alone, in one run.

    python bench/train_stream_overhead.py [--data mnist5k] [--epochs 6] [--repeats 3]

Each repeat runs, one after another: `convlens train` (snapshots on, the default), the same
with --no-snapshots (what the per-epoch snapshots cost), and the explorer's training. Both
sides are timed from start to finish as a user sees them: the process start to its exit, and
the POST to the stream's done event (which comes after the child has exited). The server
process is started once, before the timing, and idles otherwise. Medians and bests are
compared (on a shared machine the best of each is the least disturbed); CPU pressure is
printed before and after (a run with pressure well above 0 was disturbed).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, median

HOST = "127.0.0.1"  # loopback only
CONVLENS = [sys.executable, "-m", "convlens"]


def cli_seconds(data: str, epochs: int, out: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*CONVLENS, "train", "--data", data, "--epochs", str(epochs), "--out", str(out), "--json", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def start_server(runs_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [*CONVLENS, "serve", "--runs-dir", str(runs_dir), "--host", HOST, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "api/train", timeout=2).raise_for_status()
            return process, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the explorer did not start") from None
            time.sleep(0.2)


def explorer_seconds(url: str, runs_dir: Path, data: str, epochs: int) -> tuple[float, float, int]:
    """Seconds from POST /api/train to the done event, seconds from the child's last write
    (model.json) to the done event, and how many epoch events came."""
    started = time.perf_counter()
    answer = httpx.post(url + "api/train", json={"data": data, "epochs": epochs}, timeout=60)
    answer.raise_for_status()
    run_id, seen = answer.json()["id"], 0
    with httpx.stream("GET", f"{url}api/train/{run_id}/events", timeout=600) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: ") :])
            if event.get("done"):
                if event["status"] != "finished":
                    raise RuntimeError(f"training {run_id} ended: {event}")
                tail = time.time() - (runs_dir / run_id / "model.json").stat().st_mtime
                return time.perf_counter() - started, tail, seen
            seen += 1
    raise RuntimeError("the event stream ended without a done event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"pressure before: {cpu_pressure()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server, url = start_server(root / "served")
        cli, bare, explorer, tails = [], [], [], []
        try:
            for repeat in range(args.repeats):
                cli.append(cli_seconds(args.data, args.epochs, root / f"cli-{repeat}"))
                bare.append(cli_seconds(args.data, args.epochs, root / f"bare-{repeat}", "--no-snapshots"))
                seconds, tail, seen = explorer_seconds(url, root / "served", args.data, args.epochs)
                assert seen == args.epochs, f"{seen} epoch events for {args.epochs} epochs"
                explorer.append(seconds)
                tails.append(tail)
                print(
                    f"repeat {repeat + 1}: convlens train {cli[-1]:.2f} s, --no-snapshots {bare[-1]:.2f} s, "
                    f"explorer {explorer[-1]:.2f} s"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    for name, pick in (("median", median), ("best", min)):  # best: the least disturbed of each
        overhead = pick(explorer) / pick(cli) - 1
        snapshots = pick(cli) / pick(bare) - 1
        print(f"{args.data}, {args.epochs} epochs, {name} of {args.repeats}:")
        print(f"  convlens train                       {pick(cli):.2f} s")
        print(
            f"  convlens train --no-snapshots        {pick(bare):.2f} s  (snapshots cost {100 * snapshots:+.1f} %)"
        )
        print(
            f"  explorer: POST → done event (SSE)    {pick(explorer):.2f} s  "
            f"(overhead {100 * overhead:+.1f} %, target ≤ 10 %)"
        )
    print(f"model.json written → done event: median {median(tails):.2f} s, worst {max(tails):.2f} s")
    print(f"pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
