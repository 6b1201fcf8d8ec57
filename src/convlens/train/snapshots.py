"""Per-epoch snapshots of what the first layer learned: its kernels and one probe image's feature maps.

A checkpoint keeps the weights of one epoch; to scrub through a training (the explorer's epoch
slider) the first convolution's kernels and its feature maps of a fixed probe image (test image 0)
are kept for every epoch, in ``RUN_DIR/snapshots/``:

- ``snapshots.json``: what the snapshots hold (stage, shapes, the probe) and the epochs saved;
- ``probe.safetensors``: the probe image (C, H, W) in [0, 1];
- ``epoch-NNNN.safetensors``: ``kernels`` (C_out, C_in, kH, kW) and ``feature_maps`` (C_out, H, W);
  epoch 0 is the initialization.

A snapshot is written after an epoch is accepted and before ``last.*`` is committed, so a resumed
run never misses one (epoch 0 is written with epoch 1: a training that saves nothing leaves no
snapshot either); each file is written atomically. They are a view aid, not the model: a run
whose snapshots would pass ``MAX_RUN_BYTES`` skips them with one note, and a snapshot that cannot
be written stops the snapshots with a warning, never the training.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load, save
from torch import nn

from convlens.data import to_float
from convlens.errors import ConvlensError
from convlens.storage import atomic_write, format_bytes, os_reason, remove_quietly

log = logging.getLogger("convlens")

FOLDER = "snapshots"
INDEX = "snapshots.json"
FORMAT = "convlens-snapshots/1"
PROBE_INDEX = 0  # the probe: the first test image, the same on every resume
MAX_RUN_BYTES = 64 * 2**20  # all epochs together; a 28x28 convnet needs ~50 KiB per epoch


def _epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.safetensors"


def first_convolution(model: nn.Module) -> tuple[str, nn.Module, nn.Conv2d] | None:
    """(stage name, stage module, its first Conv2d) of the first stage with a convolution."""
    stages = model.stages() if hasattr(model, "stages") else model.named_children()
    for name, module in stages:
        conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None:
            return name, module, conv
    return None


@torch.no_grad()
def _feature_maps(model: nn.Module, stage: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    """The stage's output (C, H, W) for the probe, in eval mode; the model's mode is restored."""
    kept: list[torch.Tensor] = []
    handle = stage.register_forward_hook(lambda module, inputs, output: kept.append(output.detach()))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(probe.unsqueeze(0).to(device))  # (1, C, H, W)
    finally:
        handle.remove()
        model.train(was_training)
    return kept[0][0].float().cpu().contiguous()


class EpochSnapshots:
    """Writes one snapshot per epoch into ``RUN_DIR/snapshots``; ``save`` is a no-op once disabled."""

    def __init__(self, run_dir: Path, stage: str, module: nn.Module, conv: nn.Conv2d, probe: torch.Tensor):
        self.folder = Path(run_dir) / FOLDER
        self.stage, self.module, self.conv, self.probe = stage, module, conv, probe
        self.enabled = True
        self.index: dict = {}
        self.initial: dict[str, torch.Tensor] | None = None  # epoch 0, written with the first epoch

    @classmethod
    def begin(cls, run_dir: Path, model: nn.Module, dataset, first_epoch: int, epochs: int, enabled: bool):
        """The writer for a training that starts at ``first_epoch`` (1: a new run, which gets the
        initialization as epoch 0 and loses any older snapshots), or None when there is nothing to
        write: turned off, a model without convolutions, or snapshots over ``MAX_RUN_BYTES``."""
        found = first_convolution(model) if enabled else None
        if found is None or dataset.test_images.shape[0] == 0:
            return None
        stage, module, conv = found
        probe = to_float(dataset.test_images[PROBE_INDEX])  # (C, H, W) in [0, 1]
        writer = cls(run_dir, stage, module, conv, probe)
        maps = _feature_maps(model, module, probe)
        per_epoch = 4 * (conv.weight.numel() + maps.numel())
        if per_epoch * (epochs + 1) > MAX_RUN_BYTES:
            log.warning(
                "snapshots: skipped; %s per epoch for %d epochs would pass the %s limit",
                format_bytes(per_epoch),
                epochs,
                format_bytes(MAX_RUN_BYTES),
            )
            return None
        # a segmentation image has a mask, not one class: the probe names none
        label = None if dataset.is_segmentation else int(dataset.test_labels[PROBE_INDEX])
        writer.index = {
            "format": FORMAT,
            "stage": stage,
            "kernels_shape": list(conv.weight.shape),
            "feature_maps_shape": list(maps.shape),
            "probe": {
                "split": "test",
                "index": PROBE_INDEX,
                "label": label,
                "class": None if label is None else dataset.class_names[label],
            },
            "epochs": [],
        }
        if first_epoch == 1:  # kept in memory: a training that saves no epoch leaves no snapshot either
            writer.initial = {
                "kernels": conv.weight.detach().float().cpu().contiguous().clone(),
                "feature_maps": maps,
            }
        else:  # resumed: keep the epochs saved so far (none for a run from before snapshots)
            with contextlib.suppress(ConvlensError):
                writer.index["epochs"] = read_index(run_dir)["epochs"]
        return writer

    def _tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {
            "kernels": self.conv.weight.detach().float().cpu().contiguous().clone(),  # (C_out, C_in, kH, kW)
            "feature_maps": _feature_maps(model, self.module, self.probe),  # (C_out, H, W)
        }

    def save(self, epoch: int, model: nn.Module) -> None:
        """Write epoch ``epoch``'s kernels and probe feature maps, then list it in the index.
        The first epoch of a new run also writes the probe and epoch 0 and drops older snapshots."""
        if not self.enabled:
            return
        if self.initial is not None:
            initial, self.initial = self.initial, None
            if self.folder.is_dir():
                for old in self.folder.glob("epoch-*.safetensors"):
                    remove_quietly(old)
            probe = save({"input": self.probe})
            self._write(lambda: atomic_write(self.folder / "probe.safetensors", probe, durable=False))
            self._save(0, initial)
        self._save(epoch, self._tensors(model))

    def _save(self, epoch: int, tensors: dict[str, torch.Tensor]) -> None:
        if not self.enabled:
            return
        self.index["epochs"] = [e for e in self.index["epochs"] if e < epoch] + [epoch]
        self._write(lambda: atomic_write(_epoch_file(self.folder, epoch), save(tensors), durable=False))
        text = json.dumps(self.index, indent=1).encode()
        self._write(lambda: atomic_write(self.folder / INDEX, text, durable=False))

    def _write(self, write) -> bool:
        if not self.enabled:
            return False
        try:
            write()
        except OSError as exc:
            self.enabled = False
            log.warning("snapshots: %s: %s; training goes on without them", exc.filename, os_reason(exc))
            return False
        return True


def read_index(run_dir: str | Path) -> dict:
    """``snapshots.json`` of a run folder: the stage, shapes, probe and the epochs saved."""
    path = Path(run_dir) / FOLDER / INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConvlensError(f"{Path(run_dir).name}: no snapshots were saved for this run") from None
    if (
        not isinstance(index, dict)
        or index.get("format") != FORMAT
        or not isinstance(index.get("epochs"), list)
    ):
        raise ConvlensError(f"{Path(run_dir).name}: {FOLDER}/{INDEX} is not a snapshot index")
    return index


def read_probe(run_dir: str | Path) -> torch.Tensor:
    """The probe image (C, H, W) in [0, 1] the feature maps were computed on."""
    return _read_tensors(Path(run_dir) / FOLDER / "probe.safetensors")["input"]


def read_snapshot(run_dir: str | Path, epoch: int) -> dict[str, torch.Tensor]:
    """``{"kernels", "feature_maps"}`` saved after ``epoch`` (0: the initialization)."""
    index = read_index(run_dir)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch not in index["epochs"]:
        saved = index["epochs"]
        span = f"{saved[0]}..{saved[-1]}" if saved else "none yet"
        raise ConvlensError(
            f"epoch must be one of the saved epochs ({span}), got {epoch!r}", parameter="epoch"
        )
    return _read_tensors(_epoch_file(Path(run_dir) / FOLDER, epoch))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.stat().st_size > MAX_RUN_BYTES:
            raise ConvlensError(f"{path.name}: larger than any snapshot convlens writes")
        return load(path.read_bytes())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConvlensError(
            f"{path.parent.parent.name}: snapshot {path.name} cannot be read ({exc})"
        ) from None
