"""A model the user brings, saved as a run folder that every command opens.

Every route ends in the same place: a run whose model is either one of convlens's own
families or the ``graph`` model, a data-only description of the user's stages (allow-listed
layers, JSON) with safetensors weights under the user's own key names
(``convlens.models.graph_spec``). Opening the run later reads data only: no class code is
imported and nothing is unpickled. The routes (``import_file`` picks one from the file):

- a **state_dict or safetensors file plus an architecture** with torchvision's layout
  (``resnet18``, ``resnet34``, ``mobilenet_v2``: a torchvision checkpoint loads key for key);
- a **model object in memory** (``Run.from_model``): a ``StagedModel`` from ``create_model``
  keeps its family; any other module is traced (``convlens.imports.graph_route``);
- the user's **Python factory** ``FILE.py:FUNCTION``, run only with ``trust_code=True``
  (``convlens.imports.user_code``), then traced as a module;
- a **torch.export program** (``.pt2``, ``convlens.imports.exported``) and an **ONNX file**
  (``convlens.imports.onnx_graph``), converted from their graphs without running any code.

The run records the preprocessing, so every face keeps speaking in pixels in [0, 1]: the input
shape, and the mean/std the weights expect (or none, when the model takes pixels as they are).
A rebuilt graph is checked to give the original's outputs before anything is written. Every check
runs before the run folder is touched, and the checkpoint is committed atomically
(``convlens.checkpoint.save_checkpoint``), so a refused import writes nothing.
"""

from __future__ import annotations

from convlens.imports.core import (
    ImportResult,
    import_model,
    import_weights,
    torchvision_arch,
    write_run,
)
from convlens.imports.graph_route import build_graph, graph_of_module
from convlens.imports.preprocessing import (
    UNIT_INTERVAL,
    Preprocessing,
    check_class_names,
    check_input_shape,
    preprocessing,
)
from convlens.imports.routes import import_file, route_of
from convlens.imports.weights_file import read_weights

__all__ = [
    "UNIT_INTERVAL",
    "ImportResult",
    "Preprocessing",
    "build_graph",
    "check_class_names",
    "check_input_shape",
    "graph_of_module",
    "import_file",
    "import_model",
    "import_weights",
    "preprocessing",
    "read_weights",
    "route_of",
    "torchvision_arch",
    "write_run",
]
