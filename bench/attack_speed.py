"""Attack speed: FGSM and PGD-10 over 1,000 mnist5k test images on a convnet trained here.

    python bench/attack_speed.py             # 5 repeats, 2 threads and 1 thread
    python bench/attack_speed.py --quick     # 2 repeats

The baseline, measured in the same run on the same model, is one plain input-gradient pass
(forward + backward to the pixels, no Captum) over the same 1,000 images: FGSM needs one
such pass, PGD-10 ten, so the ratios show the cost of everything around the gradient.
Targets from the issue: FGSM ≤ 0.5 s, PGD-10 ≤ 5 s on 2 cores. CPU pressure is printed
before and after: a run with pressure well above 0 was disturbed by other processes.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, median
from convlens import attacks
from convlens.checkpoint import load_checkpoint
from convlens.data import load_dataset, to_float
from convlens.train import TrainConfig, fit


def plain_gradient_pass(model, images, labels, batch_size: int = 250) -> None:
    """The floor: d(loss)/d(pixels) for every image, with plain autograd (channels_last, as the attacks)."""
    for first in range(0, images.shape[0], batch_size):
        batch = images[first : first + batch_size].contiguous(memory_format=torch.channels_last)
        batch.requires_grad_(True)
        loss = F.cross_entropy(model(batch), labels[first : first + batch_size], reduction="sum")
        torch.autograd.grad(loss, batch)


def timed(function, repeats: int) -> float:
    function()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    dataset = load_dataset("mnist5k")
    print(f"cpu pressure before: {cpu_pressure()}")
    with tempfile.TemporaryDirectory() as folder:
        torch.set_num_threads(2)
        result = fit(dataset, TrainConfig(model="convnet", seed=0, device="cpu"), Path(folder) / "run")
        model, _ = load_checkpoint(Path(folder) / "run")
    print(f"trained convnet on mnist5k: {100 * result.test_accuracy:.1f} % in {result.train_seconds:.1f} s")
    images, labels = to_float(dataset.test_images[:1000]), dataset.test_labels[:1000]  # (1000, 1, 28, 28)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)  # what the attacks run on
    rows = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        baseline = timed(lambda: plain_gradient_pass(channels_last, images, labels), repeats)
        fgsm = timed(lambda: attacks.fgsm(model, images, labels, 0.1), repeats)
        pgd = timed(lambda: attacks.pgd(model, images, labels, 0.1, steps=10), repeats)
        rows.append((threads, baseline, fgsm, pgd))
    print(f"cpu pressure after:  {cpu_pressure()}")
    print(f"\nmedian of {repeats} runs over 1,000 images (ε = 0.1)")
    print(
        f"{'threads':>7}  {'gradient pass':>13}  {'FGSM':>8}  {'÷ pass':>6}  {'PGD-10':>8}  {'÷ 10 passes':>11}"
    )
    for threads, baseline, fgsm, pgd in rows:
        print(
            f"{threads:>7}  {baseline:>12.3f}s  {fgsm:>7.3f}s  {fgsm / baseline:>6.2f}  "
            f"{pgd:>7.3f}s  {pgd / (10 * baseline):>11.2f}"
        )
    _, _, fgsm_2, pgd_2 = rows[0]
    print(f"\ntargets on 2 threads: FGSM ≤ 0.5 s: {fgsm_2:.3f} s; PGD-10 ≤ 5 s: {pgd_2:.3f} s")


if __name__ == "__main__":
    main()
