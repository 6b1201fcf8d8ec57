"""What the learning playground's endpoints accept: a network and its data (``StartRequest``),
and one weight or bias set by hand (``WeightEdit``, ``BiasEdit``). Every bound is stated in the
OpenAPI schema and enforced by ``convlens.playground2d``, whose 400 names the value and its range.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from convlens.playground2d import (
    ACTIVATIONS,
    DATASETS,
    FEATURES,
    MAX_LAYERS,
    MAX_NEURONS,
    PlaygroundConfig,
    check_config,
)
from convlens.playground2d.config import MAX_BATCH, MAX_LR, MAX_SEED, REGULARIZATIONS
from convlens.playground2d.data import MAX_NOISE
from convlens.playground2d.trainer import MAX_EDIT
from convlens.server.deps import Number, WholeNumber
from convlens.server.streams import PAGE_HELP, PAGE_SCHEMA

DEFAULTS = PlaygroundConfig()


def _rule(**schema) -> dict:
    """JSON Schema keywords for the OpenAPI schema only: pydantic would answer a 422 of its own
    words, while ``check_config`` answers a 400 that names the value and its range."""
    return schema


class StartRequest(BaseModel):
    """A network and its data; any value out of range is a 400 naming it. The bounds below are
    ``check_config``'s, stated in the schema (``_rule``) and enforced there, with its messages."""

    page: str = Field(description=PAGE_HELP, json_schema_extra=PAGE_SCHEMA)
    dataset: str = Field(
        DEFAULTS.dataset, description=", ".join(DATASETS), json_schema_extra=_rule(enum=list(DATASETS))
    )
    noise: Number = Field(
        DEFAULTS.noise,
        description=f"percent, 0 to {MAX_NOISE:g}",
        json_schema_extra=_rule(minimum=0, maximum=MAX_NOISE),
    )
    train_percent: Number = Field(
        DEFAULTS.train_percent,
        description="share of the points to train on, 10 to 90",
        json_schema_extra=_rule(minimum=10, maximum=90),
    )
    seed: WholeNumber = Field(
        DEFAULTS.seed,
        description="the points, their split, the initial weights, the batch order",
        json_schema_extra=_rule(minimum=0, maximum=MAX_SEED),
    )
    features: list[str] = Field(
        list(DEFAULTS.features),
        description=", ".join(FEATURES),
        json_schema_extra=_rule(minItems=1, items={"type": "string", "enum": list(FEATURES)}),
    )
    hidden: list[WholeNumber] = Field(
        list(DEFAULTS.hidden),
        description=f"neurons per hidden layer: 0 to {MAX_LAYERS} layers of 1 to {MAX_NEURONS}",
        json_schema_extra=_rule(
            maxItems=MAX_LAYERS, items={"type": "integer", "minimum": 1, "maximum": MAX_NEURONS}
        ),
    )
    activation: str = Field(
        DEFAULTS.activation,
        description=", ".join(ACTIVATIONS),
        json_schema_extra=_rule(enum=list(ACTIVATIONS)),
    )
    lr: Number = Field(
        DEFAULTS.lr,
        description=f"Adam's learning rate, above 0, at most {MAX_LR:g}",
        json_schema_extra=_rule(exclusiveMinimum=0, maximum=MAX_LR),
    )
    regularization: str = Field(
        DEFAULTS.regularization,
        description=", ".join(REGULARIZATIONS),
        json_schema_extra=_rule(enum=list(REGULARIZATIONS)),
    )
    regularization_rate: Number = Field(
        DEFAULTS.regularization_rate, description="0 to 10", json_schema_extra=_rule(minimum=0, maximum=10)
    )
    batch_size: WholeNumber = Field(
        DEFAULTS.batch_size,
        description=f"points per step, 1 to {MAX_BATCH}",
        json_schema_extra=_rule(minimum=1, maximum=MAX_BATCH),
    )
    init_seed: WholeNumber | None = Field(
        None,
        description="the initial weights and the batch order [default: seed]; the page's reset "
        "sends a new one: new weights, the same points",
        json_schema_extra=_rule(minimum=0, maximum=MAX_SEED),
    )

    def config(self) -> PlaygroundConfig:
        values = self.model_dump(exclude={"page", "init_seed"})
        return check_config(
            PlaygroundConfig(**{**values, "features": tuple(self.features), "hidden": tuple(self.hidden)})
        )


class WeightEdit(BaseModel):
    """One weight of the page's network, set by hand (the page's click on a line)."""

    layer: WholeNumber = Field(
        description="which weights: 0 from the features into the first hidden layer, the last into "
        "the output", json_schema_extra=_rule(minimum=0, maximum=MAX_LAYERS),
    )  # fmt: skip
    neuron: WholeNumber = Field(
        description="the neuron the weight feeds (its row)",
        json_schema_extra=_rule(minimum=0, maximum=MAX_NEURONS - 1),
    )
    source: WholeNumber = Field(
        description="the feature or neuron of the layer before that it comes from (its column)",
        json_schema_extra=_rule(minimum=0, maximum=max(MAX_NEURONS, len(FEATURES)) - 1),
    )
    value: Number = Field(
        description=f"the new weight, -{MAX_EDIT:g} to {MAX_EDIT:g}",
        json_schema_extra=_rule(minimum=-MAX_EDIT, maximum=MAX_EDIT),
    )


class BiasEdit(BaseModel):
    """One neuron's bias, set by hand (the page's click on the small square at a neuron)."""

    layer: WholeNumber = Field(
        description="0: the first hidden layer; the last: the output",
        json_schema_extra=_rule(minimum=0, maximum=MAX_LAYERS),
    )
    neuron: WholeNumber = Field(
        description="the neuron in that layer", json_schema_extra=_rule(minimum=0, maximum=MAX_NEURONS - 1)
    )
    value: Number = Field(
        description=f"the new bias, -{MAX_EDIT:g} to {MAX_EDIT:g}",
        json_schema_extra=_rule(minimum=-MAX_EDIT, maximum=MAX_EDIT),
    )
