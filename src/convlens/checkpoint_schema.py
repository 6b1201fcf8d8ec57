"""The checkpoint JSON's schema: every field the loader uses, checked before anything is built.

``load_json`` parses a checkpoint's JSON with a size and nesting bound; ``check_metadata``
checks the types and ranges of the fields ``read_checkpoint`` uses (format, model, input
shape, class names, weights), the types of the sections ``Run`` reads, and the fields of
``normalization``, ``history`` and ``metrics`` that predictions and the faces compute with. Every error is one
``ConvlensError`` naming the file and the field: ``model.json: class_names must be a list of
strings, got int 5``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from convlens.data.bundle import MAX_CLASSES
from convlens.data.transforms import MAX_SIDE
from convlens.errors import ConvlensError, printable

FORMAT = "convlens-checkpoint/1"
MAX_JSON_BYTES = 256 * 2**20  # config, metrics, history; a 4,000-class confusion matrix is ~220 MB
MAX_DEPTH = 32  # nesting of objects and lists; a convlens checkpoint uses about 5
MAX_CLASS_NAME_CHARS = 1_000
_SHA256 = re.compile(r"[0-9a-f]{64}")
# sections Run reads when present, and the type each must have
SECTIONS = {
    "normalization": dict,
    "training": dict,
    "metrics": dict,
    "history": list,
    "dataset": dict,
    "versions": dict,
    "validation": dict,
    "diagnostics": list,
}

# what the faces compute with in each history row and in metrics: numbers (or null), texts
HISTORY_NUMBERS = (
    "lr",
    "lr_scale",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "train_seconds",
    "images_per_second",
)
METRIC_NUMBERS = (*HISTORY_NUMBERS, "epoch", "epochs", "selected_epoch")
METRIC_TEXTS = ("selection", "stopped")


def _show(value) -> str:
    """A short description of a JSON value for a message: ``int 5``, ``a list of 3 items``."""
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list):
        if len(value) <= 8 and not any(isinstance(item, dict | list) for item in value):
            return printable(json.dumps(value))[:80]
        return f"a list of {len(value):,} item(s)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = {int: "int", float: "number", str: "string"}.get(type(value), type(value).__name__)
    text = f"{value:,}" if isinstance(value, int) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {printable(text)}"


def _fail(path: Path, field: str, expected: str, value) -> ConvlensError:
    return ConvlensError(f"{printable(path)}: {field} must be {expected}, got {_show(value)}")


def _depth(value) -> int:
    """Nesting depth of parsed JSON, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def load_json(path: Path) -> object:
    """Parse a checkpoint's JSON: at most MAX_JSON_BYTES, nested at most MAX_DEPTH deep."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ConvlensError(
                f"{printable(path)}: {size:,} bytes, over the {MAX_JSON_BYTES // 2**20} MiB limit for a "
                "checkpoint's JSON"
            )
        text = path.read_bytes().decode("utf-8")
        value = json.loads(text)
    except RecursionError:
        value = None
        deep = True
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of over 4,300 digits
        raise ConvlensError(f"{printable(path)}: not valid JSON ({printable(exc)})") from None
    except OSError as exc:
        raise ConvlensError(f"{printable(path)}: cannot read ({exc.strerror or exc})") from None
    else:
        deep = _depth(value) > MAX_DEPTH
    if deep:
        raise ConvlensError(
            f"{printable(path)}: JSON nested more than {MAX_DEPTH} levels deep; not a convlens checkpoint"
        )
    return value


def _int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_shape(path: Path, field: str, value) -> tuple[int, int, int]:
    expected = f"[C, H, W] with C = 1 or 3 and sides from 1 to {MAX_SIDE}"
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] not in (1, 3)
        or not all(_int(side, 1, MAX_SIDE) for side in value)
    ):
        raise _fail(path, field, expected, value)
    return tuple(value)


def _check_numbers(path: Path, field: str, value, count: int, positive: bool) -> None:
    what = f"null or a list of {count} finite {'positive ' if positive else ''}number(s)"
    if value is None:
        return
    if not isinstance(value, list) or len(value) != count:
        raise _fail(path, field, what, value)
    for item in value:
        ok = isinstance(item, int | float) and not isinstance(item, bool) and math.isfinite(item)
        if not ok or (positive and item <= 0):
            raise _fail(path, field, what, item)


def check_weights_file(path: Path, value) -> str:
    """``weights.file``: a plain ``NAME.safetensors`` beside the JSON (no folder, no ``..``)."""
    expected = "a plain file name ending in .safetensors, in the same folder as the JSON"
    if (
        not isinstance(value, str)
        or not value.endswith(".safetensors")
        or value.startswith(".")
        or any(ch in value for ch in "/\\\0:")
        or not value.isprintable()
        or len(value) > 255
    ):
        raise _fail(path, "weights.file", expected, value)
    return value


def check_metadata(path: Path, meta) -> dict:
    """Check every field the loader uses; returns ``meta``. Builds and allocates nothing."""
    from convlens.models import list_models
    from convlens.models._registry import check_model_options

    where = printable(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConvlensError(f"{where}: not a convlens checkpoint (expected format {FORMAT!r})")
    for key, what in (
        ("model", "an object"),
        ("input_shape", "[C, H, W]"),
        ("class_names", "a list of strings"),
        ("weights", "an object"),
    ):
        if key not in meta:
            raise ConvlensError(f"{where}: checkpoint JSON is missing {key!r} (expected {what})")

    model = meta["model"]
    if not isinstance(model, dict):
        raise _fail(path, "model", "an object (name, in_shape, num_classes, mean, std, options)", model)
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(path, "model.name", "a model name", name)
    if name not in list_models():
        raise ConvlensError(
            f"{where}: model.name: unknown model {printable(repr(name))}; choose one of: "
            f"{', '.join(list_models())}"
        )
    in_shape = _check_shape(path, "model.in_shape", model.get("in_shape"))
    classes = model.get("num_classes")
    if not _int(classes, 2, MAX_CLASSES):
        raise _fail(path, "model.num_classes", f"an integer from 2 to {MAX_CLASSES:,}", classes)
    _check_numbers(path, "model.mean", model.get("mean"), in_shape[0], positive=False)
    _check_numbers(path, "model.std", model.get("std"), in_shape[0], positive=True)
    options = model.get("options", {})
    if not isinstance(options, dict):
        raise _fail(path, "model.options", "an object of model options", options)
    try:
        check_model_options(name, options)
    except ConvlensError as exc:
        message = str(exc).removeprefix("model_options: ")
        raise ConvlensError(f"{where}: model.options: {printable(message)}") from None

    shape = _check_shape(path, "input_shape", meta["input_shape"])
    if shape != in_shape:
        raise ConvlensError(
            f"{where}: input_shape {list(shape)} differs from model.in_shape {list(in_shape)}"
        )

    names = meta["class_names"]
    expected = f"a list of {classes:,} strings (one per class)"
    if not isinstance(names, list):
        raise _fail(path, "class_names", expected, names)
    if len(names) != classes:
        raise ConvlensError(
            f"{where}: class_names holds {len(names):,} name(s) but model.num_classes is {classes:,}"
        )
    for index, item in enumerate(names):
        if not isinstance(item, str) or len(item) > MAX_CLASS_NAME_CHARS:
            raise _fail(
                path,
                f"class_names[{index}]",
                f"a string of at most {MAX_CLASS_NAME_CHARS:,} characters",
                item,
            )

    weights = meta["weights"]
    if not isinstance(weights, dict):
        raise _fail(path, "weights", "an object with file and sha256", weights)
    check_weights_file(path, weights.get("file"))
    digest = weights.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise _fail(path, "weights.sha256", "64 lowercase hex digits", digest)
    count = weights.get("tensors")
    if count is not None and not _int(count, 0, 10**6):
        raise _fail(path, "weights.tensors", "a count of tensors", count)

    for key, kind in SECTIONS.items():
        value = meta.get(key)
        if value is not None and not isinstance(value, kind):
            raise _fail(path, key, "an object" if kind is dict else "a list", value)
    _check_read_sections(path, meta, in_shape[0])
    return meta


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)  # NaN: a diverged epoch


def _check_read_sections(path: Path, meta: dict, channels: int) -> None:
    """The fields of ``normalization``, ``history`` and ``metrics`` that predictions, the shift
    check, the report and the explorer compute with: a wrong type there would fail deep inside."""
    normalization = meta.get("normalization") or {}
    _check_numbers(path, "normalization.mean", normalization.get("mean"), channels, positive=False)
    _check_numbers(path, "normalization.std", normalization.get("std"), channels, positive=True)
    if not isinstance(normalization.get("source", ""), str | None):
        raise _fail(path, "normalization.source", "a string", normalization["source"])
    for index, row in enumerate(meta.get("history") or []):
        if not isinstance(row, dict) or not _int(row.get("epoch"), 1, 10**9):
            raise _fail(path, f"history[{index}]", "an object with an epoch number from 1", row)
        for key in HISTORY_NUMBERS:
            if row.get(key) is not None and not _is_number(row[key]):
                raise _fail(path, f"history[{index}].{key}", "a number or null", row[key])
    metrics = meta.get("metrics") or {}
    for key, value in metrics.items():
        if key in METRIC_NUMBERS and value is not None and not _is_number(value):
            raise _fail(path, f"metrics.{key}", "a number or null", value)
        if key in METRIC_TEXTS and value is not None and not isinstance(value, str):
            raise _fail(path, f"metrics.{key}", "a string or null", value)
