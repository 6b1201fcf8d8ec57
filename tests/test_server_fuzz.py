"""Fuzz the explorer's API from its own OpenAPI schema (schemathesis): whatever a client sends,
valid or not, the answer is never a 5xx, its status code is one the schema documents, and its
body matches the documented model."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from convlens.server import create_app  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def operations(digits_run):
    """Every operation of the schema, with ``{run_id}`` fixed to the loaded run (a random id
    would only ever reach the 404)."""
    app = create_app([digits_run], allowed_hosts=["testserver"])  # schemathesis' ASGI client is "testserver"
    raw = copy.deepcopy(app.openapi())
    paths = {}
    for path, methods in raw["paths"].items():
        for operation in methods.values():
            operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "run_id"]
        paths[path.replace("{run_id}", digits_run.name)] = methods
    raw["paths"] = paths
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 12
    return found


def fuzz(operations, data, modes) -> None:
    operation = data.draw(st.sampled_from(operations), label="operation")
    mode = data.draw(st.sampled_from(modes), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    response = case.call()
    case.validate_response(response, checks=CHECKS)


def _modes():
    from schemathesis import GenerationMode

    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_api_fuzz_quick(operations, data):
    fuzz(operations, data, _modes())


@pytest.mark.slow
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_api_fuzz_long(operations, data):
    fuzz(operations, data, _modes())
