"""Learning playground speed: epochs per second of the default network, updates per second the
explorer pushes to a page, and the spiral's time to 90 % test accuracy.

    python bench/playground_speed.py            # 3 seeds, a 6-second stream
    python bench/playground_speed.py --quick    # 1 seed, a 3-second stream

Default network: spiral, features x1 and x2, hidden 8,8,8, tanh, Adam lr 0.01, batch 10, 250
training points (25 steps an epoch); everything runs on one PyTorch thread, as the explorer
does. Baseline in the same run: a plain PyTorch loop over the same network, optimizer and
batches with no per-epoch evaluation, so the ratio says what the Trainer's bookkeeping costs.
The stream is read by an httpx client in this process from the explorer served by uvicorn on
127.0.0.1 (a background thread). The matmul peak and the CPU pressure (before and after) say
how busy the machine was: pressure well above 0 means other processes shared the cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, matmul_peak_gflops, median
from convlens.playground2d import PlaygroundConfig, Trainer

PAGE = "bench-playground"


def trainer_epochs_per_second(seconds: float) -> float:
    trainer = Trainer(PlaygroundConfig())
    trainer.train_epoch()  # warm up
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        trainer.train_epoch()
        done += 1
    return done / (time.perf_counter() - start)


def plain_loop_epochs_per_second(seconds: float) -> float:
    """The same network, optimizer and batches in a bare loop: no evaluation, no history."""
    trainer = Trainer(PlaygroundConfig())  # only for its network, points and optimizer
    network, optimizer, loss = trainer.network, trainer.optimizer, trainer.loss
    inputs, labels = trainer.train_inputs, trainer.points.train_labels
    generator = torch.Generator().manual_seed(0)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(labels), generator=generator)
        for first in range(0, len(labels), 10):
            batch = order[first : first + 10]
            value = loss(network(inputs[batch])[:, 0], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        done += 1
    return done / (time.perf_counter() - start)


def time_to_90(seed: int, max_epochs: int = 1000) -> tuple[int | None, float]:
    """(epochs, training seconds) until the spiral's test accuracy first reaches 90 %."""
    trainer = Trainer(PlaygroundConfig(seed=seed))
    for _ in range(max_epochs):
        if trainer.train_epoch()["test_accuracy"] >= 0.9:
            return trainer.epoch, trainer.seconds
    return None, trainer.seconds


def stream_rate(seconds: float) -> dict:
    """Updates, epochs and bytes per second one page receives while its network trains."""
    import httpx

    from convlens.server.background import BackgroundServer

    with tempfile.TemporaryDirectory() as runs_dir, BackgroundServer([], runs_dir=runs_dir) as url:
        httpx.post(f"{url}api/playground2d/start", json={"page": PAGE}, timeout=60).raise_for_status()
        updates, received, first_epoch, last_epoch = 0, 0, None, 0
        start = time.perf_counter()
        with httpx.stream("GET", f"{url}api/playground2d/{PAGE}/stream", timeout=60) as response:
            for line in response.iter_lines():
                received += len(line) + 1
                if line.startswith("data:") and "epoch" in (event := json.loads(line[len("data:") :])):
                    epoch = event["epoch"]
                    first_epoch = epoch if first_epoch is None else first_epoch
                    last_epoch = epoch
                    updates += 1
                if time.perf_counter() - start >= seconds:
                    break
        elapsed = time.perf_counter() - start
    return {
        "updates_per_second": updates / elapsed,
        "epochs_per_second": (last_epoch - (first_epoch or 0)) / elapsed,
        "megabytes_per_second": received / elapsed / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, a 3-second stream")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    stream_seconds = 3.0 if args.quick else 6.0
    print(f"cpu pressure before: {cpu_pressure()}")
    torch.set_num_threads(1)
    peak = matmul_peak_gflops()
    trainer_rate = trainer_epochs_per_second(3.0)
    plain_rate = plain_loop_epochs_per_second(3.0)
    reached = [time_to_90(seed) for seed in seeds]
    stream = stream_rate(stream_seconds)
    print(f"cpu pressure after:  {cpu_pressure()}")
    print(f"\nfp32 matmul peak (1 thread): {peak:.0f} GFLOP/s")
    print(
        f"default network, 1 thread: {trainer_rate:.0f} epochs/s with the Trainer, "
        f"{plain_rate:.0f} epochs/s in a plain loop ({plain_rate / trainer_rate:.2f}x)"
    )
    print(
        f"stream to one page ({stream_seconds:.0f} s): {stream['updates_per_second']:.1f} updates/s "
        f"(target >= 10), {stream['epochs_per_second']:.0f} epochs/s, {stream['megabytes_per_second']:.2f} MB/s"
    )
    for seed, (epochs, seconds) in zip(seeds, reached, strict=True):
        shown = (
            f"{epochs} epochs, {seconds:.2f} s of training"
            if epochs
            else f"not within 1000 epochs ({seconds:.1f} s)"
        )
        print(f"spiral to 90 % test accuracy, seed {seed}: {shown}")
    times = [seconds for epochs, seconds in reached if epochs]
    if times:
        print(f"median time to 90 %: {median(times):.2f} s ({len(times)}/{len(seeds)} seeds reached it)")


if __name__ == "__main__":
    main()
