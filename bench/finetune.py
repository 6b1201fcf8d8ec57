"""Fine-tuning from weights against training from scratch on a small folder, same run.

The small folder is what a practitioner brings: 200 Fashion-MNIST training images of the five
classes sandal, shirt, sneaker, bag and ankle boot (40 per class, stratified, seed 0) written as
PNGs under train/, and 1,000 of their test images (200 per class) under test/. On it, with the
defaults of ``convlens train --data FOLDER`` (10 % validation, early stopping off, 77 epochs of
batch 32 on 180 images):

- scratch: random initialization;
- init mnist5k: ``--init`` a run trained on mnist5k (another data set: digits);
- init fashion 0-4: ``--init`` a run trained on the five *other* Fashion-MNIST classes
  (T-shirt, trouser, pullover, dress, coat; 1,000 training images each);
- the same at a peak learning rate of 0.01 instead of 0.1 (``--lr 0.01``), and with
  ``--freeze-epochs 10`` (the head alone for the first 10 epochs).

Both sources use the default convnet, so everything but the 10- or 5-class head loads. Prints
every run's test accuracy and training seconds per seed, the medians side by side, the fp32
matmul rate measured in the same run and the seconds scaled to 234 GFLOP/s, and the CPU
pressure before and after (a run with pressure well above 0 shared the cores).

    python bench/finetune.py [--seeds N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, matmul_peak_gflops, median

REFERENCE_GFLOPS = 234.0
SMALL_CLASSES = (5, 6, 7, 8, 9)  # sandal, shirt, sneaker, bag, ankle boot
SOURCE_CLASSES = (0, 1, 2, 3, 4)  # T-shirt, trouser, pullover, dress, coat
PER_CLASS_TRAIN, PER_CLASS_TEST, SOURCE_PER_CLASS = 40, 200, 1000
FREEZE_EPOCHS = 10  # of 77: the backbone is freed while OneCycle still warms up (its peak is at epoch 19)


def _stratified(labels, classes, per_class: int, seed: int):
    """Indices of ``per_class`` random images of each class in ``classes``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in classes:
        where = torch.nonzero(labels == label).flatten()
        chosen.append(where[torch.randperm(len(where), generator=generator)[:per_class]])
    return torch.cat(chosen)


def small_folder(fashion, root: Path) -> Path:
    """The 200-image folder (plus its test split) as PNG files, one subfolder per class."""
    from PIL import Image

    for split, images, labels, per_class in (
        ("train", fashion.train_images, fashion.train_labels, PER_CLASS_TRAIN),
        ("test", fashion.test_images, fashion.test_labels, PER_CLASS_TEST),
    ):
        for index in _stratified(labels, SMALL_CLASSES, per_class, seed=0).tolist():
            folder = root / split / fashion.class_names[int(labels[index])].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index, 0].numpy()).save(folder / f"{index:05d}.png")
    return root


def source_classes(fashion):
    """Fashion-MNIST's other five classes, 1,000 training images each, and their test images."""
    from convlens.data import Dataset

    train = _stratified(fashion.train_labels, SOURCE_CLASSES, SOURCE_PER_CLASS, seed=0)
    test = _stratified(fashion.test_labels, SOURCE_CLASSES, 1000, seed=0)
    return Dataset(
        "fashion-mnist classes 0-4",
        fashion.train_images[train],
        fashion.train_labels[train],
        fashion.test_images[test],
        fashion.test_labels[test],
        [fashion.class_names[c] for c in SOURCE_CLASSES],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    before = cpu_pressure()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU pressure before: {before}")
    rates = [matmul_peak_gflops()]
    print(f"fp32 matmul: {rates[0]:.0f} GFLOP/s")
    fashion = load_dataset("fashion-mnist")
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        sources = {}
        for name, dataset in (("mnist5k", load_dataset("mnist5k")), ("fashion 0-4", source_classes(fashion))):
            start = time.perf_counter()
            result = fit(dataset, TrainConfig(seed=0), temp / name.replace(" ", "-"))
            sources[name] = result.run_dir
            print(
                f"source {name}: {len(dataset.train_labels):,} images, test accuracy "
                f"{100 * result.test_accuracy:.2f} %, {time.perf_counter() - start:.1f} s"
            )
        folder = load_dataset(small_folder(fashion, temp / "small"))
        print(
            f"small folder: {len(folder.train_labels)} train / {len(folder.test_labels)} test images, "
            f"classes {', '.join(folder.class_names)}"
        )
        configs = {
            "scratch": {},
            "init mnist5k": {"init": sources["mnist5k"]},
            "init fashion 0-4": {"init": sources["fashion 0-4"]},
            "init fashion 0-4, lr 0.01": {"init": sources["fashion 0-4"], "lr": 0.01},
            f"init fashion 0-4, freeze {FREEZE_EPOCHS}": {
                "init": sources["fashion 0-4"],
                "freeze_epochs": FREEZE_EPOCHS,
            },
        }
        results: dict[str, list] = {name: [] for name in configs}
        for seed in range(args.seeds):  # configurations interleaved: a disturbance hits them alike
            for name, options in configs.items():
                run = fit(folder, TrainConfig(seed=seed, snapshots=False, **options), temp / f"{name}-{seed}")
                results[name].append(run)
                print(
                    f"  seed {seed} {name:<28} test {100 * run.test_accuracy:6.2f} % (last epoch "
                    f"{100 * run.history[-1]['test_accuracy']:6.2f} %)  {run.train_seconds:5.1f} s  "
                    f"{run.epochs} epochs, kept {run.selected_epoch}"
                )
    rates.append(matmul_peak_gflops())
    rate = sum(rates) / len(rates)
    print(f"\nfp32 matmul before -> after: {rates[0]:.0f} -> {rates[1]:.0f} GFLOP/s")
    print("test accuracy, median (min-max) over seeds: of model.* (the epoch kept on the 20-image")
    print("validation split) and of the last epoch; training seconds, median, and scaled to 234 GFLOP/s")
    for name, runs in results.items():
        kept = [100 * run.test_accuracy for run in runs]
        last = [100 * run.history[-1]["test_accuracy"] for run in runs]
        seconds = median([run.train_seconds for run in runs])
        print(
            f"{name:<30} kept {median(kept):6.2f} % ({min(kept):.2f}-{max(kept):.2f})  last "
            f"{median(last):6.2f} % ({min(last):.2f}-{max(last):.2f})  {seconds:6.1f} s "
            f"({seconds * rate / REFERENCE_GFLOPS:5.1f} s scaled)"
        )
    after = cpu_pressure()
    print(f"CPU pressure after: {after}")
    if any(_busy(value) for value in (before, after)):
        print("the CPU cores were shared with other work during this run: seconds are not clean timings")


def _busy(pressure: str) -> bool:
    """Whether a /proc/pressure/cpu reading (``avg10=1.23``) or a load (``load=1.2``) says the cores were shared."""
    try:
        return float(pressure.split("=")[1]) > 1.0
    except (IndexError, ValueError):
        return False


if __name__ == "__main__":
    main()
