"""Core commands: datasets, models, train, eval, predict, demo."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import (
    ProgressBar,
    classification_tables,
    err,
    init_summary,
    out,
    percent,
    predictions_table,
    print_json,
    shift_warning,
    significant,
    training_summary,
)
from convlens.errors import ConvlensError

JSON_HELP = "Print one JSON object to stdout instead of tables."
INIT_HELP = "Start from trained weights: a run folder (or its NAME.json) or a .safetensors file. Tensors whose name and shape fit are loaded, the classifier head is re-initialised when the classes differ, the new data's normalization is kept; stderr lists what was loaded, re-initialised and skipped. With --model graph, an imported run trains on as itself."
FREEZE_HELP = "With --init: train only the head (the re-initialised layers and the last linear layer) for this many epochs, then everything."


def parse_key_values(pairs: list[str], flag: str) -> dict:
    """Repeated ``flag KEY=VALUE`` options: JSON values (numbers, true/false, lists), else text."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConvlensError(f"{flag}: expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@app.command()
def train(
    data: str = typer.Option(
        "mnist5k",
        "--data",
        "-d",
        help="Built-in name or a path in a registered data format (both listed by `convlens datasets`).",
    ),
    model: str = typer.Option(
        "convnet", "--model", "-m", help="Registered model name (listed by `convlens models`)."
    ),
    epochs: int = typer.Option(
        None,
        "--epochs",
        "-e",
        help="Epochs (default: enough for 460 steps, 20-100, up to 2k training images; 6 up to 20k; "
        "else 10). Early stopping may end sooner.",
    ),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Run folder (default: runs/DATA-MODEL)."),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="Images per step (default: 64, 32 up to 500 training images, 512 above 20k on a GPU).",
    ),
    lr: float = typer.Option(
        None,
        "--lr",
        help="Peak learning rate of the OneCycle schedule (SGD, Nesterov; default 0.1, on a GPU scaled "
        "with the batch: 0.4 at 512).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for initialization, shuffling and augmentation."),
    image_size: str = typer.Option(None, "--image-size", help="Resize images to N or HxW pixels."),
    model_option: list[str] = typer.Option(
        [], "--model-option", help="Model option KEY=VALUE, e.g. width=32."
    ),
    augment: str = typer.Option(
        "auto",
        "--augment",
        help="auto, affine (rotate/zoom/shift), flip-shift, shift, flip or none; segmentation masks move with their images.",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    early_stopping: int = typer.Option(
        None,
        "--early-stopping",
        help="Stop after this many epochs without a better validation score (default: a fifth of the "
        "schedule, at least 10; 0: off).",
    ),
    time_budget: float = typer.Option(
        None, "--time-budget", help="Stop after the epoch that passes this many seconds of training."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the interrupted run in --out from its last epoch."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in --out."),
    no_snapshots: bool = typer.Option(
        False,
        "--no-snapshots",
        help="Do not save the first layer's kernels and a probe image's feature maps per epoch "
        "(snapshots/, for the explorer's epoch slider; skipped anyway above 64 MiB per run).",
    ),
    init: str = typer.Option(None, "--init", help=INIT_HELP),
    freeze_epochs: int = typer.Option(0, "--freeze-epochs", help=FREEZE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train a CNN on a data set; writes checkpoints and metrics.jsonl to the run folder.

    Examples:

      convlens train --data mnist5k --out runs/mnist

      convlens train --data ./xrays --image-size 64 --model resnet8 --epochs 20 --out runs/xray

      convlens train --data mnist5k --out runs/mnist --resume

      convlens train --data ./few-shoes --init runs/mnist --freeze-epochs 10 --out runs/shoes

      convlens train --data ./xrays --model graph --init runs/imported --freeze-epochs 3 --out runs/tuned

      convlens train --data scenes --out runs/scenes        # segmentation: a U-Net, scored by mean IoU

      convlens train --data ./cells --out runs/cells         # a folder with images/ and masks/ (class-id PNGs)

    Segmentation data (scenes, portrait, a folder with images/ and masks/, an .npz with masks)
    trains a U-Net by default (--model fcn for the plain FCN); the epoch kept is chosen by
    validation mean IoU, and --json adds test_mean_iou, test_pixel_accuracy, test_dice and
    per_class_iou.

    Several processes or machines: torchrun --nproc-per-node 4 -m convlens train ... (docs/distributed.md).
    """
    from convlens.data import load_dataset, spec_task
    from convlens.runlock import refuse_if_locked
    from convlens.storage import preflight
    from convlens.train import TrainConfig, fit
    from convlens.train.distributed import join_process_group, launched_world

    planned = launched_world()  # under torchrun: this process's rank, and how many there are
    if not planned.is_main:
        _silence_this_process()
    config = TrainConfig(
        model=model,
        model_options=parse_key_values(model_option, "--model-option"),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=augment,
        device=device,
        early_stopping=early_stopping,
        max_seconds=time_budget,
        snapshots=not no_snapshots,
        init=init,
        freeze_epochs=freeze_epochs,
    )
    config.check()  # before loading data: a bad flag should fail in milliseconds
    if batch_size is not None:
        planned.check_batch(batch_size)  # the world size must divide it
    if model == "convnet" and not model_option and spec_task(data) == "segmentation":
        config.model = model = "unet"  # the default family is a classifier; masks need a U-Net
    out_dir = out_dir or Path("runs") / f"{Path(data).name}-{model}"
    with join_process_group(device) as world:  # torchrun's processes, or this one alone
        with world.together():  # data one machine cannot load stops every process
            if world.is_main:  # the one process that writes --out
                refuse_if_locked(out_dir)  # another training writing there, free space, writable: fail
                preflight(out_dir)  # before minutes of data loading
                _refuse_finished_run(out_dir, resume, overwrite)  # the error first, no header before it
            dataset = load_dataset(data, image_size=image_size)
        world_note = f", {world.size} processes" if world.distributed else ""
        err.print(
            f"training [bold]{model}[/] on [bold]{dataset.name}[/] "
            f"({len(dataset.train_labels):,} train / {len(dataset.test_labels):,} test, "
            f"{'x'.join(map(str, dataset.input_shape))}{world_note}) → {out_dir}"
        )
        bar = ProgressBar()
        try:
            result = fit(dataset, config, out_dir, resume, overwrite, observer=bar, world=world)
        except KeyboardInterrupt:
            bar.close()
            if not (Path(out_dir) / "last.json").is_file():  # stopped before its first epoch was saved
                raise ConvlensError(
                    f"interrupted before the first epoch was saved; start again with: convlens train --data {data} "
                    f"--out {out_dir}"
                ) from None
            raise ConvlensError(
                f"interrupted; continue with: convlens train --data {data} --out {out_dir} --resume"
            ) from None
        finally:
            bar.close()
    init_summary(result.init)  # what --init loaded, re-initialised and skipped: stderr, with --json too
    if as_json:
        return print_json({key: value for key, value in result.to_json().items()})
    training_summary(result)
    out.print(f"checkpoint: {result.checkpoint}   metrics: {Path(result.run_dir) / 'metrics.jsonl'}")


def _refuse_finished_run(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """A finished run in --out without --resume or --overwrite is refused before the data load
    and the "training ..." line: fit() refuses it too (``train.run_folder``), but only after both."""
    if (
        not resume
        and not overwrite
        and any((Path(out_dir) / f"{n}.json").exists() for n in ("model", "last"))
    ):
        raise ConvlensError(
            f"--out {out_dir}: already holds a run; pass --resume to continue it or --overwrite to replace it"
        )


def _silence_this_process() -> None:
    """Under torchrun rank 0 alone talks to the user: the other processes print nothing, not even
    the one-line error rank 0 prints too; a crash still shows its traceback."""
    import logging
    import os
    import sys
    import traceback

    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    logging.getLogger("convlens").disabled = True
    sys.excepthook = lambda kind, error, trace: traceback.print_exception(
        kind, error, trace, file=sys.__stderr__
    )


@app.command("eval")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    data: str = typer.Option(
        None, "--data", "-d", help="Data set to evaluate on (default: the training data)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Accuracy, per-class precision/recall and confusion matrix of a trained model on a data set's test split.

    A segmentation run gets pixel accuracy, mean IoU, Dice and the per-class IoU table instead
    (--json: test_mean_iou, test_pixel_accuracy, test_dice, per_class_iou).

    Examples:

      convlens eval runs/mnist

      convlens eval runs/mnist --data fashion-mnist --json
    """
    from convlens.metrics import classification_summary
    from convlens.run import Run
    from convlens.train import evaluate

    run = Run.open(run_dir)
    if run.task == "segmentation":
        from convlens.cli.segment_cmds import evaluate_segmentation

        return evaluate_segmentation(run, data, as_json)
    dataset, spec = run.data(data)
    result = evaluate(run.model, dataset.test_images, dataset.test_labels)
    per_class, confusion = classification_summary(dataset.test_labels, result["predictions"], run.class_names)
    summary = {
        "data": spec,
        "images": int(dataset.test_labels.shape[0]),
        "test_accuracy": result["accuracy"],
        "test_loss": significant(result["loss"]),  # a float32 sum: 6 digits mean something
        "per_class": per_class,
        "confusion": confusion,
    }
    if as_json:
        return print_json(summary)
    out.print(
        f"[bold]{spec}[/]: accuracy {percent(summary['test_accuracy'])} on {summary['images']:,} test images, "
        f"loss {summary['test_loss']:.4f}"
    )
    classification_tables(per_class, confusion, run.class_names)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    images: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes to show per image."),
    invert: bool = typer.Option(
        False,
        "--invert",
        help="Classify 1 − pixels: dark-on-light images (a pen digit on paper) for a light-on-dark model.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print [{file, predictions: [{class, probability}], shift}]; "
        "a file that cannot be read gets {file, error, predictions: []}. "
        "Segmentation run: [{file, shares: [{class, index, pixels, share}], shift, files}].",
    ),
    out_dir: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Segmentation run: write per image STEM.mask.png (palette PNG whose pixel values are the "
        "class ids), STEM.overlay.png (classes tinted over the image) and STEM.json (per-class pixel shares).",
    ),
    portrait: bool = typer.Option(
        False,
        "--portrait",
        help="Segmentation run, with --out: also STEM.portrait.png, the background (class 0) blurred or greyed "
        "and every other pixel unchanged, at the image file's own size (longer side at most 1024; the mask "
        "upsampled nearest-neighbour); built-in pictures and DICOM at the model's input size.",
    ),
    portrait_effect: str = typer.Option(
        "blur", "--portrait-effect", help="blur (Gaussian) or grey (desaturated, darker)."
    ),
    portrait_radius: float = typer.Option(
        6.0,
        "--portrait-radius",
        help="Blur's standard deviation in pixels of the model's input, scaled with the image's size.",
    ),
) -> None:
    """Classify images with a trained model (converted to its input: grayscale/RGB, resized).

    An image far from the training images (a photo for a digit model, or inverted colours)
    gets a one-line warning on stderr; --json carries the check as "shift".
    A file that cannot be read is skipped with a one-line warning (exit 2 only if none can be).

    A segmentation run prints each image's per-class pixel shares; --out writes its mask,
    overlay and shares, --portrait a portrait-mode picture.

    Examples:

      convlens predict runs/mnist digit.png more_digits/ --top-k 3

      convlens predict runs/scenes photo.png --out masks/ --portrait --portrait-effect grey
    """
    from convlens.run import Run

    run = Run.open(run_dir)
    if run.task == "segmentation":
        from convlens.cli.segment_cmds import predict_segmentation

        return predict_segmentation(
            run, images, out_dir, portrait, portrait_effect, portrait_radius, invert, as_json
        )
    if out_dir is not None or portrait:
        flag = "--out" if out_dir is not None else "--portrait"
        raise ConvlensError(
            f"{flag}: {run.name} is a classification run; masks and portraits need a segmentation run"
        )
    rows = run.predict_files(images, top_k, invert=invert)
    for row in rows:
        shift_warning(row["file"], row.get("shift"), invert)
    if as_json:
        return print_json(significant(rows))  # float32 probabilities and shift figures: 6 digits
    predictions_table(rows)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder for the demo model."),
    no_serve: bool = typer.Option(
        False, "--no-serve", help="Exit after training instead of starting the explorer (for scripts)."
    ),
    port: int = typer.Option(8000, "--port", "-p", help="Port of the explorer."),
) -> None:
    """Train the default CNN on 5,000 real MNIST digits, classify a few, write a report, open the explorer.

    The explorer runs on http://127.0.0.1:8000/ until Ctrl-C; --no-serve stops after the report.
    Runs trained from the explorer's Train tab go to OUT/runs/, and only those are listed beside
    the demo's. Interactive, so no --json: for machine-readable results use train, eval and
    report --json.

    Examples:

      convlens demo

      convlens demo --out runs/demo2 --no-serve
    """
    from convlens.cli.demo import run_demo

    run_demo(out_dir, serve=not no_serve, port=port)
