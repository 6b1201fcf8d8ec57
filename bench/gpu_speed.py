"""Training on a GPU with the automatic CUDA recipe: Fashion-MNIST and mnist5k, one table.

    python bench/gpu_speed.py            # both data sets, seed 0
    python bench/gpu_speed.py --seeds 3  # median of 3 seeds

Each run is exactly ``fit(dataset, TrainConfig(device="cuda"))``: the defaults that
``resolve_defaults`` picks for a CUDA device (for large data sets a wider convnet, batch 1024 and a scaled learning rate,
sets, bf16 autocast, the data set resident on the card). The table gives the card, the data,
the recipe, the final test accuracy, training seconds (evaluation excluded), images per second
and an estimate of the fraction of the card's peak the training used: images per second x
3 x the forward FLOPs per image (backward ~ 2x forward), against a bf16 matmul measured on the
same card in the same run. Without CUDA the script says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import matmul_peak_gflops, median
from convlens.data import load_dataset
from convlens.models import create_model, flops_per_image
from convlens.train import TrainConfig, fit

DATA = ("fashion-mnist", "mnist5k")


def _options(options: dict) -> str:
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in options.items()) or "-"


def measure(name: str, seed: int) -> dict:
    """One training with the CUDA defaults; what the table shows of it."""
    dataset = load_dataset(name)
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(dataset, TrainConfig(device="cuda", seed=seed), run_dir)
        saved = json.loads((Path(run_dir) / "model.json").read_text())["training"]
    config = TrainConfig(**saved)  # the recipe resolve_defaults chose for the card
    model = create_model(config.model, dataset.input_shape, dataset.num_classes, **config.model_options)
    trained = sum(row["epoch_seconds"] * row["images_per_second"] for row in result.history)
    return {
        "accuracy": result.test_accuracy,
        "seconds": result.train_seconds,
        "images_per_second": trained / result.train_seconds,
        "flops": flops_per_image(model, dataset.input_shape),
        "recipe": f"{config.model} {_options(config.model_options)} b{config.batch_size} lr {config.lr:g} "
        f"wd {config.weight_decay:g} {config.augment} {config.precision} {result.epochs} ep",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per data set (median shown)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_speed: no CUDA device on this machine; nothing to measure")
        return
    card = torch.cuda.get_device_name()
    peak = matmul_peak_gflops(8192, device="cuda", dtype=torch.bfloat16)
    print(
        f"{card}: bf16 matmul {peak / 1000:.0f} TFLOP/s measured (the peak below), torch {torch.__version__}"
    )
    header = f"{'card':<24} {'data':<14} {'recipe':<86} {'accuracy':>9} {'train s':>8} {'img/s':>10} {'of peak':>8}"
    print(header)
    print("-" * len(header))
    for name in DATA:
        runs = [measure(name, seed) for seed in range(args.seeds)]
        accuracy = median([r["accuracy"] for r in runs])
        seconds = median([r["seconds"] for r in runs])
        rate = median([r["images_per_second"] for r in runs])
        used = rate * 3 * runs[0]["flops"] / 1e9  # GFLOP/s: forward + backward ~ 3x the forward
        print(
            f"{card[:24]:<24} {name:<14} {runs[0]['recipe']:<86} {100 * accuracy:>8.2f}% "
            f"{seconds:>8.2f} {rate:>10,.0f} {100 * used / peak:>7.2f}%"
        )


if __name__ == "__main__":
    main()
