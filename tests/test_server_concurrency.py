"""Concurrent requests on one model: hooks of one request must never record another's forward pass."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch

from convlens.server.background import BackgroundServer
from testing_helpers import unpacked


def test_concurrent_activations_predict_and_attacks_do_not_mix(digits_run, digits_model, digits):
    model, _ = digits_model
    run_id = digits_run.name
    indices = list(range(0, 48, 3))

    def expected_relu1(index: int) -> np.ndarray:
        image = digits.test_images[index].float().unsqueeze(0) / 255  # (1, 1, 8, 8)
        with torch.no_grad():
            x = image
            for name, module in model.stages():
                x = module(x)
                if name == "relu1":
                    return x[0].numpy()
        raise AssertionError("no relu1 stage")

    with BackgroundServer([digits_run]) as url:

        def one(job: tuple[str, int]) -> tuple[str, int, dict]:
            kind, index = job
            with httpx.Client(base_url=url, timeout=60) as client:
                data = {"test_index": index}
                if kind == "attack":
                    data.update(method="pgd", eps=0.1, steps=3)
                response = client.post(f"/api/runs/{run_id}/{kind}", data=data)
                assert response.status_code == 200, response.text
                return kind, index, response.json()

        jobs = [(kind, i) for i in indices for kind in ("activations", "predict", "attack")]
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, jobs))
    for kind, index, body in results:
        if kind == "activations":
            relu1 = next(s for s in body["stages"] if s["name"] == "relu1")
            assert np.allclose(unpacked(relu1["output"]), expected_relu1(index), atol=1e-5), index
        assert body["label"] == int(digits.test_labels[index])
