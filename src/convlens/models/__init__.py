"""Models: a registry of CNN families (and an MLP baseline) that all expose ``stages()``.

``MODELS`` is the registry; ``register_model`` / ``create_model`` / ``list_models`` read and write it.
"""

from convlens.models import (  # noqa: F401  (registers the families)
    convnets,
    graph_model,
    resnet,
    segmentation,
    torchvision_mobilenet,
    torchvision_resnet,
)
from convlens.models._registry import (
    MODELS,
    Normalize,
    StagedModel,
    check_model_options,
    create_model,
    describe_model,
    describe_options,
    list_families,
    list_models,
    model_options,
    model_task,
    register_model,
)
from convlens.models.summary import count_parameters, flops_per_image

__all__ = [
    "MODELS",
    "Normalize",
    "StagedModel",
    "check_model_options",
    "count_parameters",
    "create_model",
    "describe_model",
    "describe_options",
    "flops_per_image",
    "list_families",
    "list_models",
    "model_options",
    "model_task",
    "register_model",
]
