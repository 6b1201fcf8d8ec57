"""Training on a user's own small folder: the default recipe against the previous one, same run.

Builds three image folders from pictures that ship offline, the way a practitioner brings them
(one subfolder per class, mixed sizes and formats, one corrupt file):

- photos: 40 random crops per class of scikit-image's astronaut, chelsea and coffee photos
  (RGB, 40-160 px, PNG and JPEG), trained at --image-size 64;
- shapes: 40 drawn circles, squares and triangles per class (RGB: a dark shape of any colour on
  light paper of any tint, random sizes and places, 48-96 px), trained at 64;
- faces: scikit-image's lfw_subset (100 faces, 100 non-faces, 25x25 grayscale).

For each: the defaults (validation split, divergence guard, adaptive recipe, early stopping)
against the previous recipe (no validation split, batch 64, no BatchNorm, shift only, 230
fixed epochs on 120 images, last epoch kept), with epochs, seconds, final and best accuracy
and rollbacks. Prints the fp32 matmul rate measured in the same run and the training seconds
scaled to 234 GFLOP/s.

    python bench/own_folder.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, matmul_peak_gflops

REFERENCE_GFLOPS = 234.0


def _save(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    picture = Image.fromarray(image)
    if path.suffix == ".jpg":
        picture = picture.convert("RGB")
    picture.save(path)


def photo_folder(root: Path, per_class: int, rng: np.random.Generator) -> Path:
    from PIL import Image
    from skimage import data

    for name in ("astronaut", "chelsea", "coffee"):
        photo = getattr(data, name)()  # (H, W, 3) uint8
        folder = root / name
        folder.mkdir(parents=True)
        height, width = photo.shape[:2]
        for index in range(per_class):
            side = int(rng.integers(60, min(height, width) // 2))
            top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            crop = Image.fromarray(photo[top : top + side, left : left + side])
            size = int(rng.integers(40, 160))
            crop = np.asarray(crop.resize((size, size)))
            _save(crop, folder / f"{name}{index:03d}.{'png' if index % 2 else 'jpg'}")
    (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


def shape_folder(root: Path, per_class: int, rng: np.random.Generator) -> Path:
    from PIL import Image, ImageDraw

    for shape in ("circle", "square", "triangle"):
        folder = root / shape
        folder.mkdir(parents=True)
        for index in range(per_class):
            size = int(rng.integers(48, 97))
            background = tuple(int(v) for v in rng.integers(170, 256, 3))  # light paper, any tint
            picture = Image.new("RGB", (size, size), background)
            draw = ImageDraw.Draw(picture)
            radius = rng.uniform(0.15, 0.35) * size
            cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
            colour = tuple(int(v) for v in rng.integers(0, 120, 3))  # a dark pen, any colour
            if shape == "circle":
                draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
            elif shape == "square":
                draw.rectangle((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
            else:
                points = [
                    (cx + radius * math.cos(a), cy + radius * math.sin(a))
                    for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
                ]
                draw.polygon(points, fill=colour)
            _save(np.asarray(picture), folder / f"{shape}{index:03d}.{'png' if index % 2 else 'jpg'}")
    (root / "square" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def face_folder(root: Path) -> Path:
    from skimage import data

    images = data.lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces
    for index, image in enumerate(images):
        folder = root / ("face" if index < 100 else "not-face")
        folder.mkdir(parents=True, exist_ok=True)
        _save((image * 255).round().astype(np.uint8), folder / f"{index:03d}.png")
    return root


def previous_recipe(size: int):
    """What convlens ran before the validation split and the adaptive recipe (for the same folder)."""
    from convlens.train import TrainConfig

    steps = math.ceil(size / 64)
    return TrainConfig(
        batch_size=64,
        epochs=min(max(20, math.ceil(460 / steps)), 300),
        augment="shift",
        validation_fraction=0.0,
        early_stopping=0,
        model_options={"batchnorm": False},
    )


def run(name: str, dataset, config, scale: float) -> dict:
    from convlens.train import fit

    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(dataset, config, run_dir)
    history = result.history
    best = max(row["test_accuracy"] for row in history)
    row = {
        "name": name,
        "epochs": result.epochs,
        "seconds": result.train_seconds,
        "final": result.test_accuracy,
        "best_test": best,
        "kept": result.selected_epoch,
        "rollbacks": sum(1 for d in result.diagnostics if d["kind"] == "rollback"),
        "warnings": [d["message"] for d in result.diagnostics if d["severity"] == "warning"],
    }
    print(
        f"  {name:<18} {row['epochs']:>4} epochs  {row['seconds']:6.1f} s ({row['seconds'] * scale:6.1f} s at "
        f"{REFERENCE_GFLOPS:.0f} GFLOP/s)  test {100 * row['final']:6.2f} %  best epoch on test "
        f"{100 * best:6.2f} %  kept epoch {row['kept']}  rollbacks {row['rollbacks']}"
    )
    for warning in row["warnings"]:
        print(f"  {'':<18} warning: {warning}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 images per class, no previous-recipe runs")
    args = parser.parse_args()
    import torch

    from convlens.data import load_dataset
    from convlens.train import TrainConfig

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU pressure before: {cpu_pressure()}"
    )
    rate = matmul_peak_gflops()
    scale = rate / REFERENCE_GFLOPS  # seconds here x scale = seconds on a 234 GFLOP/s machine
    print(f"fp32 matmul: {rate:.0f} GFLOP/s; times are also shown scaled to {REFERENCE_GFLOPS:.0f} GFLOP/s")
    per_class = 20 if args.quick else 40
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        folders = {
            "photos": (photo_folder(Path(root) / "photos", per_class, rng), 64),
            "shapes": (shape_folder(Path(root) / "shapes", per_class, rng), 64),
            "faces": (face_folder(Path(root) / "faces"), None),
        }
        for name, (folder, size) in folders.items():
            dataset = load_dataset(folder, image_size=size)
            print(
                f"{name}: {len(dataset.train_labels)} train / {len(dataset.test_labels)} test images, "
                f"{'x'.join(map(str, dataset.input_shape))}"
            )
            run("defaults", dataset, TrainConfig(), scale)
            if not args.quick:
                run("previous recipe", dataset, previous_recipe(len(dataset.train_labels)), scale)
    print(f"CPU pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
