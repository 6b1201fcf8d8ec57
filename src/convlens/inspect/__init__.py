"""The inside view: what a trained CNN computes, stage by stage, for one image.

Every function returns plain dataclasses of tensors and numbers (``as_dict`` makes them
JSON); the CLI, the report and the web page only render them.
"""

from __future__ import annotations

from convlens.inspect._data import as_dict
from convlens.inspect._optimize import is_affine_stage
from convlens.inspect._stages import SOFTMAX, find_stage, is_spatial_stage, stage_inputs, stage_names
from convlens.inspect.any_model import open_model
from convlens.inspect.arithmetic import (
    AddCell,
    BatchNormCell,
    Cell,
    ConcatCell,
    ConvCell,
    ElementwiseCell,
    FlattenCell,
    LinearCell,
    NormalizeCell,
    PoolCell,
    ReluCell,
    SoftmaxCell,
    cell_arithmetic,
)
from convlens.inspect.attribution import (
    ATTRIBUTIONS,
    Attribution,
    attribute,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_stage,
    integrated_gradients,
    last_conv_stage,
    occlusion,
    rise,
    saliency,
    smoothgrad,
)
from convlens.inspect.cells import elementwise
from convlens.inspect.convolve import KERNELS, Convolution, ConvolutionCell, convolve, parse_kernel
from convlens.inspect.featureviz import (
    FeatureVisualization,
    RegularisedVisualization,
    TopImages,
    feature_visualization,
    regularised_visualization,
    top_activating_images,
)
from convlens.inspect.filters import ConvFilters, conv_filters
from convlens.inspect.hooks import Activations, StageActivation, activations
from convlens.inspect.layer_facts import LayerFacts, layer_facts
from convlens.inspect.layer_kinds import (
    LAYER_KINDS,
    LayerKind,
    StageTraits,
    layer_kind,
    register_layer_kind,
    stage_traits,
    unregister_layer_kind,
)
from convlens.inspect.pictures import SMILEY, load_picture, picture_for_model, read_dicom
from convlens.inspect.receptive_field import ReceptiveField, receptive_field, receptive_fields, stage_windows
from convlens.inspect.unit_optimum import UnitOptimum, unit_optimum

__all__ = [
    "ATTRIBUTIONS",
    "KERNELS",
    "LAYER_KINDS",
    "SMILEY",
    "SOFTMAX",
    "Activations",
    "AddCell",
    "Attribution",
    "BatchNormCell",
    "Cell",
    "ConcatCell",
    "ConvCell",
    "ConvFilters",
    "Convolution",
    "ConvolutionCell",
    "ElementwiseCell",
    "FeatureVisualization",
    "FlattenCell",
    "LayerFacts",
    "LayerKind",
    "LinearCell",
    "NormalizeCell",
    "PoolCell",
    "ReceptiveField",
    "RegularisedVisualization",
    "ReluCell",
    "SoftmaxCell",
    "StageActivation",
    "StageTraits",
    "TopImages",
    "UnitOptimum",
    "activations",
    "as_dict",
    "attribute",
    "cell_arithmetic",
    "conv_filters",
    "convolve",
    "elementwise",
    "feature_visualization",
    "find_stage",
    "grad_cam",
    "grad_cam_plus_plus",
    "grad_cam_stage",
    "integrated_gradients",
    "is_affine_stage",
    "is_spatial_stage",
    "last_conv_stage",
    "layer_facts",
    "layer_kind",
    "load_picture",
    "occlusion",
    "open_model",
    "parse_kernel",
    "picture_for_model",
    "read_dicom",
    "receptive_field",
    "receptive_fields",
    "register_layer_kind",
    "regularised_visualization",
    "rise",
    "saliency",
    "smoothgrad",
    "stage_inputs",
    "stage_names",
    "stage_traits",
    "stage_windows",
    "top_activating_images",
    "unit_optimum",
    "unregister_layer_kind",
]
