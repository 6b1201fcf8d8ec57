"""The catalog: every extension point's registered entries in one listing.

``GET /api/registry`` (the explorer's menus) and ``convlens methods`` show this, so whatever a
plugin or a script registers appears in every face. It lives apart from ``registry`` because it
imports the modules that own the registries, and they import ``registry``. The explorer's views
are a face's own extension point (``convlens.server.views``), listed by ``GET /api/views``.
"""

from __future__ import annotations


def catalog() -> dict[str, list[dict]]:
    """Every extension point's entries, for ``GET /api/registry`` and ``convlens methods --json``."""
    from convlens.attacks import ATTACKS
    from convlens.data import DATA_FORMATS, DATASETS
    from convlens.inspect.attribution import ATTRIBUTIONS
    from convlens.inspect.layer_kinds import LAYER_KINDS
    from convlens.lab import EXPERIMENTS
    from convlens.models import MODELS, list_models

    return {
        "attributions": ATTRIBUTIONS.describe(),
        "attacks": ATTACKS.describe(),
        "experiments": EXPERIMENTS.describe(),
        "models": [MODELS.get(name).describe() for name in list_models()],  # sorted, as list_models
        "datasets": DATASETS.describe(),
        "data_formats": DATA_FORMATS.describe(),
        "layer_kinds": [{**entry.describe(), **entry.function.describe()} for entry in LAYER_KINDS],
    }
