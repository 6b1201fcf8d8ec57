"""convlens: train convolutional neural networks on real images and see how they see.

The public Python API. The faces (CLI, report, web page) use the public modules only: no
``_private`` helper, so what they can do a script can do.
Names are imported on first use, so ``convlens --help`` answers without loading torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ConvlensError": "convlens.errors",
    "Dataset": "convlens.data",
    "list_datasets": "convlens.data",
    "load_dataset": "convlens.data",
    "load_image": "convlens.data",
    "create_model": "convlens.models",
    "list_models": "convlens.models",
    "register_model": "convlens.models",
    "count_parameters": "convlens.models",
    "flops_per_image": "convlens.models",
    "TrainConfig": "convlens.train",
    "TrainResult": "convlens.train",
    "fit": "convlens.train",
    "TrainJob": "convlens.train",
    "follow": "convlens.train",
    "evaluate": "convlens.train",
    "load_checkpoint": "convlens.checkpoint",
    "Run": "convlens.run",
    "predict_files": "convlens.predict",
    "import_file": "convlens.imports",
    # extension points: one registry each (see docs/architecture.md)
    "MODELS": "convlens.models",
    "DATASETS": "convlens.data",
    "register_dataset": "convlens.data",
    "DATA_FORMATS": "convlens.data",
    "register_format": "convlens.data",
    "LAYER_KINDS": "convlens.inspect",
    "register_layer_kind": "convlens.inspect",
    "EXPLORER_VIEWS": "convlens.server.views",
    "register_view": "convlens.server.views",
    "ATTRIBUTIONS": "convlens.inspect.attribution",
    "ATTACKS": "convlens.attacks",
    "EXPERIMENTS": "convlens.lab",
    "register_experiment": "convlens.lab",
    "attribute": "convlens.inspect",
    "Attribution": "convlens.inspect",
    "save_checkpoint": "convlens.checkpoint",
    "predict_probabilities": "convlens.predict",
    "top_predictions": "convlens.predict",
    # the inside view
    "activations": "convlens.inspect",
    "open_model": "convlens.inspect",
    "cell_arithmetic": "convlens.inspect",
    "receptive_fields": "convlens.inspect",
    "conv_filters": "convlens.inspect",
    "convolve": "convlens.inspect",
    "grad_cam": "convlens.inspect",
    "saliency": "convlens.inspect",
    "integrated_gradients": "convlens.inspect",
    "occlusion": "convlens.inspect",
    "smoothgrad": "convlens.inspect",
    "grad_cam_plus_plus": "convlens.inspect",
    "rise": "convlens.inspect",
    "feature_visualization": "convlens.inspect",
    "top_activating_images": "convlens.inspect",
    # fooling the model, the lab, the faces
    "fgsm": "convlens.attacks",
    "pgd": "convlens.attacks",
    "robustness_curve": "convlens.attacks",
    "list_experiments": "convlens.lab",
    "run_experiment": "convlens.lab",
    "build_report": "convlens.report",
    "create_app": "convlens.server.app",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
