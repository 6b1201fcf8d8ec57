"""`convlens export`: a trained run as a file other runtimes load. The work is in convlens.export."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import out, print_json
from convlens.errors import ConvlensError, printable

FORMATS = ("onnx",)


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="Run folder (or checkpoint .json) written by `convlens train`."),
    export_format: str = typer.Option("onnx", "--format", help="File format: onnx (the only one so far)."),
    out_file: Path = typer.Option(
        None, "--out", "-o", help="File to write, ending in .onnx (default: RUN_DIR/model.onnx)."
    ),
    opset: int = typer.Option(
        None,
        "--opset",
        metavar="N",
        help="ONNX opset version, 18 or newer (default 18: the oldest PyTorch's exporter writes, so the "
        "one the most runtimes load).",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print {path, bytes, opset, inputs, outputs, max_abs_logit_difference, check_images, "
        "metadata, format}.",
    ),
) -> None:
    """Export a trained model to ONNX: pixels in [0, 1] in, class logits out, any batch size.

    The model's normalization is inside the graph, so the file takes what `convlens predict`
    feeds the model (float32, N x C x H x W); class names, input shape and how to feed it are
    in the file's metadata. Before writing, onnxruntime runs the graph on 7 random images and
    its logits must match PyTorch's; the file is written whole or not at all.
    Needs: pip install 'convlens\\[export]'

    Examples:

      convlens export runs/mnist                 (writes runs/mnist/model.onnx)

      convlens export runs/mnist --out mnist.onnx --opset 20 --json
    """
    if export_format.lower() not in FORMATS:  # before importing torch: a typo fails at once
        raise ConvlensError(f"--format must be one of: {', '.join(FORMATS)}, got {export_format!r}")
    from convlens.export import DEFAULT_OPSET, export_onnx

    result = export_onnx(run_dir, out_file, opset=DEFAULT_OPSET if opset is None else opset)
    if as_json:
        return print_json(result.to_json())
    from convlens.storage import format_bytes

    def tensor_text(tensor: dict) -> str:
        return f"{tensor['name']} {tensor['dtype']} [{', '.join(map(str, tensor['shape']))}]"

    out.print(
        f"wrote {printable(result.path)} ({format_bytes(result.bytes)}, ONNX opset {result.opset})",
        markup=False,
        soft_wrap=True,
    )
    for tensor in result.inputs:
        out.print(
            f"  input   {tensor_text(tensor)}: pixels in [0, 1], normalization inside",
            markup=False,
            soft_wrap=True,
        )
    for tensor in result.outputs:
        out.print(
            f"  output  {tensor_text(tensor)}: one per class, names in the metadata",
            markup=False,
            soft_wrap=True,
        )
    out.print(
        f"  check   onnxruntime matches PyTorch to {result.max_abs_logit_difference:.2g} "
        f"(max |Δ logit|, {result.check_images} random images)",
        markup=False,
        soft_wrap=True,
    )
    return None
