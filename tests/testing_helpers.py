"""Small helpers shared by several test modules (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import base64

import numpy as np


def unpacked(value: dict) -> np.ndarray:
    """A tensor the explorer sent as ``{"shape", "b64"}`` (server/encode.py ``packed``), as an array."""
    return np.frombuffer(base64.b64decode(value["b64"]), dtype="<f4").reshape(value["shape"])


def pick_test_image(page, position: int) -> int:
    """Click the explorer's test-image thumbnail at ``position``; returns its index in the test split."""
    thumb = page.locator("#test-strip canvas.thumb").nth(position)
    index = int(thumb.get_attribute("data-index"))
    thumb.click()
    page.wait_for_selector(f'#network[data-source="test image {index}"]')
    return index


class StopAfter:
    """A training observer that interrupts ``fit`` once epoch ``epoch`` is saved, as Ctrl-C would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch, epochs, batches):
        pass

    def batch_done(self, loss, accuracy, images_per_second):
        pass

    def end_epoch(self, metrics):
        if metrics["epoch"] == self.epoch:
            raise KeyboardInterrupt
