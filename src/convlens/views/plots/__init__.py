"""Every figure convlens draws (matplotlib, no display needed), in one colour convention.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state,
safe in a server thread); ``save_png`` writes it, ``png_bytes`` gives the bytes. The CLI, the
report and the lab draw with the same functions. Modules:

- ``colours``: the convention (``SIGNED`` diverging, ``MAGNITUDE`` sequential, ``PIXELS``,
  named ``SERIES``/``REFERENCE``/``PASS``/``FAIL`` colours for charts), ``colour_limits``
  (robust percentiles), ``count_limits``, colour bars;
- ``inside``: feature maps, filters, feature visualization;
- ``explain``: input, class probabilities, attribution maps (one or every method),
  misclassified images with Grad-CAM;
- ``convolution``: a hand-made convolution;
- ``training``: training curves, confusion matrix;
- ``attacks``: adversarial examples, robustness curve;
- ``lab``: one figure per built-in lab experiment, in the named series colours (``FIGURES``;
  ``convlens.views.lab.experiment_figure`` picks it);
- ``output``: PNG bytes and files.
"""

from convlens.views.plots.attacks import attack_examples, robustness_curve
from convlens.views.plots.colours import (
    MAGNITUDE,
    PIXELS,
    SIGNED,
    Limits,
    colour_bar,
    colour_limits,
    picture,
    show_map,
    symmetric_limits,
)
from convlens.views.plots.convolution import convolution
from convlens.views.plots.explain import (
    attribution_grid,
    attribution_map,
    class_probabilities,
    input_picture,
    misclassified,
)
from convlens.views.plots.inside import feature_maps, feature_visualization, filters
from convlens.views.plots.output import png_bytes, save_png
from convlens.views.plots.training import confusion_matrix, training_curves

__all__ = [
    "MAGNITUDE",
    "PIXELS",
    "SIGNED",
    "Limits",
    "attack_examples",
    "attribution_grid",
    "attribution_map",
    "class_probabilities",
    "colour_bar",
    "colour_limits",
    "confusion_matrix",
    "convolution",
    "feature_maps",
    "feature_visualization",
    "filters",
    "input_picture",
    "misclassified",
    "picture",
    "png_bytes",
    "robustness_curve",
    "save_png",
    "show_map",
    "symmetric_limits",
    "training_curves",
]
