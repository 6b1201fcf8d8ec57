"""Compare training recipes on one data set: each recipe is a set of TrainConfig overrides.

    python bench/recipe_sweep.py recipes.json --data fashion-mnist --device cpu --jobs 6
    python bench/recipe_sweep.py recipes.json --data fashion-mnist --device cuda --jobs 1

``recipes.json`` is a list of ``{"label": "...", "config": {TrainConfig fields}, "seeds": [0, 1]}``
(``seeds`` optional, default ``--seeds``). Every run is ``fit(dataset, TrainConfig(**config))`` in
its own process, so runs can go side by side (``--jobs``); on the CPU each process is pinned to
``--threads`` cores of its own and measures the fp32 matmul rate on them right before training,
so its seconds can be scaled to the 234 GFLOP/s reference. Runs that share a GPU slow each
other: time GPU recipes with ``--jobs 1``.

Besides the registered models, recipes can name ``layout`` (registered by this script): a
string of 3x3 conv+BatchNorm+ReLU stages such as ``s24-48p-96p`` (``s``: stride 2, ``p``: a 2x2
max-pool after it), then flatten (or global average pooling with ``gap``), an optional hidden
linear layer with ReLU (``hidden``), optional dropout, and one linear layer — to try a design before it becomes a model family.
They can also name ``trick`` (``bench/record_tricks.py``): the default convnet with the tricks of
the fast-training records switched on one at a time (frozen whitening first convolution, dirac
initialisation, pooling before the first BatchNorm/ReLU). Every run's final model is also
scored with test-time augmentation (``tta_flip``, ``tta_shift``: logits averaged over views). A recipe's
``"schedule": "linear"`` anneals OneCycle linearly instead of by a cosine.

``--target 0.98`` adds the epoch at which each run's test accuracy first reached 98 % to the table.

One JSON line per run goes to stdout (and ``--out``) as soon as it finishes; a table sorted by
median test accuracy ends the output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, matmul_peak_gflops, median
from convlens.models import register_model
from convlens.models._registry import Normalize, StagedModel, flat_features
from record_tricks import linear_decay, use_training_images, view_averaged_accuracy


@register_model("layout", limits={"dropout": (0.0, 0.9)})
def layout(
    in_shape,
    num_classes,
    mean,
    std,
    spec: str = "16p-32p-64p",
    gap: bool = False,
    dropout: float = 0.0,
    hidden: int = 0,
):
    """Conv3x3+BN+ReLU stages from a spec like 's24-48p-96p', flatten (or GAP), [hidden linear+ReLU], linear."""
    stages: list = [("normalize", Normalize(mean, std))]
    channels = in_shape[0]
    for index, token in enumerate(spec.split("-"), start=1):
        stride = 2 if token.startswith("s") else 1
        pool = token.endswith("p")
        width = int(token.strip("sp"))
        stages += [
            (f"conv{index}", nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False)),
            (f"bn{index}", nn.BatchNorm2d(width)),
            (f"relu{index}", nn.ReLU()),
        ]
        if pool:
            stages.append((f"pool{index}", nn.MaxPool2d(2)))
        channels = width
    if gap:
        stages.append(("gap", nn.AdaptiveAvgPool2d(1)))
    stages.append(("flatten", nn.Flatten()))
    if hidden:
        stages += [("fc1", nn.Linear(flat_features(stages, in_shape), hidden)), ("relu_fc1", nn.ReLU())]
    if dropout:
        stages.append(("dropout", nn.Dropout(dropout)))
    stages.append(("fc", nn.Linear(hidden or flat_features(stages, in_shape), num_classes)))
    return StagedModel(stages, in_shape, num_classes)


def run_one(job: dict) -> dict:
    """One training in this process; the row the table shows."""
    from convlens.checkpoint import read_checkpoint
    from convlens.data import load_dataset
    from convlens.models import create_model, flops_per_image
    from convlens.train import TrainConfig, fit

    if job.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    dataset = load_dataset(job["data"])
    use_training_images(dataset.train_images)  # for the trick family's whitening
    if job.get("schedule") == "linear":
        linear_decay()
    config = TrainConfig(**{**job["config"], "seed": job["seed"], "device": job["device"]})
    pressure = cpu_pressure()
    rate = matmul_peak_gflops() if job["device"] == "cpu" else None
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(dataset, config, run_dir)
        saved = json.loads((Path(run_dir) / "model.json").read_text())["training"]
        _, trained_model, _, _ = read_checkpoint(Path(run_dir) / "model.json")
    averaged = {  # test-time augmentation of the model fit kept (its training is unchanged)
        f"tta_{kind}": view_averaged_accuracy(trained_model, dataset.test_images, dataset.test_labels, kind)
        for kind in ("flip", "shift")
    }
    chosen = TrainConfig(**saved)
    model = create_model(chosen.model, dataset.input_shape, dataset.num_classes, **chosen.model_options)
    trained = sum(row["epoch_seconds"] * row["images_per_second"] for row in result.history)
    return {
        "label": job["label"],
        "seed": job["seed"],
        "test": result.test_accuracy,
        "last_test": result.history[-1]["test_accuracy"],
        "best_val": result.best_accuracy,
        "epochs": result.epochs,
        "seconds": result.train_seconds,
        "img_s": trained / result.train_seconds,
        "mflop": flops_per_image(model, dataset.input_shape) / 1e6,
        **averaged,
        "pressure": f"{pressure} -> {cpu_pressure()}",
        "matmul": rate,
        "scaled": result.train_seconds * rate / 234 if rate else None,
        "tests": [round(row["test_accuracy"], 4) for row in result.history],
        "recipe": f"{chosen.model} {chosen.model_options} b{chosen.batch_size} lr {chosen.lr:g} "
        f"wd {chosen.weight_decay:g} {chosen.augment} {chosen.precision}",
    }


def _child(job: dict, threads: int, slot: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, __file__, "--one", json.dumps(job), "--threads", str(threads)]
    if job["device"] == "cpu" and hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        mine = cores[slot * threads : (slot + 1) * threads] or cores[:threads]
        command += ["--cores", ",".join(map(str, mine))]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def sweep(jobs: list[dict], parallel: int, threads: int, out: Path | None) -> list[dict]:
    """Run every job, ``parallel`` at a time, each in its own slot of cores."""
    rows, running, pending = [], {}, list(jobs)
    free = list(range(parallel))
    while pending or running:
        while pending and free:
            slot = free.pop(0)
            running[slot] = (_child(pending.pop(0), threads, slot), time.perf_counter())
        time.sleep(0.2)
        for slot, (process, _) in list(running.items()):
            if process.poll() is None:
                continue
            output = process.stdout.read().strip().splitlines()
            del running[slot]
            free.append(slot)
            if process.returncode or not output:
                print(f"# a run failed (exit {process.returncode})", flush=True)
                continue
            row = json.loads(output[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out:
                with out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
    return rows


def epochs_to(row: dict, target: float) -> int | None:
    """The first epoch whose test accuracy reached ``target``; None if none did."""
    return next((epoch for epoch, test in enumerate(row["tests"], 1) if test >= target), None)


def table(rows: list[dict], target: float | None = None) -> None:
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    summary = []
    for label, runs in by_label.items():
        scaled = [r["scaled"] for r in runs if r["scaled"]]
        reached = [e for e in (epochs_to(r, target) for r in runs) if e] if target else []
        summary.append(
            (
                median([r["test"] for r in runs]),
                label,
                min(r["test"] for r in runs),
                median([r["seconds"] for r in runs]),
                median(scaled) if scaled else None,
                median([r["img_s"] for r in runs]),
                runs[0]["mflop"],
                len(runs),
                f"{median(reached):g} ({len(reached)}/{len(runs)})" if reached else f"- (0/{len(runs)})",
                " ".join(f"{100 * r['test']:.2f}" for r in sorted(runs, key=lambda r: r["seed"])),
                "/".join(f"{100 * median([r[key] for r in runs]):.2f}" for key in ("tta_flip", "tta_shift")),
            )
        )
    reach = f" {'ep to ' + format(target, '.0%'):>11}" if target else ""
    print(
        f"\n{'label':<34} {'runs':>4} {'test med':>9} {'min':>7} {'train s':>8} {'scaled':>7} {'img/s':>9} "
        f"{'MFLOP':>6}{reach} {'TTA flip/shift':>14}  per seed"
    )
    for test, label, low, seconds, scaled, rate, mflop, count, epochs, seeds, tta in sorted(
        summary, reverse=True
    ):
        shown = f"{scaled:7.1f}" if scaled else f"{'-':>7}"
        print(
            f"{label:<34} {count:>4} {100 * test:>8.2f}% {100 * low:>6.2f}% {seconds:>8.1f} {shown} "
            f"{rate:>9,.0f} {mflop:>6.2f}{f' {epochs:>11}' if target else ''} {tta:>14}  {seeds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipes", nargs="?", help="JSON file: a list of {label, config, seeds?}")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (and cores) per run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per recipe without its own list")
    parser.add_argument("--out", type=Path, help="also append each run's JSON line here")
    parser.add_argument("--target", type=float, help="also show epochs to this test accuracy, e.g. 0.98")
    parser.add_argument("--table", type=Path, help="only print the table of an earlier --out file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--cores", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cores:
        os.sched_setaffinity(0, {int(core) for core in args.cores.split(",")})
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.table:
        table([json.loads(line) for line in args.table.read_text().splitlines() if line], args.target)
        return
    recipes = json.loads(Path(args.recipes).read_text())
    jobs = [
        {
            "label": recipe["label"],
            "config": recipe.get("config", {}),
            "data": recipe.get("data", args.data),
            "device": args.device,
            "cudnn_benchmark": recipe.get("cudnn_benchmark", False),
            "schedule": recipe.get("schedule", "cosine"),
            "seed": seed,
        }
        for recipe in recipes
        for seed in recipe.get("seeds", range(args.seeds))
    ]
    table(sweep(jobs, args.jobs, args.threads, args.out), args.target)


if __name__ == "__main__":
    main()
