"""Layers build a hierarchy: small receptive fields and edge detectors first, bigger patterns later.

Three measurements on one trained CNN: the receptive field of every stage (how many input
pixels one cell can see), an image optimized to excite channels at each depth (feature
visualization), and how edge-like the first layer's kernels are — each kernel's best
correlation with an oriented edge kernel (derivative of a Gaussian, 16 orientations), against
the same score for random kernels drawn like the untrained layer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from convlens.data import Dataset
from convlens.errors import ConvlensError
from convlens.lab._common import LabResult, check_positive, register_experiment, train_quick

ORIENTATIONS = 16  # edge kernels every 11.25° over 0..180°


def edge_kernels(size: int, orientations: int = ORIENTATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Oriented first-derivative-of-Gaussian kernels (orientations, size, size) and their angles in degrees."""
    center = (size - 1) / 2
    coords = torch.arange(size, dtype=torch.float64) - center
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # (k, k) each
    sigma = max(size / 4, 0.5)
    gaussian = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    angles = torch.arange(orientations, dtype=torch.float64) * (180.0 / orientations)
    radians = torch.deg2rad(angles)[:, None, None]
    kernels = -(x * torch.cos(radians) + y * torch.sin(radians)) * gaussian  # (O, k, k), zero mean
    return kernels, angles


def edge_scores(kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, k, k) kernels: best |Pearson correlation| with an oriented edge kernel, and its angle.

    The sign does not matter (a dark-to-light edge detector is an edge detector too); the mean is
    removed, so a plain brightness (DC) component does not count either way.
    """
    if kernels.ndim != 3 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] < 2:
        raise ConvlensError(
            f"edge scores need square kernels (N, k, k) with k >= 2, got {tuple(kernels.shape)}"
        )
    bank, angles = edge_kernels(kernels.shape[-1])
    flat = kernels.double().flatten(1)  # (N, k*k)
    flat = flat - flat.mean(dim=1, keepdim=True)
    reference = bank.flatten(1)  # (O, k*k)
    reference = reference - reference.mean(dim=1, keepdim=True)
    norms = flat.norm(dim=1, keepdim=True) * reference.norm(dim=1)[None, :]  # (N, O)
    correlation = (flat @ reference.T) / norms.clamp_min(1e-12)  # (N, O)
    best, which = correlation.abs().max(dim=1)
    return best.float(), angles[which].float()


@dataclass
class HierarchyResult(LabResult):
    dataset: str
    model: str
    test_accuracy: float
    receptive_fields: list[dict]  # {"stage", "output_shape", "receptive_field", "jump", "whole_image"}
    first_layer: str
    edge_score_trained: list[float]  # per first-layer kernel
    edge_angle_trained: list[float]  # degrees of the best-matching edge orientation
    edge_score_random_mean: float
    edge_score_random_std: float
    random_kernels: int
    fraction_random_below_trained_mean: float
    featureviz_stages: list[str]
    featureviz_activation: dict[str, list[float]]  # stage -> activation of each visualized channel
    featureviz_images: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # (K, C, H, W)
    seconds: float = 0.0

    @property
    def edge_score_trained_mean(self) -> float:
        return float(sum(self.edge_score_trained) / len(self.edge_score_trained))

    def to_json(self) -> dict:
        value = super().to_json()
        value.pop("featureviz_images")  # pictures go to the PNG, numbers to JSON
        value["edge_score_trained_mean"] = self.edge_score_trained_mean
        return value


def _geometry(field_) -> dict:
    """One stage's receptive field as the result keeps it (JSON-ready; None where it is the whole image)."""
    return {
        "stage": field_.stage,
        "output_shape": list(field_.output_shape),
        "receptive_field": None if field_.whole_image else list(field_.size),
        "jump": None if field_.whole_image else list(field_.jump),
        "whole_image": field_.whole_image,
    }


def _first_layer_kernels(model) -> tuple[str, torch.Tensor]:
    from convlens.inspect import conv_filters

    filters = conv_filters(model)
    if not filters:
        raise ConvlensError("hierarchy needs a model with convolution stages (e.g. convnet)")
    first = filters[0]
    # summing over input channels gives the kernel's response to a grey (equal-channel) pattern
    return first.stage, first.weight.sum(dim=1)  # (C_out, kH, kW)


def _depth_stages(model, fields: list[dict]) -> list[str]:
    """The ReLU stages that still have feature maps (C, H, W), shallow to deep."""
    spatial = {f["stage"] for f in fields if len(f["output_shape"]) == 3}
    return [name for name, module in model.stages() if isinstance(module, torch.nn.ReLU) and name in spatial]


def run(
    dataset: Dataset,
    model_name: str = "convnet",
    epochs: int = 6,
    channels: int = 8,
    featureviz_steps: int = 128,
    random_kernels: int = 2000,
    seed: int = 0,
) -> HierarchyResult:
    """Train a CNN; its receptive fields, feature visualizations per depth and edge-likeness of conv1."""
    from convlens.inspect import feature_visualization, receptive_fields

    check_positive("epochs", epochs)
    check_positive("channels", channels)
    check_positive("featureviz_steps", featureviz_steps)
    check_positive("random_kernels", random_kernels)
    model, accuracy = train_quick(dataset, model_name, epochs, seed, augment="auto")
    fields_ = [_geometry(f) for f in receptive_fields(model)]
    first_layer, trained = _first_layer_kernels(model)
    trained_score, trained_angle = edge_scores(trained)
    # random kernels as the untrained layer draws them: i.i.d. uniform (Kaiming), summed over channels
    in_channels = dataset.input_shape[0]
    generator = torch.Generator().manual_seed(seed)
    size = trained.shape[-1]
    random = (torch.rand(random_kernels, in_channels, size, size, generator=generator) * 2 - 1).sum(dim=1)
    random_score, _ = edge_scores(random)
    trained_mean = float(trained_score.mean())
    stages = _depth_stages(model, fields_)
    activation, images = {}, {}
    for stage in stages:
        count = min(channels, next(f["output_shape"][0] for f in fields_ if f["stage"] == stage))
        visual = feature_visualization(model, stage, list(range(count)), steps=featureviz_steps, seed=seed)
        activation[stage] = [float(a) for a in visual.activation]
        images[stage] = visual.images
    return HierarchyResult(
        dataset=dataset.name,
        model=model_name,
        test_accuracy=accuracy,
        receptive_fields=fields_,
        first_layer=first_layer,
        edge_score_trained=[float(s) for s in trained_score],
        edge_angle_trained=[float(a) for a in trained_angle],
        edge_score_random_mean=float(random_score.mean()),
        edge_score_random_std=float(random_score.std()),
        random_kernels=random_kernels,
        fraction_random_below_trained_mean=float((random_score < trained_mean).float().mean()),
        featureviz_stages=stages,
        featureviz_activation=activation,
        featureviz_images=images,
    )


register_experiment(
    "hierarchy",
    run,
    quick={"epochs": 1, "channels": 2, "featureviz_steps": 4, "random_kernels": 200},
    help="receptive fields, feature visualization per depth, edge-like first-layer kernels",
)
