"""Training a playground network epoch by epoch, and snapshots of everything the picture shows.

``Trainer`` holds one network, its points and its optimizer, and steps whole epochs (one pass
over the training points in shuffled mini-batches, as in the TensorFlow Playground); the
explorer calls it between updates it streams to the page, ``train`` runs it headless for the
CLI. ``Trainer.snapshot`` evaluates the network over a grid of the plane, so every neuron's
heat map is that neuron's own output, not a picture of it. ``set_weight`` and ``set_bias`` let
a learner change one number of the network by hand and watch what it does.

A classification's output is a logit (the pictures show P(class 1) = sigmoid(logit)) trained
with binary cross-entropy; a regression's output is the predicted value itself, trained with
the mean squared error, as the TensorFlow Playground's linear output with its square loss.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.playground2d.config import MAX_SEED, PlaygroundConfig, _whole, _within, check_config
from convlens.playground2d.data import CLASSIFICATION, PlanePoints, make_points
from convlens.playground2d.features import feature_matrix
from convlens.playground2d.network import build_network, layer_outputs, linear_layers, plane_grid

NEURON_GRID = 32  # pixels per side of each small neuron map
BOUNDARY_GRID = 80  # pixels per side of the output's large map
DEFAULT_EPOCHS = 200  # enough for the default network to solve the spiral (>= 90 % test accuracy)
MAX_EPOCHS = 100_000
MAX_EDIT = 100.0  # a weight or bias set by hand stays within ±MAX_EDIT (tanh saturates long before)


@contextlib.contextmanager
def one_thread():
    """Run PyTorch on one CPU thread inside the block or decorated method (this thread's
    setting, restored after).

    The tensors here are tiny: a second thread brings nothing, and while another process keeps
    a core busy every operation waits for it (one epoch took 1.2 s on 2 threads, 45 ms on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Snapshot:
    """The network after ``epoch`` epochs: its losses, its weights, and every neuron over the plane."""

    epoch: int
    train_loss: float  # mean binary cross-entropy (nats), or mean squared error; without the penalty
    test_loss: float
    train_accuracy: float | None  # share of points on the right side of the boundary; None: regression
    test_accuracy: float | None
    neurons: list[torch.Tensor]  # per layer, hidden then output: (width, G, G); the output as `boundary`
    boundary: torch.Tensor  # (B, B) P(class 1) (the boundary is its 0.5 contour), or the predicted value
    weights: list[torch.Tensor]  # per layer (out, in): the lines between neurons
    biases: list[torch.Tensor]  # per layer (out,)
    task: str = CLASSIFICATION


class Trainer:
    """One playground network on one data set; ``train_epoch`` steps it, ``snapshot`` shows it.

    ``init_seed`` draws the initial weights and the batch order (default: ``config.seed``, so a
    headless run is reproducible from its config); the points always come from ``config.seed``.
    The page's reset passes a fresh one: new weights on the same data, as the TF Playground."""

    def __init__(self, config: PlaygroundConfig, init_seed: int | None = None) -> None:
        self.config = check_config(config)
        self.init_seed = (
            self.config.seed if init_seed is None else _whole(init_seed, "init_seed", 0, MAX_SEED)
        )
        self.points: PlanePoints = make_points(
            self.config.dataset, self.config.noise, self.config.train_percent, self.config.seed
        )
        self.train_inputs = feature_matrix(self.points.train_points, self.config.features)  # (N_train, F)
        self.test_inputs = feature_matrix(self.points.test_points, self.config.features)  # (N_test, F)
        self.network = build_network(
            len(self.config.features), self.config.hidden, self.config.activation, self.init_seed
        )
        # fused: one kernel for all parameters, ~1.5x faster per step on these tiny tensors
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.config.lr, fused=True)
        self.batch_order = torch.Generator().manual_seed(self.init_seed)
        self.classifies = self.config.task == CLASSIFICATION
        self.loss = nn.BCEWithLogitsLoss() if self.classifies else nn.MSELoss()
        self.epoch = 0
        self.seconds = 0.0  # time spent in train_epoch, excluding snapshots
        self.history: list[dict] = [self.evaluate()]  # one row per epoch, from epoch 0

    def _penalty(self) -> torch.Tensor:
        weights = [linear.weight for linear in linear_layers(self.network)]
        if self.config.regularization == "l1":
            return self.config.regularization_rate * sum(w.abs().sum() for w in weights)
        return self.config.regularization_rate * sum(0.5 * (w**2).sum() for w in weights)

    @one_thread()
    def train_epoch(self) -> dict:
        """One pass over the training points in shuffled batches; returns the epoch's history row."""
        start = time.perf_counter()
        self.network.train()
        count = self.train_inputs.shape[0]
        order = torch.randperm(count, generator=self.batch_order)
        for first in range(0, count, self.config.batch_size):
            loss = self.batch_loss(order[first : first + self.config.batch_size])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.epoch += 1
        self.seconds += time.perf_counter() - start
        self.history.append(self.evaluate())
        return self.history[-1]

    def batch_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """What one step minimises on the training points at indices ``batch``: the data loss
        (cross-entropy of the logits, or squared error of the values) plus the penalty."""
        outputs = self.network(self.train_inputs[batch])[:, 0]  # (B,): logits, or predicted values
        loss = self.loss(outputs, self.points.train_labels[batch])
        if self.config.regularization != "none" and self.config.regularization_rate > 0:
            loss = loss + self._penalty()
        return loss

    def train_for(self, epochs: int, seconds: float | None = None) -> None:
        """Up to ``epochs`` epochs, stopping early once ``seconds`` have passed (at least one)."""
        deadline = None if seconds is None else time.perf_counter() + seconds
        for _ in range(epochs):
            self.train_epoch()
            if deadline is not None and time.perf_counter() >= deadline:
                break

    @torch.inference_mode()
    def evaluate(self) -> dict:
        """Loss and accuracy on both splits now (the penalty is not part of the loss shown)."""
        self.network.eval()
        row = {"epoch": self.epoch}
        for split, inputs, labels in (
            ("train", self.train_inputs, self.points.train_labels),
            ("test", self.test_inputs, self.points.test_labels),
        ):
            outputs = self.network(inputs)[:, 0]  # (N,)
            row[f"{split}_loss"] = float(self.loss(outputs, labels)) if len(labels) else 0.0
            row[f"{split}_accuracy"] = (
                (float(((outputs > 0).float() == labels).float().mean()) if len(labels) else 0.0)
                if self.classifies
                else None
            )
        return row

    def _show_output(self, outputs: torch.Tensor) -> torch.Tensor:
        """The output neuron as the pictures show it: P(class 1), or the predicted value."""
        return torch.sigmoid(outputs) if self.classifies else outputs

    def _linear(self, layer) -> nn.Linear:
        linears = linear_layers(self.network)
        return linears[_whole(layer, "layer", 0, len(linears) - 1)]

    @torch.no_grad()
    def set_weight(self, layer: int, neuron: int, source: int, value: float) -> None:
        """Set the weight from ``source`` (a feature, or a neuron of the layer before) into
        ``neuron`` of weight matrix ``layer`` (0: features → first hidden layer; the last: into
        the output) to ``value``; the epoch's losses are those of the edited network."""
        linear = self._linear(layer)
        row = _whole(neuron, "neuron", 0, linear.out_features - 1)
        column = _whole(source, "source", 0, linear.in_features - 1)
        linear.weight[row, column] = _within(value, "value", -MAX_EDIT, MAX_EDIT)
        self.history[-1] = self.evaluate()

    @torch.no_grad()
    def set_bias(self, layer: int, neuron: int, value: float) -> None:
        """Set the bias of ``neuron`` of layer ``layer`` (0: the first hidden layer; the last: the
        output) to ``value``; the epoch's losses are those of the edited network."""
        linear = self._linear(layer)
        linear.bias[_whole(neuron, "neuron", 0, linear.out_features - 1)] = _within(
            value, "value", -MAX_EDIT, MAX_EDIT
        )
        self.history[-1] = self.evaluate()

    @one_thread()
    @torch.inference_mode()
    def snapshot(self, neuron_grid: int = NEURON_GRID, boundary_grid: int = BOUNDARY_GRID) -> Snapshot:
        """Everything the page and the figures show, computed from the network as it is now."""
        self.network.eval()
        inputs = feature_matrix(plane_grid(neuron_grid), self.config.features)  # (G², F)
        outputs = layer_outputs(self.network, inputs)  # per layer (G², width)
        outputs[-1] = self._show_output(outputs[-1])
        neurons = [out.T.reshape(-1, neuron_grid, neuron_grid) for out in outputs]  # (width, G, G)
        boundary_inputs = feature_matrix(plane_grid(boundary_grid), self.config.features)
        boundary = self._show_output(self.network(boundary_inputs)).reshape(boundary_grid, boundary_grid)
        linears = linear_layers(self.network)
        row = self.history[-1]
        return Snapshot(
            epoch=self.epoch,
            train_loss=row["train_loss"],
            test_loss=row["test_loss"],
            train_accuracy=row["train_accuracy"],
            test_accuracy=row["test_accuracy"],
            neurons=neurons,
            boundary=boundary,
            weights=[linear.weight.detach().clone() for linear in linears],
            biases=[linear.bias.detach().clone() for linear in linears],
            task=self.config.task,
        )


@dataclass
class PlaygroundResult:
    """A headless training: the trainer at its end, and snapshots along the way for a strip."""

    trainer: Trainer
    final: Snapshot
    frames: list[Snapshot] = field(default_factory=list)  # evenly spaced epochs, first and last included

    def summary(self) -> dict:
        """The numbers ``convlens playground --json`` prints: losses to 6 significant digits (all a
        float32 holds: not 0.699999988079071), accuracies as the exact share of the points they
        are (a regression has none), seconds to the millisecond."""
        summary = {
            **self.trainer.config.to_json(),
            "task": self.trainer.config.task,
            "epochs": self.final.epoch,
            "train_loss": float(f"{self.final.train_loss:.6g}"),
            "test_loss": float(f"{self.final.test_loss:.6g}"),
        }
        for split, accuracy in (("train", self.final.train_accuracy), ("test", self.final.test_accuracy)):
            if accuracy is not None:
                points = len(getattr(self.trainer.points, f"{split}_labels"))
                summary[f"{split}_accuracy"] = round(accuracy * points) / points if points else 0.0
        return {**summary, "seconds": round(self.trainer.seconds, 3)}


def check_epochs(epochs: int) -> int:
    """``epochs`` if it is a whole number from 1 to ``MAX_EPOCHS``, else a ConvlensError."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
        raise ConvlensError(
            f"epochs must be a whole number from 1 to {MAX_EPOCHS}, got {epochs!r}", parameter="epochs"
        )
    return epochs


def train(config: PlaygroundConfig, epochs: int, frames: int = 0, progress=None) -> PlaygroundResult:
    """Train ``config``'s network for ``epochs`` epochs; keep ``frames`` snapshots (0: none)
    spread from epoch 0 to the last. ``progress(done, total, what)`` is called once per epoch."""
    check_epochs(epochs)
    trainer = Trainer(config)
    keep = {round(i * epochs / (frames - 1)) for i in range(frames)} if frames > 1 else set()
    kept = [trainer.snapshot()] if 0 in keep else []
    for done in range(1, epochs + 1):
        trainer.train_epoch()
        if done in keep:
            kept.append(trainer.snapshot())
        if progress is not None:
            progress(done, epochs, "epochs")
    return PlaygroundResult(trainer, trainer.snapshot(), kept)
