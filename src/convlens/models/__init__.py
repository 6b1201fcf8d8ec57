"""Models: a registry of CNN families (and an MLP baseline) that all expose ``stages()``."""

from convlens.models import convnets, resnet  # noqa: F401  (registers the families)
from convlens.models._registry import (
    Normalize,
    StagedModel,
    create_model,
    describe_model,
    list_models,
    model_options,
    register_model,
)
from convlens.models.summary import count_parameters, flops_per_image

__all__ = [
    "Normalize",
    "StagedModel",
    "count_parameters",
    "create_model",
    "describe_model",
    "flops_per_image",
    "list_models",
    "model_options",
    "register_model",
]
