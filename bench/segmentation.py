"""Segmentation on the built-ins: the default recipe (a U-Net) against a plain FCN, same run.

For ``scenes`` (background + 5 Fashion-MNIST object classes on photo crops, 64x64) and
``portrait`` (one object on a photo: foreground vs background), trains the defaults that
``convlens train --data NAME`` uses and, as the baseline, the same schedule with the FCN (no
decoder, no skip connections: coarse scores upsampled bilinearly). Prints test mean IoU, the
foreground IoU (portrait), pixel accuracy, epochs, training seconds, the fp32 matmul rate
measured in the same run, the seconds scaled to 234 GFLOP/s, and the CPU pressure before and
after (a disturbed run says so).

    python bench/segmentation.py [--data scenes portrait] [--seeds 0] [--no-baseline] [--keep DIR]

``--keep DIR`` keeps the runs (DIR/NAME/default-SEED, DIR/NAME/fcn-SEED), e.g. for
``scripts/segmentation_pictures.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, matmul_peak_gflops

REFERENCE_GFLOPS = 234.0


def train_once(dataset, model: str | None, seed: int, folder: Path) -> dict:
    from convlens.train import fit
    from convlens.train.recipe import TrainConfig

    config = TrainConfig(seed=seed)
    if model:  # the baseline: same schedule and settings, another family
        config.model = model
    result = fit(dataset, config, folder / f"{model or 'default'}-{seed}")
    return {
        "model": config.model,  # resolved by fit: the default family is unet
        "mean_iou": result.test_mean_iou,
        "foreground_iou": result.per_class_iou[-1]["iou"],
        "pixel_accuracy": result.test_pixel_accuracy,
        "epochs": result.epochs,
        "seconds": result.train_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["scenes", "portrait"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--no-baseline", action="store_true", help="train only the defaults")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    args = parser.parse_args()

    import torch

    from convlens.data import load_dataset

    torch.set_num_threads(torch.get_num_threads())
    gflops = matmul_peak_gflops()
    print(f"fp32 matmul {gflops:.0f} GFLOP/s; cpu pressure before: {cpu_pressure()}")
    print(
        f"{'data':9} {'model':7} {'seed':>4} {'mIoU':>6} {'fg IoU':>6} {'pix acc':>7} {'epochs':>6} "
        f"{'seconds':>8} {'@234':>6}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or temporary
        for name in args.data:
            dataset = load_dataset(name)
            for seed in args.seeds:
                rows = [train_once(dataset, None, seed, Path(scratch) / name)]
                if not args.no_baseline:
                    rows.append(train_once(dataset, "fcn", seed, Path(scratch) / name))
                for row in rows:
                    print(
                        f"{name:9} {row['model']:7} {seed:>4} {row['mean_iou']:6.3f} {row['foreground_iou']:6.3f} "
                        f"{row['pixel_accuracy']:7.3f} {row['epochs']:>6} {row['seconds']:8.1f} "
                        f"{row['seconds'] * gflops / REFERENCE_GFLOPS:6.1f}"
                    )
                if len(rows) == 2:
                    default, baseline = rows
                    print(
                        f"  U-Net vs FCN: mean IoU {default['mean_iou'] - baseline['mean_iou']:+.3f}, "
                        f"time x{default['seconds'] / baseline['seconds']:.2f}"
                    )
    print(f"cpu pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
