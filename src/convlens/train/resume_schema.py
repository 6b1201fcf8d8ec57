"""What ``resume`` reads of ``last.json`` and ``last.safetensors``, checked before any of it is used.

``checkpoint_schema`` checks what every checkpoint holds (model, classes, weights,
normalization); a resumable one carries more: the ``training`` config, the ``dataset`` it was
trained on, the ``history``, the ``resume`` section (progress, optimizer and schedule) and the
optimizer and random-generator tensors. A ``last.json`` written by another convlens or edited by
hand is refused here with one line naming the file and the field, before the folder is touched.

A ``training`` key this convlens does not know comes from a newer one (or a typo): refused,
naming the key and the version that wrote it, since ignoring it would resume a different
training. A key an older convlens did not write is filled only when the value that reproduces
that version's training is known (``FILLED_WHEN_MISSING``); any other missing key is refused.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path

from convlens.errors import ConvlensError, printable
from convlens.train.recipe import TrainConfig

# training keys added after the format began, with the value that trains as before they existed
FILLED_WHEN_MISSING = {"max_seconds": None, "snapshots": False, "init": None, "freeze_epochs": 0}
# resume takes the weights from last.*: where the first weights came from is not read again
NOT_READ_AGAIN = {"init": None, "freeze_epochs": 0}
RESOLVED = ("epochs", "batch_size", "lr")  # chosen from the data before the first save: never None
PROGRESS_INTS = {"epoch": 1, "best_epoch": 0, "stale": 0}  # resume key -> smallest value


def _fail(path: Path, field: str, expected: str, value: object) -> ConvlensError:
    shown = printable(repr(value))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ConvlensError(
        f"{printable(path)}: {field} must be {expected}, got {shown}; not a last.json this convlens "
        "can resume",
        parameter="resume",
    )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _writer(meta: dict) -> str:
    written = meta.get("versions", {}).get("convlens") if isinstance(meta.get("versions"), dict) else None
    return f"convlens {printable(written)}" if isinstance(written, str) else "an unknown convlens version"


def saved_config(path: Path, meta: dict) -> TrainConfig:
    """The ``training`` section as a checked TrainConfig: no unknown key, none missing but those
    whose old value is known, every value in range."""
    from convlens import __version__

    training = meta.get("training")
    if not isinstance(training, dict):
        raise _fail(path, "training", "an object (the TrainConfig the run was trained with)", training)
    known = {f.name for f in fields(TrainConfig)}
    for key in training:
        if key not in known:
            raise ConvlensError(
                f"{printable(path)}: training.{printable(key)} is a setting this convlens "
                f"({__version__}) does not know; the file was written by {_writer(meta)}: resume it "
                "with that version",
                parameter="resume",
            )
    filled = dict(training)
    for key in sorted(known - set(training)):
        if key not in FILLED_WHEN_MISSING:
            raise ConvlensError(
                f"{printable(path)}: training.{key} is missing (written by {_writer(meta)}); its "
                "value cannot be known, so this run cannot be resumed exactly",
                parameter="resume",
            )
        filled[key] = FILLED_WHEN_MISSING[key]
    config = TrainConfig(**filled)
    init, freeze = filled.get("init"), filled.get("freeze_epochs", 0)
    if not (init is None or isinstance(init, str)):
        raise _fail(path, "training.init", "null or a path", init)
    if not _int(freeze, 0):
        raise _fail(path, "training.freeze_epochs", "an integer >= 0", freeze)
    try:
        replace(config, **{key: value for key, value in NOT_READ_AGAIN.items() if key in known}).check()
    except ConvlensError as exc:
        key = exc.parameter or "?"
        message = str(exc).removeprefix(f"{key}: ")
        raise ConvlensError(f"{printable(path)}: training.{key}: {message}", parameter="resume") from None
    except (TypeError, ValueError) as exc:  # a comparison of a wrong type inside check()
        raise ConvlensError(f"{printable(path)}: training: {printable(exc)}", parameter="resume") from None
    for key in RESOLVED:
        if getattr(config, key) is None:
            raise _fail(path, f"training.{key}", "the value chosen before the first epoch", None)
    return config


def _check_progress(path: Path, saved: object, history: object) -> None:
    if not isinstance(saved, dict):
        raise _fail(path, "resume", "an object (progress, optimizer and schedule)", saved)
    for key, low in PROGRESS_INTS.items():
        if not _int(saved.get(key), low):
            raise _fail(path, f"resume.{key}", f"an integer >= {low}", saved.get(key))
    score = saved.get("best_score")
    if not (isinstance(score, list) and len(score) == 2 and all(_number(item) for item in score)):
        raise _fail(path, "resume.best_score", "[accuracy, -loss]", score)
    if not (saved.get("stopped") is None or isinstance(saved.get("stopped"), str)):
        raise _fail(path, "resume.stopped", "null or a reason", saved.get("stopped"))
    if not (_number(saved.get("lr_scale", 1.0)) and 0 < saved.get("lr_scale", 1.0) <= 1):
        raise _fail(path, "resume.lr_scale", "a number in (0, 1]", saved.get("lr_scale"))
    if not (saved.get("best_val_loss") is None or _number(saved.get("best_val_loss"))):
        raise _fail(path, "resume.best_val_loss", "null or a finite number", saved.get("best_val_loss"))
    if not isinstance(saved.get("rollbacks", []), list):
        raise _fail(path, "resume.rollbacks", "a list", saved.get("rollbacks"))
    if not isinstance(history, list) or not history:
        raise _fail(path, "history", "a list of one row per epoch", history)
    for index, row in enumerate(history, start=1):
        if not isinstance(row, dict) or row.get("epoch") != index:
            raise _fail(path, f"history[{index - 1}]", f"an object for epoch {index}", row)
        if not _number(row.get("train_seconds", 0.0)):
            raise _fail(path, f"history[{index - 1}].train_seconds", "seconds", row.get("train_seconds"))
    if saved["epoch"] != len(history):
        raise _fail(path, "resume.epoch", f"the last epoch of the history ({len(history)})", saved["epoch"])


def _check_optimizer(path: Path, saved: dict) -> None:
    optimizer = saved.get("optimizer")
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        raise _fail(path, "resume.optimizer.param_groups", "a list of one parameter group", groups)
    params = groups[0].get("params")
    if not isinstance(params, list) or params != list(range(len(params))):
        raise _fail(path, "resume.optimizer.param_groups[0].params", "[0, 1, ..., n-1]", params)
    for key in ("lr", "momentum", "weight_decay", "initial_lr", "max_lr", "min_lr"):
        if key in groups[0] and not _number(groups[0][key]):
            raise _fail(path, f"resume.optimizer.param_groups[0].{key}", "a finite number", groups[0][key])
    if not isinstance(optimizer.get("scalars"), dict) or not all(
        key.isdigit() and isinstance(value, dict) for key, value in optimizer["scalars"].items()
    ):
        raise _fail(path, "resume.optimizer.scalars", "an object of parameter index -> values", None)
    scheduler = saved.get("scheduler")
    if not isinstance(scheduler, dict):
        raise _fail(path, "resume.scheduler", "an object (the OneCycleLR state)", scheduler)
    total, last = scheduler.get("total_steps"), scheduler.get("last_epoch")
    if not _int(total, 1):
        raise _fail(path, "resume.scheduler.total_steps", "a positive integer", total)
    if not (_int(last, 0) and last <= total):
        raise _fail(path, "resume.scheduler.last_epoch", f"a step from 0 to {total}", last)
    for key in ("base_lrs", "_last_lr"):
        value = scheduler.get(key)
        if not (isinstance(value, list) and len(value) == 1 and _number(value[0])):
            raise _fail(path, f"resume.scheduler.{key}", "a list of one finite number", value)


def _check_state_tensors(path: Path, tensor_path: Path, params: int) -> None:
    """The ``state.`` tensors resume restores: the generator's state and per-parameter buffers,
    read from the file's header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(tensor_path), "pt") as tensors:
            names = [key for key in tensors.keys() if key.startswith("state.")]  # noqa: SIM118
            generator = tensors.get_slice("state.rng.generator") if "state.rng.generator" in names else None
            kind = (generator.get_dtype(), len(generator.get_shape())) if generator else None
    except (OSError, SafetensorError) as exc:
        raise ConvlensError(
            f"{printable(tensor_path)}: not a valid safetensors file ({printable(exc)})", parameter="resume"
        ) from None
    if kind != ("U8", 1):
        raise _fail(path, "state.rng.generator", "the random generator's state (a 1-D uint8 tensor)", kind)
    for name in names:
        parts = name.split(".")
        if name != "state.rng.generator" and not (
            len(parts) == 4 and parts[1] == "optimizer" and parts[2].isdigit() and int(parts[2]) < params
        ):
            raise _fail(
                path, "state tensors", "state.optimizer.<parameter>.<name> or state.rng.generator", name
            )


def check_resumable(path: Path) -> TrainConfig:
    """Check every section of ``last.json`` (and its tensors' names) that ``resume`` uses; returns
    the saved TrainConfig. Reads the JSON and the tensor file's header, writes nothing."""
    from convlens.checkpoint import read_metadata, tensor_file

    try:
        meta = read_metadata(path)
    except ConvlensError as exc:
        raise ConvlensError(str(exc), parameter="resume") from None
    config = saved_config(path, meta)
    dataset = meta.get("dataset")
    if not (isinstance(dataset, dict) and isinstance(dataset.get("fingerprint"), str)):
        raise _fail(path, "dataset.fingerprint", "the training data's fingerprint", dataset)
    if not isinstance(dataset.get("name", ""), str):
        raise _fail(path, "dataset.name", "a string", dataset.get("name"))
    _check_progress(path, meta.get("resume"), meta.get("history"))
    _check_optimizer(path, meta["resume"])
    if meta["resume"]["epoch"] > config.epochs:
        raise _fail(
            path, "resume.epoch", f"at most training.epochs ({config.epochs})", meta["resume"]["epoch"]
        )
    params = len(meta["resume"]["optimizer"]["param_groups"][0]["params"])
    _check_state_tensors(path, tensor_file(path, meta), params)
    return config
