"""torchrun with 2 CPU processes on a cached image folder: one cache, each rank its own shard.

Each rank runs the CLI under a small wrapper that records, from inside the process, its peak
resident memory (``resource.getrusage``) and every row it reads from the cache's files, and
writes them to a side file when it exits.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convlens.train.diagnostics import SAMPLE

RANK_MAIN = r"""
import atexit, json, os, resource, sys
import convlens.data.rows as rows

reads = []  # [file, the function that asked, the file's rows it read]
original = rows._read_rows

def recording(images, mapped, index):
    frame = sys._getframe(1)
    while frame.f_code.co_filename == rows.__file__:
        frame = frame.f_back
    per_row = images[0].numel()  # a view's rows (a share: every N-th) as rows of the file
    file_rows = [(images.storage_offset() + int(r) * images.stride(0)) // per_row for r in index.tolist()]
    name = os.path.basename(os.readlink(f"/proc/self/fd/{mapped.fd}"))
    reads.append((name, frame.f_code.co_name, file_rows))
    return original(images, mapped, index)

rows._read_rows = recording

def record():
    facts = {"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "reads": reads}
    with open(os.path.join(os.environ["RANK_FACTS"], f"rank{os.environ['RANK']}.json"), "w") as out:
        json.dump(facts, out)

atexit.register(record)
from convlens.cli import main
sys.argv = ["convlens", *sys.argv[1:]]
main()
"""

PEAK_RSS_BOUND = 2 * 2**30  # the bound a rank keeps on a 20,000-image folder; this one is tiny


def _jpeg_folder(root, per_class: int = 40):
    """3 classes of 32x32 JPEGs, each class its own colour with noise (learnable, all distinct)."""
    rng = np.random.default_rng(0)
    for label, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{label}" / f"{index:03d}.jpg", quality=90)
    return root


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_a_cached_folder_each_read_their_shard(tmp_path):
    folder = _jpeg_folder(tmp_path / "photos")
    (tmp_path / "facts").mkdir()
    (tmp_path / "rank_main.py").write_text(RANK_MAIN)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CONVLENS_CACHE_DIR": str(tmp_path / "cache"),
        "CONVLENS_FOLDER_CACHE": "always",
        "RANK_FACTS": str(tmp_path / "facts"),
    }
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        str(tmp_path / "rank_main.py"),
        *("train", "--data", str(folder), "--epochs", "1", "--batch-size", "16", "--augment", "none"),
        *("--out", str(tmp_path / "run"), "--json"),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # one JSON document: only rank 0 printed
    assert summary["world_size"] == 2
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cache", "facts", "photos", "run"]
    entries = [p for p in (tmp_path / "cache" / "folders").iterdir() if p.is_dir()]
    assert len(entries) == 1  # built once (rank 0), read by both
    cached = json.loads((entries[0] / "meta.json").read_text())
    train_count, test_count = cached["train"]["shape"][0], cached["test"]["shape"][0]
    ranks = [json.loads((tmp_path / "facts" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for facts in ranks:
        assert 0 < facts["peak_rss_kib"] * 1024 < PEAK_RSS_BOUND

    def rows_read(facts: dict, name: str, caller: str) -> list[int]:
        return [
            row for file, asked, rows in facts["reads"] if (file, asked) == (name, caller) for row in rows
        ]

    trained = [set(rows_read(facts, "train.npy", "train_one_epoch")) for facts in ranks]
    validated = [rows_read(facts, "train.npy", "evaluate_share") for facts in ranks]
    tested = [rows_read(facts, "test.npy", "evaluate_share") for facts in ranks]
    validation = set(validated[0] + validated[1])
    # each rank trains on its half of the training rows (the last batch may repeat one image),
    # and scores its half of the validation and test rows; together they read every row once
    assert len(trained[0] & trained[1]) <= 1 and trained[0].isdisjoint(validation)
    assert trained[0] | trained[1] | validation == set(range(train_count))
    assert sorted(tested[0] + tested[1]) == list(range(test_count))
    for shares in (validated, tested):
        assert set(shares[0]).isdisjoint(shares[1]) and abs(len(shares[0]) - len(shares[1])) <= 1
    for facts in ranks:  # what else a rank reads of the cache: the diagnostics' bounded sample
        other = [
            len(rows)
            for file, asked, rows in facts["reads"]
            if file in ("train.npy", "test.npy") and asked not in ("train_one_epoch", "evaluate_share")
        ]
        assert sum(other) <= SAMPLE
