"""What predict, eval and explain do for a segmentation run: masks, overlays, portraits, IoU, one pixel.

The commands themselves live in ``core`` and ``inspect_cmds``; they hand a segmentation run to
these functions, so each command keeps one name and one --help for both tasks. Numbers come
from ``convlens.predict``, ``convlens.inspect.pixels`` and ``convlens.inspect.portrait``;
colours and PNG bytes from ``convlens.views.segmentation_colours``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from convlens.cli.render import err, iou_table, out, percent, print_json, significant
from convlens.errors import ConvlensError

PORTRAIT_MAX_SIDE = 1024  # the portrait at the photo's size, scaled down to this longer side

PIXEL_HELP = (
    "ROW,COL of an output pixel of a segmentation run: print its class probabilities and the window "
    "of every stage's map it can see, and draw a Grad-CAM of its class (pixel-ROW-COL.png)."
)


def refuse_segmentation(run, instead: str) -> None:
    """One line for a classification-only command on a segmentation run (exit 2), naming what to use."""
    if run.task == "segmentation":
        raise ConvlensError(f"{run.name} is a segmentation run (a class per pixel); {instead}")


def _read_all(run, images: list[Path], invert: bool) -> list[tuple[Path, object]]:
    """Every readable image as the model's input; unreadable ones skipped with a warning, as predict."""
    from convlens.predict import image_files

    files, loaded, errors = image_files(images), [], []
    for file in files:
        try:
            loaded.append((file, run.input(file, invert=invert)))
        except ConvlensError as exc:
            errors.append(str(exc))
    if not loaded:
        raise ConvlensError(
            errors[0]
            if len(files) == 1
            else f"none of the {len(files)} files could be read, e.g. {errors[0]}"
        )
    for message in errors:
        logging.getLogger("convlens").warning("%s; skipped", message)
    return loaded


def _original(run, file: Path):
    """The photo at its own size (longer side at most ``PORTRAIT_MAX_SIDE``) as (3, H, W) in [0, 1],
    or None for what has no size of its own here (a DICOM or built-in picture)."""
    import torch
    import torch.nn.functional as F

    from convlens.data.readers import decode_image
    from convlens.inputs import read_header

    if read_header(file).kind != "image":
        return None
    rgb = torch.from_numpy(decode_image(file).copy()).permute(2, 0, 1).float() / 255  # (3, H, W)
    scale = PORTRAIT_MAX_SIDE / max(rgb.shape[1:])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[2] * scale)))
        rgb = F.interpolate(rgb[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return rgb.clamp(0, 1)


def _portrait(run, file: Path, pixels, mask, effect: str, radius: float):
    """The portrait at the photo's own size (mask upsampled nearest-neighbour) where the file has
    one, else at the model's input size; returns the (C, H, W) picture."""
    import torch
    import torch.nn.functional as F

    from convlens.inspect.portrait import portrait_effect, scaled_radius

    photo = _original(run, file)
    if photo is None:
        return portrait_effect(pixels, mask != 0, effect, radius)
    size = tuple(photo.shape[1:])
    big = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.int64)
    return portrait_effect(photo, big != 0, effect, scaled_radius(radius, tuple(mask.shape), size))


def predict_segmentation(
    run, images, out_dir, portrait: bool, effect: str, radius: float, invert: bool, as_json: bool
):
    """`convlens predict` on a segmentation run: per-class shares; with ``out_dir`` the files."""
    from convlens.inspect.portrait import EFFECTS, MAX_RADIUS
    from convlens.predict import segment
    from convlens.storage import atomic_write
    from convlens.views.segmentation_colours import mask_png, overlay, rgb_pixels, rgb_png

    if effect not in EFFECTS:
        raise ConvlensError(f"--portrait-effect: expected one of {', '.join(EFFECTS)}, got {effect!r}")
    if not 0 < radius <= MAX_RADIUS:
        raise ConvlensError(
            f"--portrait-radius: expected a number of pixels above 0 and at most {MAX_RADIUS:g}"
        )
    if portrait and out_dir is None:
        raise ConvlensError("--portrait writes pictures: give --out DIR")
    loaded = _read_all(run, images, invert)
    stems = [file.name.rsplit(".", 1)[0] for file, _ in loaded]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if out_dir is not None and twice:
        raise ConvlensError(f"--out: two images would write {twice[0]}.*; predict them into separate folders")
    rows, pending = [], []  # everything computed before the first file is written
    for (file, item), stem in zip(loaded, stems, strict=True):
        maps = segment(run.model, item.pixels, run.class_names)
        row = {"file": str(file), "shares": maps.shares, "shift": item.shift_json()}
        if out_dir is not None:
            files = {
                f"{stem}.mask.png": mask_png(maps.mask, run.num_classes),
                f"{stem}.overlay.png": rgb_png(overlay(item.pixels, maps.mask, k=run.num_classes)),
            }
            if portrait:
                picture = _portrait(run, file, item.pixels, maps.mask, effect, radius)
                files[f"{stem}.portrait.png"] = rgb_png(rgb_pixels(picture))
            row["files"] = [str(Path(out_dir) / name) for name in [*files, f"{stem}.json"]]
            files[f"{stem}.json"] = (json.dumps(significant(row), indent=2) + "\n").encode()
            pending.append(files)
        rows.append(row)
    for files in pending:
        for name, data in files.items():
            atomic_write(Path(out_dir) / name, data, durable=False)
    if as_json:
        return print_json(significant(rows))
    for row in rows:
        shares = ", ".join(f"{s['class']} {percent(s['share'])}" for s in row["shares"] if s["pixels"])
        out.print(f"[bold]{row['file']}[/]: {shares}", soft_wrap=True)
    if pending:
        err.print(f"wrote {sum(len(f) for f in pending)} files to {out_dir}")
    return None


def evaluate_segmentation(run, data, as_json: bool):
    """`convlens eval` on a segmentation run: pixel accuracy, mean IoU, Dice, per-class IoU."""
    from convlens.pixel_metrics import segmentation_scores
    from convlens.train import evaluate

    dataset, spec = run.data(data)
    result = evaluate(run.model, dataset.test_images, dataset.test_labels)
    scores = segmentation_scores(result["confusion"], run.class_names)
    summary = {
        "data": spec,
        "images": int(dataset.test_labels.shape[0]),
        "pixels": int(result["pixels"]),
        "test_pixel_accuracy": scores["pixel_accuracy"],
        "test_mean_iou": scores["mean_iou"],
        "test_dice": scores["dice"],
        "test_loss": significant(result["loss"]),
        "per_class_iou": scores["per_class_iou"],
    }
    if as_json:
        return print_json(significant(summary))
    out.print(
        f"[bold]{spec}[/]: mean IoU {percent(summary['test_mean_iou'])}, Dice {percent(summary['test_dice'])}, "
        f"pixel accuracy {percent(summary['test_pixel_accuracy'])} on {summary['images']:,} test images "
        f"({summary['pixels']:,} scored pixels)",
        soft_wrap=True,
    )
    iou_table(scores["per_class_iou"])
    return None


def _pixel(text: str, size: tuple[int, int]) -> tuple[int, int]:
    try:
        row, col = (int(part) for part in text.split(","))
    except ValueError:
        raise ConvlensError(f"--pixel: expected ROW,COL as 2 whole numbers, got {text!r}") from None
    if not (0 <= row < size[0] and 0 <= col < size[1]):
        raise ConvlensError(
            f"--pixel: {row},{col} is outside the model's {size[0]}x{size[1]} input (rows 0..{size[0] - 1}, "
            f"cols 0..{size[1] - 1})"
        )
    return row, col


def explain_segmentation_pixel(
    run, image: str, pixel: str, out_dir, stage, target, invert: bool, as_json: bool
):
    """`convlens explain --pixel` on a segmentation run (``explain``'s conventions: PNGs in --out)."""
    from convlens.cli.render import shift_warning
    from convlens.inspect import Attribution
    from convlens.inspect.pixels import explain_pixel
    from convlens.views import plots

    row, col = _pixel(pixel, run.input_shape[1:])
    target_index = run.class_index(target)
    found = run.input(image, invert=invert)
    shift_warning(found.source, found.shift_json(), invert)
    explained = explain_pixel(run.model, found.pixels, row, col, target_index, stage=stage)
    names = run.class_names
    probability = float(explained.probabilities[explained.target])
    attribution = Attribution(
        "grad-cam", explained.target, explained.stage, explained.grad_cam, explained.grad_cam, probability
    )
    figure = plots.attribution_map(found.pixels, attribution, names[explained.target])
    figure.suptitle(
        f"why pixel {row},{col} is '{names[explained.target]}' (p = {probability:.3f})", fontsize=10
    )
    path = plots.save_png(
        figure, Path(out_dir if out_dir is not None else run.folder / "explain") / f"pixel-{row}-{col}.png"
    )
    summary = {
        "pixel": [row, col],
        "prediction": {"class": names[explained.predicted], "index": explained.predicted},
        "probabilities": {name: float(p) for name, p in zip(names, explained.probabilities, strict=True)},
        "grad_cam": {"stage": explained.stage, "target": explained.target},
        "receptive_fields": [{**f, "shape": list(f["shape"])} for f in explained.receptive_fields],
        "files": [str(path)],
        "shift": found.shift_json(),
    }
    if as_json:
        return print_json(significant(summary))
    out.print(f"pixel {row},{col}: [bold]{names[explained.predicted]}[/]", soft_wrap=True)
    for name, p in summary["probabilities"].items():
        out.print(f"  {name:<20} {100 * p:6.1f} %", markup=False)
    out.print(
        "what this pixel can see (rows top..bottom, cols left..right of each stage's map):", markup=False
    )
    for f in explained.receptive_fields:
        whole = " (whole map)" if f["whole"] else ""
        out.print(
            f"  {f['stage']:<16} rows {f['top']}..{f['bottom']}, cols {f['left']}..{f['right']} of "
            f"{f['shape'][1]}x{f['shape'][2]}{whole}",
            markup=False,
        )
    out.print(f"Grad-CAM of '{names[explained.target]}' at {explained.stage}: wrote {path}", markup=False)
    return None
