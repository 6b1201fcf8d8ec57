"""Inside-view speed: activations + Grad-CAM for one 28x28 image, one cell's arithmetic, feature viz.

    python bench/inspect_speed.py            # 50 repeats (feature viz: 3), 2 threads and 1 thread
    python bench/inspect_speed.py --quick    # 15 repeats (feature viz: 1)

The model is the default ``convnet`` for 1x28x28 inputs and 10 classes (timings do not depend
on the weights, so it is not trained). The baseline, measured in the same run, is one plain
forward pass of the same image without hooks: the ratios show what the explanations cost
on top of the model itself. Targets from the issue: activations + Grad-CAM ≤ 5 ms median,
one cell's arithmetic ≤ 1 ms, feature visualization of all channels of one stage ≤ 10 s.
CPU pressure is printed before and after: well above 0 means other processes disturbed the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, median
from convlens.inspect import activations, cell_arithmetic, feature_visualization, grad_cam
from convlens.models import create_model


def timed(fn, repeats: int) -> float:
    fn()  # warm up (first Captum call, allocator)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return median(samples)


def run(threads: int, repeats: int, viz_repeats: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("convnet", (1, 28, 28), 10).eval()
    image = torch.rand(1, 28, 28)

    def forward():
        with torch.no_grad():
            model(image.unsqueeze(0))

    def explain():
        activations(model, image)
        grad_cam(model, image)

    base = timed(forward, repeats)
    rows = [
        ("forward pass (baseline)", base),
        ("activations, all stages", timed(lambda: activations(model, image), repeats)),
        ("Grad-CAM (default: pool2)", timed(lambda: grad_cam(model, image), repeats)),
        ("activations + Grad-CAM", timed(explain, repeats)),
        ("cell arithmetic conv2 (16 in-channels)", timed(lambda: cell_arithmetic(model, image, "conv2", 5, 7, 7), repeats)),
        ("cell arithmetic fc", timed(lambda: cell_arithmetic(model, image, "fc", 3), repeats)),
    ]  # fmt: skip
    viz = timed(lambda: feature_visualization(model, "conv2"), viz_repeats)
    print(f"\n{threads} thread(s), median of {repeats} (feature viz: {viz_repeats})")
    for name, seconds in rows:
        print(f"  {name:<40} {seconds * 1e3:8.2f} ms  {seconds / base:6.1f}x forward")
    print(f"  {'feature viz conv2, 32 channels, 256 steps':<40} {viz:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats, viz_repeats = (15, 1) if args.quick else (50, 3)
    print(f"torch {torch.__version__}, cpu pressure before: {cpu_pressure()}")
    for threads in (2, 1):
        run(threads, repeats, viz_repeats)
    print(f"\ncpu pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
