"""`convlens demo` / `make demo`: the main job on built-in data, end to end, in about a minute."""

from __future__ import annotations

from pathlib import Path

from convlens.cli.render import ProgressBar, err, out, predictions_table, training_summary


def save_samples(images, labels, class_names: list[str], folder: Path, count: int = 6) -> list[Path]:
    """Write ``count`` test images of different classes (``one_per_class``) as PNG files, named by their class."""
    from PIL import Image

    from convlens.inspect.analyses import one_per_class

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in one_per_class(labels, count):
        array = images[index].permute(1, 2, 0).squeeze(-1).numpy()  # (H, W) or (H, W, 3) uint8
        path = folder / f"test{index:02d}-true-{class_names[int(labels[index])]}.png"
        Image.fromarray(array).save(path)
        files.append(path)
    return files


def run_demo(out_dir: Path, serve: bool = False, port: int = 8000) -> None:
    from convlens.data import load_dataset
    from convlens.run import Run
    from convlens.train import TrainConfig, fit

    dataset = load_dataset("mnist5k")
    err.print(
        f"[bold]convlens demo[/]: training the default CNN (convnet) on {len(dataset.train_labels):,} real MNIST "
        f"digits, testing on {len(dataset.test_labels):,} held-out ones"
    )
    bar = ProgressBar()
    try:
        result = fit(dataset, TrainConfig(), out_dir, overwrite=True, observer=bar)
    finally:
        bar.close()
    training_summary(result)
    samples = save_samples(dataset.test_images, dataset.test_labels, dataset.class_names, out_dir / "samples")
    out.print("\n[bold]a few held-out digits, as `convlens predict` sees them:[/]")
    predictions_table(Run.open(out_dir).predict_files(samples, top_k=3))
    out.print(f"""
[bold]what next[/]
  classify your own images (PNG/JPEG, any size):
    convlens predict {out_dir} {out_dir / "samples"} --json
  re-evaluate the checkpoint:
    convlens eval {out_dir}
  train on 60,000 clothing images:
    convlens train --data fashion-mnist --out runs/fashion
  train on your own folder (one subfolder per class):
    convlens train --data ./my_images --image-size 64 --out runs/mine
  look inside: feature maps, filters, Grad-CAM and one cell's arithmetic:
    convlens explain {out_dir} {samples[0]} --out {out_dir / "explain"}
    convlens explain {out_dir} {samples[0]} --stage conv1 --at 0,14,14
  fool it with an invisible perturbation:
    convlens attack {out_dir} --eps-sweep 0,0.05,0.1,0.2 --out {out_dir / "attack"}
  test what CNN articles claim, as experiments:
    convlens lab all --out runs/lab
  see what is built in:
    convlens datasets;  convlens models""")
    from convlens.report import build_report

    err.print("writing the report (training curves, confusion matrix, Grad-CAM, filters, attacks) ...")
    report = build_report(out_dir)
    out.print(
        f"\n[bold]report[/]: {report.resolve()}  (one self-contained HTML file; open it in any browser)"
    )
    if serve:  # `make demo` ends in the explorer; `convlens demo --no-serve` stops here
        from convlens.cli.serve_cmd import serve_runs

        out.print(f"\n[bold]explore the model in your browser[/] (later: convlens serve {out_dir})")
        serve_runs([out_dir], port=port, runs_dir=demo_runs_dir(out_dir))


def demo_runs_dir(out_dir: Path) -> Path:
    """Where the explorer's Train tab writes, and which runs it lists beside the demo's: a folder
    of the demo's own. ``out_dir.parent`` listed every run beside it (``--out ~/demo``: the home
    folder's every subfolder, and new trainings written into the home folder)."""
    return out_dir / "runs"
