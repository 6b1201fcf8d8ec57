"""Faithfulness experiment speed: 4 attribution methods x 100 mnist5k test images, on 2 cores.

    python bench/faithfulness_speed.py            # the lab's defaults: convnet, 3 epochs, 100 images
    python bench/faithfulness_speed.py --quick    # 20 images

What `convlens lab faithfulness --data mnist5k` runs: train the default convnet, then for every
registered attribution method its maps, a deletion curve (8 pixels at a time) and cascading
randomization over all three weighted stages, plus the random and brightness references.
Baseline in the same run: the training alone. Target from the issue: at most 60 s in all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure
from convlens.data import load_dataset
from convlens.lab import run_experiment
from convlens.lab._common import train_quick


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 images instead of 100")
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = 20 if args.quick else 100
    dataset = load_dataset("mnist5k")
    print(f"cpu pressure before: {cpu_pressure()}")
    start = time.perf_counter()
    train_quick(dataset, "convnet", 3)
    training = time.perf_counter() - start
    result = run_experiment("faithfulness", dataset, images=images)
    print(f"training alone (baseline): {training:.1f} s")
    print(
        f"faithfulness, {len(result.spearman)} methods x {result.images} images: {result.seconds:.1f} s (target <= 60 s)"
    )
    for method, seconds in result.seconds_per_method.items():
        print(
            f"  {method:22s} {seconds:5.1f} s   Spearman {result.spearman[method]:5.2f}   "
            f"deletion AUC {result.deletion[method]:.3f}"
        )
    print(
        f"  random deletion AUC {result.deletion['random']:.3f}, brightness {result.deletion['brightness']:.3f}"
    )
    print(f"cpu pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
