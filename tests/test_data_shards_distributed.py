"""torchrun with 2 CPU processes on a folder of tar shards (``convlens pack``): decoded once per
machine straight from the members (no unpacked copy), each rank reading its share of the
decoded rows, one run written by rank 0, and an interrupted run resumed to the same result.

The ranks run under the recording wrapper of ``test_data_cache_distributed`` (peak RSS and
every row read from the cache, per rank)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from convlens.data.shards import pack_folder
from test_data_cache_distributed import PEAK_RSS_BOUND, RANK_MAIN, _free_port, _jpeg_folder


def _environment(tmp_path) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CONVLENS_CACHE_DIR": str(tmp_path / "cache"),
        "RANK_FACTS": str(tmp_path / "facts"),
    }
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _command(tmp_path, out: str, *flags) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-addr", "127.0.0.1", "--master-port", str(_free_port())),
        str(tmp_path / "rank_main.py"),
        *("train", "--data", str(tmp_path / "shards"), "--batch-size", "16", "--augment", "none"),
        *("--seed", "3", "--out", str(tmp_path / out), *flags),
    ]


def _timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "second" not in k} for row in history]


@pytest.mark.slow
def test_two_processes_train_on_tar_shards_and_resume_exactly(tmp_path):
    pack_folder(_jpeg_folder(tmp_path / "photos"), tmp_path / "shards", shard_size=20)
    (tmp_path / "facts").mkdir()
    (tmp_path / "rank_main.py").write_text(RANK_MAIN)
    env = _environment(tmp_path)
    whole = subprocess.run(
        _command(tmp_path, "whole", "--epochs", "4", "--json"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]
    summary = json.loads(whole.stdout)  # one JSON document: only rank 0 printed
    assert summary["world_size"] == 2
    assert json.loads((tmp_path / "whole" / "model.json").read_text())["world_size"] == 2
    assert not (tmp_path / "cache" / "shards").exists()  # nothing unpacked
    entries = [p for p in (tmp_path / "cache" / "folders").iterdir() if p.is_dir()]
    assert len(entries) == 1  # decoded once (rank 0), read by both
    cached = json.loads((entries[0] / "meta.json").read_text())
    assert all("\0" not in row[0] and row[0].split("/")[0].endswith(".tar") for row in cached["files"])
    ranks = [json.loads((tmp_path / "facts" / f"rank{r}.json").read_text()) for r in (0, 1)]
    trained, tested = [], []
    for facts in ranks:
        assert 0 < facts["peak_rss_kib"] * 1024 < PEAK_RSS_BOUND
        trained.append(
            {r for file, asked, rows in facts["reads"] if asked == "train_one_epoch" for r in rows}
        )
        tested.append([r for file, asked, rows in facts["reads"] if (file, asked) == ("test.npy", "evaluate_share") for r in rows])  # fmt: skip
    # over 4 epochs each rank trains on its half of every epoch's permutation: both see most
    # rows, but each epoch's test pass reads its own half of the test rows, every row once
    test_count = cached["test"]["shape"][0]
    assert sorted(tested[0] + tested[1]) == sorted(list(range(test_count)) * 4)
    assert set(tested[0]).isdisjoint(tested[1]) and trained[0] and trained[1]

    cut = subprocess.Popen(
        _command(tmp_path, "cut", "--epochs", "4"),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    while not (tmp_path / "cut" / "metrics.jsonl").exists() and cut.poll() is None:
        time.sleep(0.02)
    os.killpg(cut.pid, signal.SIGINT)  # Ctrl-C after the first epoch: torchrun and both processes
    _, stderr = cut.communicate(timeout=120)
    assert not (tmp_path / "cut" / "model.json").exists(), stderr[-2000:]
    resumed = subprocess.run(
        _command(tmp_path, "cut", "--epochs", "4", "--resume", "--json"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads(resumed.stdout)
    assert _timeless(again["history"]) == _timeless(summary["history"])
    assert again["test_accuracy"] == summary["test_accuracy"]
