"""Data-parallel training: one model replica per process, gradients averaged by DDP.

``torchrun --nproc-per-node N -m convlens train ...`` starts N processes and tells each one
its place in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); ``join_process_group`` reads it and joins the process group: gloo on CPU,
NCCL on GPU with each process on ``cuda:LOCAL_RANK``. Without torchrun it is one process and
nothing here talks to anyone.

What keeps N processes one training:

- **Same start**: every process seeds the same weights and shuffling generator, so each
  epoch's permutation is the same everywhere; DDP copies rank 0's weights when it wraps them.
- **Sharding**: each global batch of ``batch_size`` images is split into ``batch_size /
  world_size`` images per process (the world size must divide the batch), process ``r``
  taking positions ``r, r + N, r + 2N ...`` of the permutation: disjoint shards whose
  union per step is the single-process batch. When the training images do not split evenly,
  the epoch's last batch repeats up to N - 1 images from its start (as torch's
  ``DistributedSampler`` pads), so the number of steps, and the learning-rate schedule,
  is the single-process one.
- **Identical decisions**: losses, accuracies, evaluation sums and epoch times are gathered
  and combined in rank order, so every process holds the same numbers bit for bit, and the
  guard, early stopping and the choice of epoch decide the same on each; BatchNorm's running
  statistics are copied from rank 0 after each epoch (it is rank 0's weights that are saved).
- **One writer**: rank 0 alone locks and writes the run folder (``from_main``) and tells
  the others what it decided or how it failed; an error anywhere ends every process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import math
import os
import pickle
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from convlens.errors import ConvlensError

MAX_SEED = 2**62  # augmentation seeds drawn from the shared generator
TIMEOUT = datetime.timedelta(minutes=30)  # longest a process waits for the others (rank 0 saving)

Result = TypeVar("Result")


class EpochShard(NamedTuple):
    """One process's part of an epoch."""

    order: torch.Tensor  # indices of its training images, in the order it trains on them
    batch_size: int  # its part of every global batch
    generator: torch.Generator  # what its augmentation draws from


@dataclasses.dataclass(frozen=True)
class World:
    """The processes of one training and this one's place among them (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this machine: which GPU is this process's
    device: torch.device | None = None  # cuda:LOCAL_RANK or cpu; None: one process, config.device decides

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder and talks to the user."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def check_batch(self, batch_size: int) -> None:
        """Every process gets the same share of a batch: the world size must divide it."""
        if batch_size % self.size:
            near = max(self.size, round(batch_size / self.size) * self.size)
            raise ConvlensError(
                f"batch_size {batch_size} does not split evenly over the {self.size} processes of "
                f"this training (world size {self.size}); use a multiple of {self.size}, e.g. {near}",
                parameter="batch_size",
            )

    def shard(self, order: torch.Tensor, batch_size: int, generator: torch.Generator) -> EpochShard:
        """This process's images of an epoch's permutation ``order`` (the same on every process)."""
        if not self.distributed:
            return EpochShard(order, batch_size, generator)
        padding = -order.shape[0] % self.size  # the last batch repeats a few images, as DistributedSampler
        repeats = padding // max(order.shape[0], 1) + 1  # fewer images than processes: cycle them
        order = torch.cat([order, order.repeat(repeats)[:padding]])
        # one draw from the shared generator keeps it in step everywhere (resume, rollbacks); the
        # rank in the seed gives each shard its own random turns, zooms and shifts
        seed = int(torch.randint(MAX_SEED, (1,), generator=generator)) + self.rank
        return EpochShard(
            order[self.rank :: self.size],
            batch_size // self.size,
            torch.Generator().manual_seed(seed),
        )

    def replicate(self, model: nn.Module) -> nn.Module:
        """What the training step calls: DDP around ``model`` (its gradients averaged), or ``model``."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def all_finite(self, value: float) -> bool:
        """Whether ``value`` is finite on every process: a loop that stops on NaN stops everywhere."""
        finite = torch.tensor([float(math.isfinite(value))], device=self.device)
        if self.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def epoch_totals(self, loss_sum: float, correct: int, seen: int, seconds: float) -> tuple:
        """An epoch's training numbers over every process: summed, and the slowest one's seconds."""
        parts = self._gather((loss_sum, correct, seen, seconds))
        return (
            sum(part[0] for part in parts),
            sum(part[1] for part in parts),
            sum(part[2] for part in parts),
            max(part[3] for part in parts),
        )

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm's running statistics) to every process."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    @property
    def share(self) -> slice:
        """This process's part of a held-out split: every N-th image, starting at its rank."""
        return slice(self.rank, None, self.size)

    def combine_evaluations(self, part: dict, labels: torch.Tensor) -> dict:
        """``loop.evaluate``'s result on the whole split from each process's on its ``share``."""
        if not self.distributed:
            return part
        if "confusion" in part:  # segmentation: pixel counts add up over processes
            return self._combine_masks(part, labels)
        count = max(int(labels[self.share].shape[0]), 1)
        correct = round(part["accuracy"] * count)  # accuracy is correct / count: exact
        parts = self._gather((part["loss"] * count, correct, part["predictions"].cpu()))
        predictions = torch.zeros(int(labels.shape[0]), dtype=torch.int64)
        for rank, (_, _, predicted) in enumerate(parts):
            predictions[rank :: self.size] = predicted
        total = max(int(labels.shape[0]), 1)
        return {
            "accuracy": sum(p[1] for p in parts) / total,
            "loss": sum(p[0] for p in parts) / total,
            "predictions": predictions,
        }

    def _combine_masks(self, part: dict, labels: torch.Tensor) -> dict:
        parts = self._gather((part["loss"] * part["pixels"], part["confusion"], part["predictions"]))
        predictions = torch.zeros(tuple(labels.shape), dtype=torch.uint8)
        for rank, (_, _, predicted) in enumerate(parts):
            predictions[rank :: self.size] = predicted
        confusion = sum(p[1] for p in parts)
        pixels = max(int(confusion.sum()), 1)
        return {
            "accuracy": float(confusion.diagonal().sum()) / pixels,
            "loss": sum(p[0] for p in parts) / pixels,
            "predictions": predictions,
            "confusion": confusion,
            "pixels": pixels,
        }

    def from_main(self, work: Callable[..., Result], *args, **kwargs) -> Result:
        """Run ``work`` on rank 0 only (the one writer); every process gets its result or raises
        its error, so no process waits for one that failed."""
        if not self.distributed:
            return work(*args, **kwargs)
        outcome: list = [None]
        if self.is_main:
            try:
                outcome[0] = ("done", work(*args, **kwargs))
            except Exception as error:
                dist.broadcast_object_list([("failed", _portable(error))], src=0)
                raise
        dist.broadcast_object_list(outcome, src=0)
        kind, value = outcome[0]
        if kind == "failed":
            raise value
        return value

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """A step every process runs and any may fail (loading data one machine lacks): when it
        fails on one, it fails on all, with the first failure's error. The block must hold no
        collective operation: a process that failed would never reach it."""
        if not self.distributed:
            yield
            return
        failure = None
        try:
            yield
        except Exception as error:
            failure = error
        failures = self._gather(None if failure is None else _portable(failure))
        if failure is not None:
            raise failure
        first = next((error for error in failures if error is not None), None)
        if first is not None:
            raise first

    def _gather(self, value) -> list:
        """``value`` of every process, in rank order (the same list on each)."""
        if not self.distributed:
            return [value]
        values: list = [None] * self.size
        dist.all_gather_object(values, value)
        return values


SINGLE_PROCESS = World()


def launched_world() -> World:
    """This process's place as torchrun's environment describes it, before joining anyone (no
    device yet); rank 0 of 1 when not launched by torchrun."""
    try:
        size = int(os.environ.get("WORLD_SIZE") or 1)
        if size <= 1:
            return SINGLE_PROCESS
        return World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ["LOCAL_RANK"]))
    except (KeyError, ValueError):
        raise ConvlensError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers, as torchrun sets them: start "
            "distributed training with torchrun"
        ) from None


def _portable(error: Exception) -> Exception:
    """An error that survives pickling to another process: a ConvlensError keeps its parameter."""
    if isinstance(error, ConvlensError):
        return ConvlensError(str(error), parameter=error.parameter)
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _lost_a_peer(error: RuntimeError) -> bool:
    """A collective's failure (gloo: "Connection reset by peer", NCCL, a timeout), not a bug here."""
    text = str(error)
    return isinstance(error, dist.DistError) or "gloo" in text or "NCCL" in text


def _device_of_rank(name: str, local_rank: int) -> torch.device:
    """``cuda:LOCAL_RANK`` when training on GPUs, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ConvlensError(
            f"device {name}: each process of a distributed training uses the GPU of its local rank; "
            "use cuda or auto",
            parameter="device",
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConvlensError(
            f"device {name}: process {local_rank} on this machine has no GPU of its own "
            f"({count} GPU(s)); start at most {count} processes per machine",
            parameter="device",
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def join_process_group(device: str = "auto") -> Iterator[World]:
    """The training this process is part of: torchrun's (joins its process group, leaves it at
    the end) or, when not launched by torchrun, a single process.

    A collective that fails because another process stopped (crashed, killed) becomes one
    ConvlensError: that process's own output says why.
    """
    planned = launched_world()
    if not planned.distributed:
        yield SINGLE_PROCESS
        return
    where = _device_of_rank(device, planned.local_rank)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    dist.init_process_group("nccl" if where.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield dataclasses.replace(planned, device=where)
        # Leave together: a gloo process that tears its group down while a peer is still busy
        # (rank 0 writing the run folder) can abort in the teardown ("terminate called ...").
        dist.barrier()
    except RuntimeError as error:
        if not _lost_a_peer(error):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConvlensError(
            f"another process of this distributed training stopped ({first_line[:200]})"
        ) from None
    finally:
        gc.collect()  # DDP wrappers hold gloo work: free them while the group still exists
        dist.destroy_process_group()
