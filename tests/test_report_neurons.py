"""The report's Important channels section: the channels it picks are those whose zeroing, in a
forward pass written out here, lowers the predicted-class probability most."""

from __future__ import annotations

import pytest
import torch

from convlens.report.neurons import IMPORTANT, SAMPLE, important_channels
from convlens.run import Run


def _zeroed_probabilities(model, images: torch.Tensor, stage: str, channel: int | None) -> torch.Tensor:
    """Softmax of the chain run stage by stage, ``channel`` of ``stage`` set to 0 on the way."""
    x = images
    with torch.no_grad():
        for name, module in model.stages():
            x = module(x)
            if name == stage and channel is not None:
                x = x.clone()
                x[:, channel] = 0
    return torch.softmax(x, dim=1)


@pytest.mark.slow
def test_the_shown_channels_hurt_most_when_zeroed(digits_run):
    run = Run.open(digits_run)
    images, labels, _ = run.test_data()
    section = important_channels(run, images, labels)
    sample = images[:SAMPLE]
    before = _zeroed_probabilities(run.model, sample, "conv1", None)
    predicted = before.argmax(dim=1)
    rows = torch.arange(len(sample))
    expected = {}
    for stage, count in (("conv1", 16), ("conv2", 32)):
        change = [
            float(
                (
                    _zeroed_probabilities(run.model, sample, stage, c)[rows, predicted]
                    - before[rows, predicted]
                ).mean()
            )
            for c in range(count)
        ]
        expected[stage] = sorted(range(count), key=lambda c: change[c])[:IMPORTANT]
        shown = [int(row[1]) for row in section.tables[0]["rows"] if row[0] == stage]
        assert shown == expected[stage], stage
        first = next(row for row in section.tables[0]["rows"] if row[0] == stage)
        assert float(first[2]) == pytest.approx(100 * change[shown[0]], abs=0.006)  # shown to 2 decimals
    assert len(section.images) == 2 and section.id == "neurons"
