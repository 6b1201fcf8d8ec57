"""The learning playground: a small fully connected network trained on 2-D points, with every
neuron's output drawn over the plane (the idea of the TensorFlow Playground, trained by PyTorch).

- ``data``: the spiral, xor, circle and gauss data sets in the plane [-6, 6]²;
- ``features``: the inputs the network may see (x1, x2, x1², x2², x1·x2, sin x1, sin x2);
- ``config``: ``PlaygroundConfig`` and its bounds, checked where they enter;
- ``network``: the ``nn.Sequential`` and every layer's output;
- ``trainer``: ``Trainer`` steps epochs and takes ``Snapshot``s; ``train`` runs it headless.

The explorer's "Learning playground" tab streams snapshots while it trains; ``convlens
playground`` trains headless and writes the decision boundary (``views.plots.playground2d``).
"""

from convlens.playground2d.config import ACTIVATIONS, MAX_LAYERS, MAX_NEURONS, PlaygroundConfig, check_config
from convlens.playground2d.data import DATASETS, PLANE, make_points
from convlens.playground2d.features import FEATURES, feature_matrix
from convlens.playground2d.network import build_network, layer_outputs, linear_layers, plane_grid
from convlens.playground2d.trainer import (
    DEFAULT_EPOCHS,
    PlaygroundResult,
    Snapshot,
    Trainer,
    check_epochs,
    train,
)

__all__ = [
    "ACTIVATIONS",
    "DATASETS",
    "DEFAULT_EPOCHS",
    "FEATURES",
    "MAX_LAYERS",
    "MAX_NEURONS",
    "PLANE",
    "PlaygroundConfig",
    "PlaygroundResult",
    "Snapshot",
    "Trainer",
    "build_network",
    "check_config",
    "check_epochs",
    "feature_matrix",
    "layer_outputs",
    "linear_layers",
    "make_points",
    "plane_grid",
    "train",
]
