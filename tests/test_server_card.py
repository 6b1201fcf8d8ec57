"""The model card's colour limits come from the server, so the page computes none of its own."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient


def test_the_card_carries_the_confusion_matrix_limits(digits_run):
    from convlens.server import create_app

    client = TestClient(create_app([digits_run], allowed_hosts=["testserver"]))
    run_id = client.get("/api/runs").json()[0]["id"]
    card = client.get(f"/api/runs/{run_id}").json()
    confusion = json.loads((Path(digits_run) / "model.json").read_text())["metrics"]["confusion"]
    limits = card["confusion_limits"]
    assert limits["low"] == 0 and limits["high"] == max(max(row) for row in confusion)
    assert limits["map"] == "sequential" and not limits["clipped"]


def test_card_js_takes_the_limits_from_the_answer():
    source = (Path(__file__).parent.parent / "src/convlens/server/static/card.js").read_text()
    assert "card.confusion_limits" in source and "Math.max(" not in source
