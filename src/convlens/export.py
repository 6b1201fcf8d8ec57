"""A trained run as an ONNX file: the same pixels in, the same logits out, outside PyTorch.

The graph is the whole ``StagedModel``, its ``normalize`` stage included, so it takes what
``Run.predict`` takes: float32 pixels in [0, 1], NCHW, any batch size. The class names, the
input shape and how to feed it travel in the file's ``metadata_props``.

Why torch's own (``torch.export``-based) exporter and not the older TorchScript tracer: the
tracer bakes an ``if`` on pixel values, or a value computed with numpy, into the graph as a
constant and reports success; ``torch.export`` refuses both, and it translates more operators
(an FFT, for one). It costs about a second per export and needs ``onnxscript``.
Nothing is trusted blindly either way: before the file is written, onnxruntime runs the graph
on images it was not traced with and its logits must match PyTorch's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from convlens.errors import ConvlensError, printable
from convlens.run import Run
from convlens.storage import MiB, atomic_write, preflight

# Opset 18 is the oldest torch's exporter writes natively (older requests are silently raised
# to 18), and of those it is the one the most runtimes load.
DEFAULT_OPSET = 18
MIN_OPSET = 18
INPUT_NAME, OUTPUT_NAME, BATCH = "pixels", "logits", "batch"
TRACE_IMAGES = 2  # batch size the graph is traced with: not 1, which torch.export would fix
CHECK_IMAGES = 7  # batch size of the self-check: another size, so the batch axis is proven dynamic
CHECK_TOLERANCE = 1e-3  # max |Δ logits| allowed, relative to the largest logit (float32 reordering is ~1e-6)
INSTALL_HINT = "pip install 'convlens[export]'"


@dataclass
class OnnxExport:
    """What was written: the file, its opset and tensors, and how well onnxruntime matched PyTorch."""

    path: Path
    bytes: int
    opset: int
    inputs: list[dict]  # [{"name", "dtype", "shape"}]; shape [BATCH, C, H, W]
    outputs: list[dict]  # [{"name", "dtype", "shape"}]; shape [BATCH, classes]
    max_abs_logit_difference: float  # onnxruntime vs PyTorch on the check images
    check_images: int  # how many random [0, 1] images the self-check ran
    metadata: dict[str, str]  # the file's metadata_props

    def to_json(self) -> dict:
        return {**asdict(self), "path": str(self.path), "format": "onnx"}


def export_onnx(
    run: Run | str | Path, out_file: str | Path | None = None, opset: int = DEFAULT_OPSET
) -> OnnxExport:
    """Export a trained run to ONNX at ``out_file`` (default ``RUN_DIR/model.onnx``), written atomically.

    Raises a ConvlensError naming the stage at fault when the model cannot be exported (or its
    export does not compute what PyTorch computes); nothing is written then.
    """
    onnx, onnxruntime = _exporter_packages()
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ConvlensError(
            f"opset must be a whole number from {MIN_OPSET} to {latest} (the newest this onnx package "
            f"knows), got {opset!r}",
            parameter="opset",
        )
    if out_file is not None:
        _check_out_file(Path(out_file))  # before loading the model
    if not isinstance(run, Run):
        run = Run.open(run)
    path = Path(out_file) if out_file is not None else run.folder / "model.onnx"
    _check_out_file(path)
    preflight(path.parent, needed=_size_estimate(run.model), why="the ONNX file", parameter="out_file")

    trace, check = _sample_pixels(run.input_shape, run.model)
    try:
        program = _to_onnx(run.model, trace, opset)
        difference = _self_check(onnxruntime, program.SerializeToString(), run.model, check)
    except Exception as exc:
        raise ConvlensError(_failure_text(onnxruntime, run, trace, check, opset, exc)) from None
    _declare_shapes(program, run)
    metadata = _metadata(run)
    for key, value in metadata.items():
        program.metadata_props.add(key=key, value=value)
    program.doc_string = f"convlens {run.model_name} trained on {run.dataset.get('name') or 'unknown data'}"
    blob = program.SerializeToString()
    atomic_write(path, blob)
    graph = program.graph
    return OnnxExport(
        path=path,
        bytes=len(blob),
        opset=next(entry.version for entry in program.opset_import if entry.domain in ("", "ai.onnx")),
        inputs=[_describe_tensor(onnx, value) for value in graph.input],
        outputs=[_describe_tensor(onnx, value) for value in graph.output],
        max_abs_logit_difference=difference,
        check_images=CHECK_IMAGES,
        metadata=metadata,
    )


def _exporter_packages():
    """``(onnx, onnxruntime)``, or one line saying how to install what export needs."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter imports it; fail here, not deep inside)
    except ImportError as exc:
        raise ConvlensError(f"ONNX export needs the {exc.name} package: {INSTALL_HINT}") from None
    return onnx, onnxruntime


def _check_out_file(path: Path) -> None:
    if path.suffix.lower() != ".onnx":
        raise ConvlensError(
            f"out_file {printable(path)}: expected a file name ending in .onnx, such as model.onnx",
            parameter="out_file",
        )
    if path.is_dir():
        raise ConvlensError(
            f"out_file {printable(path)}: is a folder; give a file name such as model.onnx",
            parameter="out_file",
        )


def _size_estimate(model: nn.Module) -> int:
    """About what the file takes: float32 weights and buffers plus the graph."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) + MiB


def _sample_pixels(input_shape: tuple[int, int, int], model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded noise: mid-grey pixels in [0.25, 0.75] to trace with, full-range [0, 1] ones (a batch
    of another size) to check on, so a statistic frozen into the graph at tracing shows up."""
    generator = torch.Generator().manual_seed(0)
    device = next((weight.device for weight in model.parameters()), torch.device("cpu"))
    trace = 0.25 + 0.5 * torch.rand(TRACE_IMAGES, *input_shape, generator=generator)  # (B, C, H, W)
    check = torch.rand(CHECK_IMAGES, *input_shape, generator=generator)
    return trace.to(device), check.to(device)


@contextlib.contextmanager
def _quiet_exporter():
    """Keep torch's exporter from printing progress, warnings and the tracebacks of the capture
    strategies it tries and drops: a failure reaches the user as one ConvlensError line instead."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _to_onnx(module: nn.Module, trace: torch.Tensor, opset: int):
    """The ONNX ``ModelProto`` of ``module`` on inputs like ``trace``, batch axis dynamic."""
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (trace,),
            None,  # keep it in memory: written once, whole, after the self-check
            dynamo=True,
            verbose=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim(BATCH)},),
        )
    return program.model_proto


@torch.no_grad()
def _self_check(onnxruntime, blob: bytes, module: nn.Module, pixels: torch.Tensor) -> float:
    """max |Δ| between onnxruntime's and PyTorch's outputs on ``pixels``; raises if they disagree."""
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    expected = module(pixels).float().cpu()
    (got,) = session.run(None, {session.get_inputs()[0].name: pixels.cpu().numpy()})
    got = torch.from_numpy(got)
    if got.shape != expected.shape:
        raise _Mismatch(f"onnxruntime gives shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}")
    difference = float((got - expected).abs().max()) if got.numel() else 0.0
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    if not difference <= CHECK_TOLERANCE * scale:  # also catches NaN
        raise _Mismatch(
            f"onnxruntime's outputs differ from PyTorch's by up to {difference:.3g} on images it was not "
            "traced with (code that takes another path while exporting, or a value frozen at tracing?)"
        )
    return difference


class _Mismatch(Exception):
    """The exported graph runs but does not compute what the PyTorch module computes."""


def _failure_text(
    onnxruntime, run: Run, trace: torch.Tensor, check: torch.Tensor, opset: int, exc: Exception
) -> str:
    """One line for a failed export: the first stage that fails on its own, found by trying each."""
    what = f"model {run.model_name!r} cannot be exported to ONNX"
    stages = getattr(run.model, "stages", None)
    for name, stage in stages() if callable(stages) else []:
        try:
            _self_check(onnxruntime, _to_onnx(stage, trace, opset).SerializeToString(), stage, check)
        except Exception as stage_exc:
            return f"{what}: stage {name!r} ({type(stage).__name__}): {_reason(stage_exc)}"
        with torch.no_grad():  # not inference_mode: its tensors cannot be traced again
            trace, check = stage(trace), stage(check)
    return f"{what}: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    """The exporter's real complaint (the innermost cause), as a short plain line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if type(exc).__name__ == "GuardOnDataDependentSymNode":
        return "its Python code branches on pixel values (an if on a tensor), which a fixed graph cannot hold"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    missing = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'", text)
    if missing:
        operator = missing.group(1) + ("" if missing.group(2) == "default" else "." + missing.group(2))
        return f"it uses the torch operator {operator}, which has no ONNX translation"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return printable(first_line if len(first_line) <= 240 else first_line[:237] + "...")


def _metadata(run: Run) -> dict[str, str]:
    """What a program outside convlens needs to feed the graph and read its answer."""
    from convlens import __version__

    channels, height, width = run.input_shape
    arguments = run.metadata.get("model", {})
    return {
        "class_names": json.dumps(run.class_names),
        "input_shape": json.dumps([channels, height, width]),
        "input_layout": "NCHW: (batch, channels, height, width), float32",
        "input_range": "pixels in [0, 1] (divide 8-bit values by 255); the model's normalization "
        "is inside the graph",
        "output": "logits (batch, classes) in the order of class_names; softmax gives probabilities",
        # what the graph's normalize stage subtracts and divides by (the model's build arguments)
        "normalization": json.dumps({key: arguments[key] for key in ("mean", "std") if key in arguments}),
        "model_name": run.model_name,
        "convlens_version": __version__,
    }


def _declare_shapes(program, run: Run) -> None:
    """Fill in the sizes the graph leaves open: batch is named, C, H, W and classes are fixed.

    torch.export usually declares them itself; the fallback capture it uses when the first one
    fails (code that calls numpy, for one) can leave every axis unnamed and unsized.
    """
    expected = {INPUT_NAME: [BATCH, *run.input_shape], OUTPUT_NAME: [BATCH, run.num_classes]}
    for value in [*program.graph.input, *program.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name not in expected or len(dims) != len(expected[value.name]):
            continue
        for dim, size in zip(dims, expected[value.name], strict=True):
            if dim.dim_param or dim.dim_value:
                continue
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


def _describe_tensor(onnx, value) -> dict:
    shape = [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    return {"name": value.name, "dtype": dtype, "shape": shape}
