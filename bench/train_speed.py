"""Training speed: convlens's defaults vs the official PyTorch MNIST example, in one run.

    python bench/train_speed.py                 # mnist5k (5 seeds vs 3 baseline seeds), throughput
    python bench/train_speed.py --fashion       # also Fashion-MNIST 60k/10k with the defaults
    python bench/train_speed.py --fashion-only --seeds 3   # Fashion-MNIST alone, 3 seeds
    python bench/train_speed.py --quick         # 2 seeds each, for a smoke test

Both recipes run on the same mnist5k split with the same number of threads; the script
prints time-to-97 % / time-to-98 % (training seconds, evaluation excluded) and their ratio.
CPU pressure is printed before and after: a run with pressure well above 0 was disturbed.

Fashion-MNIST's target is 93.0 % test accuracy within 120 s of training on a machine whose
2-thread fp32 matmul does 234 GFLOP/s. The matmul rate is measured right before and right
after each training, and the training seconds are scaled by it: scaled = seconds x rate / 234
(a faster or a busier machine than the reference moves both alike).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, matmul_peak_gflops, median
from convlens.data import load_dataset, to_float
from convlens.models import create_model, flops_per_image
from convlens.train import TrainConfig, fit


class ExampleNet(nn.Module):
    """The network of the official PyTorch MNIST example (examples/mnist/main.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def baseline_run(dataset, seed: int, epochs: int = 14) -> list[tuple[float, float]]:
    """The example's recipe: per-sample DataLoader, Adadelta lr 1.0, StepLR 0.7, batch 64, its normalization."""
    torch.manual_seed(seed)
    normalize = lambda x: (to_float(x) - 0.1307) / 0.3081  # noqa: E731  (the example's constants)
    train = torch.utils.data.TensorDataset(normalize(dataset.train_images), dataset.train_labels)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    test_x, test_y = normalize(dataset.test_images), dataset.test_labels
    model = ExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    curve, seconds = [], 0.0
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for images, labels in loader:
            optimizer.zero_grad()
            F.nll_loss(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
        seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum())
                for i in range(0, len(test_y), 1000)
            )
        curve.append((seconds, correct / len(test_y)))
    return curve


def convlens_run(dataset, seed: int) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(dataset, TrainConfig(seed=seed), run_dir)  # the defaults, nothing else
    return [(row["train_seconds"], row["test_accuracy"]) for row in result.history]


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, accuracy in curve if accuracy >= target), None)


def describe(name: str, curves: list[list[tuple[float, float]]]) -> dict:
    t97 = [time_to(c, 0.97) for c in curves]
    t98 = [time_to(c, 0.98) for c in curves]
    finals = [c[-1][1] for c in curves]
    row = {
        "name": name,
        "final": median(finals),
        "final_min": min(finals),
        "total": median([c[-1][0] for c in curves]),
        "t97": median([t for t in t97 if t is not None]) if all(t is not None for t in t97) else None,
        "t98": median([t for t in t98 if t is not None])
        if sum(t is not None for t in t98) > len(t98) / 2
        else None,
        "reached97": sum(t is not None for t in t97),
        "reached98": sum(t is not None for t in t98),
        "runs": len(curves),
    }
    print(
        f"  {name:<22} final {100 * row['final']:.2f} % (min {100 * row['final_min']:.2f}), "
        f"{row['total']:.2f} s training; time to 97 %: {fmt(row['t97'])} ({row['reached97']}/{row['runs']} runs), "
        f"time to 98 %: {fmt(row['t98'])} ({row['reached98']}/{row['runs']} runs)"
    )
    return row


FASHION_TARGET = 0.93
REFERENCE_GFLOPS = 234  # the 2-thread fp32 matmul rate the 120 s target was set on
TARGET_SECONDS = 120


def fashion_runs(seeds: int) -> None:
    """Fashion-MNIST with the defaults: accuracy, seconds, the matmul rate around it, scaled seconds."""
    fashion = load_dataset("fashion-mnist")
    print(
        f"\nfashion-mnist ({len(fashion.train_labels):,} train / {len(fashion.test_labels):,} test), defaults:"
    )
    for seed in range(seeds):
        pressure, before = cpu_pressure(), matmul_peak_gflops()
        with tempfile.TemporaryDirectory() as run_dir:
            result = fit(fashion, TrainConfig(seed=seed), run_dir)
        after = matmul_peak_gflops()
        rate = (before + after) / 2
        scaled = result.train_seconds * rate / REFERENCE_GFLOPS
        curve = [(r["train_seconds"], r["test_accuracy"]) for r in result.history]
        reached = time_to(curve, FASHION_TARGET)
        met = result.test_accuracy >= FASHION_TARGET and scaled <= TARGET_SECONDS
        # on a shared machine the quietest epoch says what the whole schedule would take alone
        fastest = min(result.history, key=lambda row: row["epoch_seconds"])
        undisturbed = fastest["epoch_seconds"] * result.epochs
        print(
            f"  seed {seed}: {100 * result.test_accuracy:.2f} % after {result.epochs} epochs, "
            f"{result.train_seconds:.1f} s training; matmul {before:.0f} -> {after:.0f} GFLOP/s, "
            f"scaled to {REFERENCE_GFLOPS} GFLOP/s: {scaled:.1f} s; time to 93 %: {fmt(reached)}; "
            f"CPU pressure {pressure} -> {cpu_pressure()}; target (93.0 % within {TARGET_SECONDS} s scaled) "
            f"{'met' if met else 'NOT met'}\n"
            f"    fastest epoch {fastest['epoch_seconds']:.1f} s ({fastest['images_per_second']:,.0f} img/s): "
            f"{undisturbed:.1f} s for the schedule at that pace, {undisturbed * max(before, after) / REFERENCE_GFLOPS:.1f} s "
            f"scaled by the quieter of the two matmul rates"
        )


def fmt(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.2f} s"


def throughput(dataset, peak: float) -> None:
    model = create_model("convnet", dataset.input_shape, 10, dataset.mean, dataset.std)
    flops = flops_per_image(model, dataset.input_shape)
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(dataset, TrainConfig(seed=0, epochs=3), run_dir)
    rate = max(row["images_per_second"] for row in result.history)
    achieved = rate * flops * 3 / 1e9  # forward + backward ≈ 3x forward
    print(
        f"  default model training throughput: {rate:,.0f} img/s at 28x28 "
        f"({achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f} % of the {peak:.0f} GFLOP/s matmul peak)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds each instead of 5 and 3")
    parser.add_argument("--fashion", action="store_true", help="also train Fashion-MNIST with the defaults")
    parser.add_argument("--fashion-only", action="store_true", help="Fashion-MNIST alone, no mnist5k")
    parser.add_argument("--seeds", type=int, default=1, help="Fashion-MNIST seeds (default 1)")
    args = parser.parse_args()
    seeds, baseline_seeds = (2, 1) if args.quick else (5, 3)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU pressure before: {cpu_pressure()}"
    )
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak:.0f} GFLOP/s")
    if args.fashion_only:
        fashion_runs(args.seeds)
        print(f"\nCPU pressure after: {cpu_pressure()}")
        return
    dataset = load_dataset("mnist5k")
    print(f"\nmnist5k ({len(dataset.train_labels)} train / {len(dataset.test_labels)} test):")
    ours, theirs = [], []
    for seed in range(max(seeds, baseline_seeds)):  # interleaved, so a disturbance hits both
        if seed < seeds:
            ours.append(convlens_run(dataset, seed))
        if seed < baseline_seeds:
            theirs.append(baseline_run(dataset, seed))
    mine = describe("convlens defaults", ours)
    base = describe("PyTorch MNIST example", theirs)
    if mine["t97"] and base["t97"]:
        print(f"  time-to-97 % ratio (baseline / convlens): {base['t97'] / mine['t97']:.1f}x")
    elif mine["t97"]:
        print(
            f"  baseline did not reach 97 % in every run; ratio ≥ {base['total'] / mine['t97']:.1f}x "
            "(its whole training time / our time to 97 %)"
        )
    if mine["t98"]:
        # the ratio the project tracks: the example's whole 14-epoch recipe against our time to 98 %
        print(
            f"  baseline whole schedule / convlens time to 98 %: {base['total'] / mine['t98']:.1f}x "
            f"(target 40x); convlens time to 98 % scaled to 234 GFLOP/s: {mine['t98'] * peak / 234:.2f} s"
        )
    throughput(dataset, peak)
    if args.fashion:
        fashion_runs(args.seeds)
    print(f"\nCPU pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
