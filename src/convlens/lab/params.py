"""Why not a dense network on images: parameter counts, exact, with the formula.

A dense layer connects every input value to every unit: N·(C·H·W + 1) parameters. A
convolutional layer shares K small kernels over all positions: K·(k·k·C + 1), whatever the
image size. For the seed's 1000×1000×3 photo and 1,000 units that is 3,000,001,000 against
1,792 for 64 3×3 filters.
"""

from __future__ import annotations

from dataclasses import dataclass

from convlens.data import Dataset
from convlens.errors import ConvlensError
from convlens.lab._common import LabResult, register_experiment

DEFAULT_INPUT = (3, 1000, 1000)  # (C, H, W): a 1-megapixel RGB photo
WHOLE_MODELS = ("mlp", "convnet", "tinyvgg")


def dense_parameters(in_shape: tuple[int, int, int], units: int) -> int:
    """Weights + biases of a dense layer from a flattened C×H×W input to ``units`` units."""
    channels, height, width = in_shape
    return units * (channels * height * width) + units


def conv_parameters(in_channels: int, filters: int, kernel_size: int = 3) -> int:
    """Weights + biases of a conv layer with ``filters`` k×k kernels over ``in_channels`` channels."""
    return filters * (kernel_size * kernel_size * in_channels) + filters


@dataclass
class ParamsResult(LabResult):
    input_shape: tuple[int, int, int]
    dense_units: int
    conv_filters: int
    kernel_size: int
    dense_parameters: int
    dense_formula: str
    conv_parameters: int
    conv_formula: str
    ratio: float  # dense / conv
    dataset: str
    dataset_input: tuple[int, int, int]
    models: list[dict]  # {"name", "parameters", "first_layer", "stages": [{"stage", "parameters"}]}
    seconds: float = 0.0


def run(
    dataset: Dataset | None = None,
    input_shape: tuple[int, int, int] = DEFAULT_INPUT,
    units: int = 1000,
    filters: int = 64,
    kernel_size: int = 3,
) -> ParamsResult:
    """Count a dense vs a conv first layer on ``input_shape``, and whole models on the data set's input."""
    from convlens.models import count_parameters, create_model

    input_shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConvlensError(f"input shape must be three positive sides C x H x W, got {input_shape}")
    for name, value in (("units", units), ("filters", filters), ("kernel_size", kernel_size)):
        if not isinstance(value, int) or value < 1:
            raise ConvlensError(f"{name} must be a positive integer, got {value}")
    channels, height, width = input_shape
    dense = dense_parameters(input_shape, units)
    conv = conv_parameters(channels, filters, kernel_size)
    models = []
    if dataset is not None:
        for name in WHOLE_MODELS:
            model = create_model(name, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std)
            stages = [
                {"stage": stage, "parameters": sum(p.numel() for p in module.parameters())}
                for stage, module in model.stages()
            ]
            stages = [s for s in stages if s["parameters"]]
            models.append(
                {
                    "name": name,
                    "parameters": count_parameters(model),
                    "first_layer": stages[0]["parameters"],
                    "stages": stages,
                }
            )
    return ParamsResult(
        input_shape=input_shape,  # type: ignore[arg-type]
        dense_units=units,
        conv_filters=filters,
        kernel_size=kernel_size,
        dense_parameters=dense,
        dense_formula=f"{units:,} × ({channels}·{height:,}·{width:,}) + {units:,} biases",
        conv_parameters=conv,
        conv_formula=f"{filters} × ({kernel_size}·{kernel_size}·{channels}) + {filters} biases",
        ratio=dense / conv,
        dataset=dataset.name if dataset is not None else "",
        dataset_input=tuple(dataset.input_shape) if dataset is not None else input_shape,  # type: ignore[arg-type]
        models=models,
    )


register_experiment(
    "params",
    run,
    quick={},
    help="dense vs convolutional parameter counts, exact, with the formula",
)
