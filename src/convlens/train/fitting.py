"""``fit()``: train, guard against divergence, choose the epoch to keep, diagnose, save.

Every decision looks at the validation split (``train.validation``); the test split is
evaluated each epoch for the curves and the final report only. ``model.*`` is the epoch
``train.selection`` chooses; ``best.*`` the best epoch on validation; ``last.*`` everything an
exact ``resume`` needs (weights, optimizer, schedule, random generator, guard and early-stopping
state).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch

from convlens.checkpoint import (
    read_checkpoint,
    restore_optimizer_state,
    save_checkpoint,
    split_optimizer_state,
)
from convlens.data import Dataset
from convlens.data.rows import take
from convlens.errors import ConvlensError
from convlens.runlock import RunLock
from convlens.train.cpu_memory import keep_freed_memory
from convlens.train.diagnostics import SAMPLE, diagnose
from convlens.train.distributed import SINGLE_PROCESS, World
from convlens.train.guard import DivergenceGuard, out_of_memory, weights_finite
from convlens.train.init_weights import WarmUp, init_model
from convlens.train.loop import TrainingObserver, _Silent, evaluate_share, train_one_epoch
from convlens.train.progress import Progress, epoch_metrics
from convlens.train.recipe import TrainConfig, resolve_defaults, resolve_device, warmup_fraction
from convlens.train.result import TrainResult, dataset_facts
from convlens.train.run_folder import preflight_run_folder, prepare_run_folder
from convlens.train.selection import choose_epoch, score
from convlens.train.snapshots import EpochSnapshots
from convlens.train.tasks import task_for
from convlens.train.validation import Split, validation_split

log = logging.getLogger("convlens")


def fit(
    dataset: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    observer: TrainingObserver | None = None,
    world: World = SINGLE_PROCESS,
) -> TrainResult:
    """Train ``config.model`` on ``dataset``; write checkpoints and metrics.jsonl to ``run_dir``.

    The run folder is locked while training (``convlens.runlock``): a second ``fit`` into it
    fails while this one runs. Each checkpoint is committed atomically (``save_checkpoint``), so
    after a kill at any moment ``resume=True`` continues from the last epoch saved. Under
    torchrun every process calls ``fit`` with the ``world`` of ``join_process_group``: each
    trains its shard of every batch, and rank 0 alone writes ``run_dir`` (``train.distributed``).
    """
    config.check()
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as held:

        def lock() -> bool:  # only the writer checks and locks the folder
            if run_dir.exists() and not run_dir.is_dir():
                raise ConvlensError(f"run_dir {run_dir}: exists and is not a folder", parameter="run_dir")
            return held.enter_context(RunLock(run_dir)).took_over

        took_over = world.from_main(lock)
        return _fit_locked(dataset, config, run_dir, resume, overwrite, observer, took_over, world)


def _fit_locked(
    dataset, config, run_dir: Path, resume: bool, overwrite: bool, observer, took_over: bool, world: World
) -> TrainResult:
    from convlens.models import create_model

    facts = dataset_facts(dataset)
    meta = state = init = None
    resume = world.from_main(prepare_run_folder, run_dir, resume, overwrite, took_over)
    if resume:  # rank 0 reads last.* and hands it to the others: no folder shared between machines
        _, model, meta, state = world.from_main(read_checkpoint, run_dir / "last.json")
        saved = TrainConfig(**meta["training"])
        if config.epochs is not None and config.epochs != saved.epochs:
            raise ConvlensError(
                f"resume continues the saved {saved.epochs}-epoch schedule; got epochs={config.epochs}",
                parameter="resume",
            )
        if meta["dataset"]["fingerprint"] != facts["fingerprint"]:
            raise ConvlensError(
                f"resume: {run_dir} was trained on different data ({meta['dataset']['name']})",
                parameter="resume",
            )
        config, init = saved, meta.get("init")  # weights come from last.*: the init is not read again
        split = validation_split(dataset, config.validation_fraction)
    else:
        split = validation_split(dataset, config.validation_fraction)
        config = resolve_defaults(
            config,
            dataset,
            train_images=int(split.train_labels.shape[0]),
            validation_images=split.validation_size,
            device=world.device or resolve_device(config.device),  # a GPU gets bigger batches
        )
        torch.manual_seed(config.seed)  # weight initialization
        model = create_model(
            config.model,
            dataset.input_shape,
            dataset.num_classes,
            dataset.mean,
            dataset.std,
            **config.model_options,
        )
        if config.init:  # rank 0 reads it; DDP hands rank 0's weights to the others when it wraps the model
            init = world.from_main(init_model, model, config.init, config.model)
    world.check_batch(config.batch_size)
    task = task_for(dataset, model, config.label_smoothing)  # before the folder is touched
    world.from_main(preflight_run_folder, run_dir, model, config.model)
    training = _Training(dataset, config, run_dir, split, facts, observer or _Silent(), world, task)
    if task.class_weights is not None:  # the loss's weights (train.tasks.Segmentation)
        training.common["class_weights"] = [round(float(w), 6) for w in task.class_weights]
    if init:  # what the weights started from, in every checkpoint (train.init_weights)
        training.common["init"] = init
    return training.run(model, meta, state)


class _Training:
    """One run of the epoch loop, with what every epoch needs at hand."""

    def __init__(
        self,
        dataset,
        config: TrainConfig,
        run_dir: Path,
        split: Split,
        facts: dict,
        observer,
        world: World,
        task,
    ):
        self.dataset, self.config, self.run_dir, self.split = dataset, config, run_dir, split
        self.observer, self.world, self.task = observer, world, task
        self.common = {  # what every checkpoint of the run says about it
            "task": task.name,
            "class_names": dataset.class_names,
            "world_size": world.size,
            "training": asdict(config),
            "dataset": facts,
            "validation": split.describe(),
            "normalization": {
                "mean": list(dataset.mean),
                "std": list(dataset.std),
                "source": dataset.normalization_source,
            },
        }

    def run(self, model, meta: dict | None, state: dict | None) -> TrainResult:
        config, split = self.config, self.split
        device = self.world.device if self.world.distributed else resolve_device(config.device)
        if device.type == "cpu":
            keep_freed_memory()  # no page faults for each step's activations (train.cpu_memory)
        self.split = split = split.training_on(device)  # moved once, not every step
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.replica = self.world.replicate(self.model)  # what trains: DDP with several processes
        self.generator = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
        self.steps_per_epoch = math.ceil(split.train_labels.shape[0] / config.batch_size)
        total_steps = config.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.lr,
            pct_start=warmup_fraction(config.pct_start, total_steps),
            total_steps=total_steps,
        )
        self.guard = DivergenceGuard()
        self.warm_up = WarmUp(model, config.freeze_epochs, self.common.get("init"), self.world.distributed)
        progress = Progress()
        if meta is not None:  # resume exactly where last.* left off
            restore_optimizer_state(
                self.optimizer, {k: v.to(device) for k, v in state.items()}, meta["resume"]["optimizer"]
            )
            self.scheduler.load_state_dict(meta["resume"]["scheduler"])
            self.generator.set_state(state["rng.generator"])
            progress = Progress.restored(meta, self.guard)
        self.best_state = None  # the best epoch's weights in memory (after a resume: best.* on disk)
        announce = getattr(self.observer, "start_training", None)  # optional: the CLI prints the recipe
        if announce is not None:
            announce(config, split.describe())
        try:
            test = self._epochs(progress)
        except RuntimeError as error:  # CUDA's OutOfMemoryError is one too
            failure = out_of_memory(error, device, config, self.dataset.input_shape)
            if failure is None:
                raise
            raise failure from None
        if not progress.history:
            raise ConvlensError("no epoch was trained; nothing to save")
        selection = choose_epoch(progress.history, progress.best_epoch, split.validation_size)
        if selection["epoch"] != progress.history[-1]["epoch"]:
            log.warning(selection["reason"])
            self._load_best()
            test = None
        if test is None:  # resumed a finished run, or kept an earlier epoch: evaluate the kept weights
            test = self._evaluate(self.dataset.test_images, self.dataset.test_labels)
        return self._finish(progress, test, selection)

    def _epochs(self, progress: Progress) -> dict | None:
        """Train until the schedule ends or a stop rule fires; returns the last test evaluation."""
        config, split, guard = self.config, self.split, self.guard
        guard.keep(progress.next_epoch - 1, self.model, self.optimizer, self.scheduler, self.generator)
        epoch, test = progress.next_epoch, None
        writes_snapshots = config.snapshots and self.world.is_main
        snapshots = EpochSnapshots.begin(  # the explorer's epoch slider: kernels and probe maps per epoch
            self.run_dir, self.model, self.dataset, epoch, config.epochs, writes_snapshots
        )
        while epoch <= config.epochs and not progress.stopped:
            self.observer.start_epoch(epoch, config.epochs, self.steps_per_epoch)
            self.warm_up.set(epoch)  # the backbone frozen or not: from the epoch alone, so resume agrees
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(
                train_one_epoch(
                    self.replica,
                    split.train_images,
                    split.train_labels,
                    self.optimizer,
                    self.scheduler,
                    config,
                    self.generator,
                    self.observer,
                    world=self.world,
                    task=self.task,
                )
            )
            val = None
            if split.has_validation:
                val = self._evaluate(split.val_images, split.val_labels)
            problem = guard.problem(row["train_loss"], val["loss"] if val else None, self.model)
            if problem:  # undo the epoch, lower the schedule, run it again (or stop: TrainingDiverged)
                event = guard.roll_back(
                    epoch, problem, self.model, self.optimizer, self.scheduler, self.generator, config.lr
                )
                log.warning(
                    "epoch %d: %s; rolled back to epoch %d and lowered the peak learning rate to %.3g",
                    epoch,
                    problem.reason,
                    event["rolled_back_to"],
                    event["peak_lr"],
                )
                continue
            guard.accept(val["loss"] if val else None)
            test = self._evaluate(self.dataset.test_images, self.dataset.test_labels)
            names = self.dataset.class_names
            if val:
                row.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
                row.update(self.task.epoch_scores(val, "val", names))
            row.update(self.task.epoch_scores(test, "test", names))
            row.update(
                test_accuracy=test["accuracy"],
                test_loss=test["loss"],
                train_seconds=progress.train_seconds + row["epoch_seconds"],
                lr_scale=guard.lr_scale,
            )
            progress.history.append(row)
            self._judge(progress, row)
            if snapshots:  # before last.*: a resumed run never misses an epoch's snapshot
                snapshots.save(epoch, self.model)
            self.world.from_main(self._save_last, progress)
            self.observer.end_epoch(row)
            guard.keep(epoch, self.model, self.optimizer, self.scheduler, self.generator)
            epoch += 1
        if progress.stopped:
            log.info("%s; stopped after epoch %d of %d", progress.stopped, epoch - 1, config.epochs)
        return test

    def _evaluate(self, images, labels: torch.Tensor) -> dict:
        """``evaluate`` on this process's share of a held-out split, combined over every process."""
        share = self.world.share
        part = evaluate_share(self.model, images[share], labels[share], self.config.eval_batch_size)
        return self.world.combine_evaluations(part, labels)

    def _judge(self, progress: Progress, row: dict) -> None:
        """Best epoch so far (saved as best.*), and whether a stop rule fires."""
        config = self.config
        if "val_accuracy" in row:
            if score(row) > progress.best_score:
                progress.best_epoch, progress.best_score, progress.stale = row["epoch"], score(row), 0
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.world.from_main(
                    save_checkpoint,
                    self.run_dir / "best",
                    self.model,
                    {**self.common, "metrics": epoch_metrics(row), "history": progress.history},
                )
            else:
                progress.stale += 1
            warmed_up = row["epoch"] >= config.pct_start * config.epochs
            if config.early_stopping and progress.stale >= config.early_stopping and warmed_up:
                progress.stopped = f"early stopping: no better validation score for {progress.stale} epochs"
        more = row["epoch"] < config.epochs
        if (
            not progress.stopped
            and config.max_seconds
            and row["train_seconds"] >= config.max_seconds
            and more
        ):
            progress.stopped = f"time budget of {config.max_seconds:g} s reached"

    def _save_last(self, progress: Progress) -> None:
        optimizer_tensors, optimizer_plain = split_optimizer_state(self.optimizer)
        resume = {
            **progress.saved(self.guard),
            "optimizer": optimizer_plain,
            "scheduler": self.scheduler.state_dict(),
        }
        save_checkpoint(
            self.run_dir / "last",
            self.model,
            {
                **self.common,
                "metrics": epoch_metrics(progress.history[-1]),
                "history": progress.history,
                "resume": resume,
            },
            state_tensors={**optimizer_tensors, "rng.generator": self.generator.get_state()},
        )
        progress.write_metrics(self.run_dir)

    def _load_best(self) -> None:
        if self.best_state is None:  # resumed after the best epoch: its weights are in best.*
            _, best_model, _, _ = self.world.from_main(read_checkpoint, self.run_dir / "best.json")
            self.best_state = best_model.state_dict()
        self.model.load_state_dict(self.best_state)

    def _finish(self, progress: Progress, test: dict, selection: dict) -> TrainResult:
        dataset, split, history = self.dataset, self.split, progress.history
        per_class, confusion, task_metrics = self.task.summary(test, dataset.test_labels, dataset.class_names)
        held_out, name = (
            (split.val_images, "validation") if split.has_validation else (dataset.test_images, "test")
        )
        findings = diagnose(
            self.model,
            take(held_out, slice(0, SAMPLE)),  # a sample, read from the cache when it is there
            name,
            history,
            self.guard.events,
            split.train_labels,
            dataset.class_names,
            selection,
        )
        for row in history:
            row["selected"] = row["epoch"] == selection["epoch"]
        best_epoch = progress.best_epoch or selection["epoch"]
        best_row = next(row for row in history if row["epoch"] == best_epoch)
        best_accuracy = best_row.get("val_accuracy", best_row["test_accuracy"])
        summary = {"task": self.task.name, **task_metrics}
        if "test_mean_iou" in task_metrics:
            summary["best_mean_iou"] = best_row.get("val_mean_iou", best_row.get("test_mean_iou"))
        summary |= {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "epochs": len(history),
            "planned_epochs": self.config.epochs,
            "train_seconds": progress.train_seconds,
            "best_accuracy": best_accuracy,
            "best_epoch": best_epoch,
            "selected_epoch": selection["epoch"],
            "selection": selection["reason"],
            "stopped": progress.stopped,
            "rollbacks": self.guard.events,
            "per_class": per_class,
            "confusion": confusion,
        }
        if not weights_finite(self.model) or not math.isfinite(test["loss"]):
            raise ConvlensError("training produced non-finite numbers; nothing was saved as model.*")
        diagnostics = [finding.to_json() for finding in findings]
        checkpoint = self.world.from_main(
            save_checkpoint,
            self.run_dir / "model",
            self.model,
            {**self.common, "metrics": summary, "history": history, "diagnostics": diagnostics},
        )
        self.world.from_main(progress.write_metrics, self.run_dir)
        return TrainResult(
            test_accuracy=test["accuracy"],
            best_accuracy=best_accuracy,
            best_epoch=best_epoch,
            epochs=len(history),
            train_seconds=progress.train_seconds,
            history=history,
            checkpoint=str(checkpoint),
            run_dir=str(self.run_dir),
            class_names=dataset.class_names,
            per_class=per_class,
            confusion=confusion,
            selected_epoch=selection["epoch"],
            selection=selection["reason"],
            stopped=progress.stopped,
            validation=split.describe(),
            diagnostics=diagnostics,
            world_size=self.world.size,
            init=self.common.get("init"),
            task=self.task.name,
            **task_metrics,
        )
