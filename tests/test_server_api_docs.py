"""/docs serves Swagger UI from the installed package (no CDN), under the page's own CSP; the run
card carries every stage's layer facts for the page's explanations."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from convlens.server import create_app


@pytest.fixture(scope="module")
def client(digits_run) -> TestClient:
    return TestClient(create_app([digits_run], allowed_hosts=["testserver"]))


def test_docs_page_loads_only_files_of_the_explorer(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") or s.startswith("data:") for s in sources), sources
    for source in (s for s in sources if s.startswith("/")):
        assert client.get(source).status_code == 200, source
    assert "<script>" not in page.text  # an inline script would be blocked by the CSP
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-eval" not in policy
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from a CDN


def test_run_card_has_the_layer_facts_of_every_stage(client, digits_run, digits_model):
    card = client.get(f"/api/runs/{digits_run.name}").json()
    model = digits_model[0]
    layers = {stage["name"]: stage["layer"] for stage in card["stages"]}
    conv1 = dict(model.stages())["conv1"]
    assert layers["conv1"]["filters"] == conv1.out_channels
    assert layers["conv1"]["kernel"] == list(conv1.kernel_size)
    assert layers["conv1"]["parameters"] == conv1.weight.numel() + conv1.bias.numel()
    assert layers["softmax"]["output_shape"] == [len(card["class_names"])]
    assert all(stage["layer"]["stage"] == stage["name"] for stage in card["stages"])
