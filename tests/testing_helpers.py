"""Small helpers shared by several test modules (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations


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
