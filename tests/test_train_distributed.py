"""Data-parallel training: torchrun with 2 CPU processes (gloo on 127.0.0.1) against one process.

Run as a script under torchrun (``python -m torch.distributed.run --nproc-per-node 2
tests/test_train_distributed.py OUT``) this file is also the worker of the DDP-step test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError
from convlens.train import TrainConfig
from convlens.train.distributed import SINGLE_PROCESS, World, join_process_group
from testing_helpers import StopAfter

STEP_IMAGES = 16  # the global batch of the one-step test
EPOCH_IMAGES = 40  # the several-step test: batches of 16, 16 and 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(*args, nproc: int = 2) -> list[str]:
    """The command line of torchrun on this machine only, on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        *map(str, args),
    ]


def _environment() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo talks over the loopback interface only
    return env


def _train(out: Path, *flags, cwd: Path) -> subprocess.CompletedProcess:
    command = _torchrun("-m", "convlens", "train", "--data", "digits", "--out", out, *flags)
    return subprocess.run(command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=300)


# --- the data and model every test of a DDP step uses, built the same in every process ---


def _images_and_labels(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    images = (torch.rand(count, 1, 8, 8, generator=generator) * 255).to(torch.uint8)  # (N, 1, 8, 8)
    return images, torch.randint(0, 10, (count,), generator=generator)


def _model() -> torch.nn.Module:
    from convlens.models import create_model

    torch.manual_seed(3)
    return create_model("convnet", (1, 8, 8), 10, [0.5], [0.25])


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(batch_size=batch_size, augment="none", label_smoothing=0.1)


def _one_ddp_step(world: World) -> dict[str, torch.Tensor]:
    """One optimizer step on the global batch; with 2 processes each computes the loss of its half."""
    images, labels = _images_and_labels(STEP_IMAGES)
    half = STEP_IMAGES // world.size
    mine = slice(world.rank * half, (world.rank + 1) * half)
    model = _model()
    replica = world.replicate(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss = F.cross_entropy(replica(images[mine].float() / 255), labels[mine])
    loss.backward()
    optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _one_epoch(world: World) -> tuple[dict[str, torch.Tensor], dict]:
    """``train_one_epoch`` over EPOCH_IMAGES images in global batches of STEP_IMAGES."""
    from convlens.train.loop import _Silent, train_one_epoch

    images, labels = _images_and_labels(EPOCH_IMAGES)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(11)
    metrics = train_one_epoch(
        world.replicate(model),
        images,
        labels,
        optimizer,
        scheduler,
        _config(STEP_IMAGES),
        generator,
        _Silent(),
        world,
    )
    return {name: value.detach().clone() for name, value in model.state_dict().items()}, metrics


def _worker(out: Path) -> None:
    """Under torchrun: the DDP step and the sharded epoch; rank 0 saves the weights and metrics."""
    from safetensors.torch import save_file

    with join_process_group("cpu") as world:
        step = _one_ddp_step(world)
        epoch, metrics = _one_epoch(world)
        if world.is_main:
            save_file(step, out / "step.safetensors")
            save_file(epoch, out / "epoch.safetensors")
            (out / "metrics.json").write_text(json.dumps({**metrics, "world_size": world.size}))


def test_ddp_step_on_two_half_batches_equals_one_step_on_the_whole_batch(tmp_path):
    from safetensors.torch import load_file

    result = subprocess.run(
        _torchrun(Path(__file__).resolve(), tmp_path),
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reference = _one_ddp_step(SINGLE_PROCESS)  # the whole batch in this one process
    for name, value in load_file(tmp_path / "step.safetensors").items():
        torch.testing.assert_close(value, reference[name], atol=1e-6, rtol=0, msg=name)
    changed = sum(
        float((value - _model().state_dict()[name]).abs().sum()) for name, value in reference.items()
    )
    assert changed > 1e-3  # the step moved the weights: the comparison is not of two untouched models

    # train_one_epoch: each process trains its shard of every global batch, incl. the last partial one
    weights, metrics = _one_epoch(SINGLE_PROCESS)
    for name, value in load_file(tmp_path / "epoch.safetensors").items():
        torch.testing.assert_close(value, weights[name], atol=1e-6, rtol=0, msg=name)
    sharded = json.loads((tmp_path / "metrics.json").read_text())
    assert sharded["world_size"] == 2
    assert sharded["train_loss"] == pytest.approx(metrics["train_loss"], abs=1e-6)
    assert sharded["train_accuracy"] == metrics["train_accuracy"]


def test_shards_are_disjoint_and_make_up_each_batch():
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    batch = 8
    shards = [World(rank, 2).shard(order, batch, torch.Generator().manual_seed(5)) for rank in (0, 1)]
    assert all(shard.batch_size == 4 for shard in shards)
    steps = list(range(0, 12, 4))  # 23 images padded to 24: 3 steps of 4 per process
    for step, first in enumerate(steps):
        together = torch.cat([shard.order[first : first + 4] for shard in shards])
        expected = torch.cat([order, order[:1]])[step * batch : (step + 1) * batch]
        assert sorted(together.tolist()) == sorted(expected.tolist())
    assert set(shards[0].order.tolist()).isdisjoint(shards[1].order[:-1].tolist())  # but the 1 pad
    # the shared generator moves the same on every process; the augmentation draws differ
    one, two = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    first, second = World(0, 2).shard(order, batch, one), World(1, 2).shard(order, batch, two)
    assert torch.equal(one.get_state(), two.get_state())
    assert not torch.equal(
        torch.rand(4, generator=first.generator), torch.rand(4, generator=second.generator)
    )


def test_every_process_gets_as_many_images_when_there_are_fewer_than_processes():
    # an empty shard would run fewer steps than the others: its peers would wait in all-reduce
    order = torch.tensor([7, 3])
    shards = [World(rank, 5).shard(order, 5, torch.Generator().manual_seed(5)) for rank in range(5)]
    assert [shard.order.tolist() for shard in shards] == [[7], [3], [7], [3], [7]]


def test_world_size_must_divide_the_batch():
    from convlens.cli.flags import error_text

    World(0, 4).check_batch(64)
    with pytest.raises(ConvlensError) as caught:
        World(0, 3).check_batch(64)
    assert caught.value.parameter == "batch_size"
    assert error_text(caught.value).startswith("--batch-size 64 does not split evenly over the 3 processes")


def test_two_processes_resume_an_interrupted_run_with_one_writer(digits, tmp_path):
    from convlens.train import fit

    with pytest.raises(KeyboardInterrupt):  # one process, stopped after its first epoch
        fit(digits, TrainConfig(epochs=3, seed=2), tmp_path / "run", observer=StopAfter(1))
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    result = _train("run", "--resume", "--json", cwd=tmp_path)  # two processes finish epochs 2 and 3
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # one JSON document: only rank 0 printed
    assert summary["world_size"] == 2 and summary["epochs"] == 3
    assert summary["test_accuracy"] >= 0.85
    assert summary["history"][0] == {**first, "selected": False}  # epoch 1 kept as it was trained
    assert result.stderr.count("training convnet on digits") == 1
    assert result.stderr.count("epoch   3") == 1  # one progress report, not one per process
    run = tmp_path / "run"
    meta = json.loads((run / "model.json").read_text())
    assert meta["world_size"] == 2
    assert meta["metrics"]["test_accuracy"] == summary["test_accuracy"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    written = {path.name for path in run.iterdir()}
    assert written == {
        *(f"{name}.{suffix}" for name in ("model", "best", "last") for suffix in ("json", "safetensors")),
        "metrics.jsonl",
        "snapshots",
    }  # no lock, no half-written file of a second writer


def test_batch_that_does_not_split_is_one_error(run_cli, monkeypatch, tmp_path):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)  # rank 0 of a 2-process torchrun, before it joins the other
    code, _, stderr = run_cli("train", "--data", "digits", "--batch-size", "33", "--out", tmp_path / "run")
    assert code == 2
    assert stderr.strip() == (
        "convlens: error: --batch-size 33 does not split evenly over the 2 processes of this training "
        "(world size 2); use a multiple of 2, e.g. 32"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_interrupted_two_process_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole = _train("whole", "--epochs", "5", "--json", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert json.loads((tmp_path / "whole" / "model.json").read_text())["world_size"] == 2
    command = _torchrun("-m", "convlens", "train", "--data", "digits", "--epochs", "5", "--out", "cut")
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    while not (tmp_path / "cut" / "metrics.jsonl").exists() and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: torchrun and every process
    _, stderr = process.communicate(timeout=120)
    assert [line for line in stderr.splitlines() if line.startswith("convlens: error:")] == [
        "convlens: error: interrupted; continue with: convlens train --data digits --out cut --resume"
    ]
    assert not (tmp_path / "cut" / "model.json").exists()
    resumed = _train("cut", "--resume", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def timeless(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if "second" not in k} for row in history]

    a, b = json.loads(whole.stdout), json.loads(resumed.stdout)
    assert timeless(a["history"]) == timeless(b["history"])
    assert a["test_accuracy"] == b["test_accuracy"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
