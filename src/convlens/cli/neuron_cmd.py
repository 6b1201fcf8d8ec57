"""``convlens neuron``: one channel of one stage, from every side (the explorer's neuron panel).

The numbers come from ``convlens.inspect.neurons``; the text and JSON from
``convlens.views.neuron_record``, the figure from ``convlens.views.plots.neurons``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import err, out, print_json, shift_warning, significant
from convlens.errors import ConvlensError


@app.command()
def neuron(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    stage: str = typer.Option(
        ...,
        "--stage",
        help="A stage with feature maps: conv, ReLU, BatchNorm or pooling (e.g. conv2, relu2).",
    ),
    channel: int = typer.Option(..., "--channel", help="The channel of that stage (0 is the first)."),
    image: str = typer.Option(
        None,
        "--image",
        help="Image file or built-in picture (smiley, digits:N, ...) to show the channel on "
        "(default: the first test image).",
    ),
    invert: bool = typer.Option(False, "--invert", help="Use 1 − pixels (a dark-on-light image)."),
    out_dir: Path = typer.Option(
        None, "--out", "-o", help="Folder for neuron-STAGE-CHANNEL.png (default: RUN_DIR/neurons)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the whole panel as one JSON object (docs/explorer.md, Neuron panel)."
    ),
) -> None:
    """One channel in full: kernel and feeders, its map on an image, what its centre unit responds
    to most, the regularised visualization of the whole channel beside the best test image's
    activation, the top and bottom test patches (cropped to the receptive field), whether it is
    dead, and what zeroing it does.

    Examples:

      convlens neuron runs/mnist --stage conv1 --channel 3

      convlens neuron runs/mnist --stage relu2 --channel 7 --image digit.png --out neurons/

      convlens neuron runs/mnist --stage pool2 --channel 0 --json
    """
    from convlens.data import to_float
    from convlens.inspect.neurons import check_neuron
    from convlens.inspect.neurons import neuron as inspect_neuron
    from convlens.run import Run
    from convlens.views import plots
    from convlens.views.neuron_record import neuron_lines, neuron_record
    from convlens.views.plots.neurons import neuron_figure

    run = Run.open(run_dir)
    run.require_task("classification", "ablation here is about one class per image")
    check_neuron(run.model, stage, channel)  # a bad stage or channel fails before data is read
    try:
        dataset, _ = run.data()  # the split's own order: patch numbers are explorer test indices
        test_images, test_labels = dataset.test_images, dataset.test_labels
    except ConvlensError as exc:
        if image is None:
            raise ConvlensError(
                f"--image: the run's test images are not available ({exc}); give an image"
            ) from None
        err.print(f"no test patches: the run's test images are not available ({exc})", markup=False)
        test_images = test_labels = None
    if image is None:
        found = run.input(to_float(test_images[0]), name="test image 0")
    else:
        found = run.input(image, invert=invert)
    shift = found.shift_json()
    shift_warning(found.source, shift, invert)
    result = inspect_neuron(
        run.model, stage, channel, found.pixels, test_images, test_labels, optimum=True, visualization=True
    )
    folder = out_dir if out_dir is not None else run.folder / "neurons"
    figure = neuron_figure(result, found.pixels, run.class_names, test_labels)
    path = plots.save_png(figure, folder / f"neuron-{stage}-{channel}.png")
    if as_json:
        record = neuron_record(result, run.class_names, test_labels)
        return print_json({**significant(record), "input": found.source, "shift": shift, "file": str(path)})
    for line in neuron_lines(result, run.class_names, test_labels):
        out.print(line, markup=False, soft_wrap=True)
    out.print(f"wrote {path}", markup=False, soft_wrap=True)
    return None
