"""The catalog: every extension point's registered entries in one listing.

``GET /api/registry`` (the explorer's menus) and ``convlens methods`` show this, so whatever a
plugin or a script registers appears in every face. It lives apart from ``registry`` because it
imports the modules that own the registries, and they import ``registry``.
"""

from __future__ import annotations


def catalog() -> dict[str, list[dict]]:
    """Every extension point's entries, for ``GET /api/registry`` and ``convlens methods --json``."""
    from convlens.attacks import ATTACKS
    from convlens.data import list_datasets
    from convlens.inspect.attribution import ATTRIBUTIONS
    from convlens.lab import EXPERIMENTS
    from convlens.models import describe_model, list_models

    return {
        "attributions": ATTRIBUTIONS.describe(),
        "attacks": ATTACKS.describe(),
        "experiments": EXPERIMENTS.describe(),
        "models": [{"name": name, "label": name, "help": describe_model(name)} for name in list_models()],
        "datasets": [
            {"name": row["name"], "label": row["name"], "help": row["description"]} for row in list_datasets()
        ],
    }
