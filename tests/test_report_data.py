"""The report walks the whole test split a batch at a time (``Run.test_split``, ``FloatImages``):
the same numbers and figures as from the split made float at once, and memory that does not
grow with the split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convlens.data import to_float
from convlens.data.rows import FloatImages
from convlens.run import Run

SECTIONS = ("confusion matrix", "misclassified images", "feature maps")  # attacks take images[:200]: a tensor


def test_float_images_index_like_the_split_made_float(digits):
    index = torch.randperm(digits.test_labels.shape[0], generator=torch.Generator().manual_seed(5))
    view = FloatImages(digits.test_images, index)
    whole = digits.test_images[index].float() / 255  # to_float by hand
    assert view.shape == whole.shape and len(view) == whole.shape[0] and view.dtype == torch.float32
    assert torch.equal(view[3], whole[3]) and torch.equal(view[-1], whole[-1])
    assert torch.equal(view[10:20], whole[10:20]) and torch.equal(view[[4, 2]], whole[[4, 2]])
    assert torch.equal(torch.cat(list(view.batches(100))), whole)
    assert [batch.shape[0] for batch in view.batches(100)] == [100, 100, 100, 60]
    with pytest.raises(IndexError):
        view[len(view)]
    with pytest.raises(TypeError, match="index with an int"):
        view["3"]


def test_the_report_gives_the_same_sections_read_a_batch_at_a_time(digits_run, tmp_path):
    """Before, the report made the whole split float at once (``test_data``); now it reads it per
    batch: the probabilities are bit for bit the same, and so is each section built from them."""
    from convlens.report import _classification_builders

    run = Run.open(digits_run)
    view, labels, spec = run.test_split()
    whole, same_labels, _ = run.test_data()
    assert isinstance(view, FloatImages) and torch.equal(labels, same_labels)
    probabilities = run.predict(view)
    assert torch.equal(probabilities, run.predict(whole))
    dataset, _ = run.data()
    index = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # independent: the model on the uint8 split made float by hand
        expected = torch.softmax(run.model(dataset.test_images[index].float() / 255), dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-5)

    def built(images) -> dict:
        builders = dict(_classification_builders(run, images, labels, spec, 0.1, tmp_path))
        return {what: builders[what]() for what in SECTIONS}

    batched, at_once = built(view), built(whole)
    for what in SECTIONS:
        assert batched[what].text == at_once[what].text, what
        assert batched[what].tables == at_once[what].tables, what
        assert [image["data"] for image in batched[what].images] == [
            image["data"] for image in at_once[what].images
        ], what


REPORT_MEMORY = r"""
import json, resource, sys, types
import numpy as np, torch
torch.set_num_threads(1)
from convlens import create_model
from convlens.data.rows import open_mapped
from convlens.inspect.analyses import correct_sample, misclassified
from convlens.run import Run

path, count = sys.argv[1], 4_000
with open(path, "wb") as handle:  # a sparse file: 4,000 test images at 3x64x64 (196 MB as floats)
    np.lib.format.write_array_header_1_0(
        handle, {"descr": "|u1", "fortran_order": False, "shape": (count, 3, 64, 64)}
    )
    handle.truncate(handle.tell() + count * 3 * 64 * 64)
model = create_model("mlp", (3, 64, 64), 4).eval()
dataset = types.SimpleNamespace(test_images=open_mapped(path), test_labels=torch.arange(count) % 4)
run = types.SimpleNamespace(data=lambda data: (dataset, "a cached folder"), model=model, num_classes=4)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
images, labels, spec = Run.test_split(run)  # as the report does
probabilities = Run.predict(run, images)
mistakes = misclassified(model, images, labels, probabilities, limit=10, with_grad_cam=False)
shown = [images[int(i)] for i in mistakes.indices] + [images[correct_sample(labels, probabilities)]]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_kib": grown, "probabilities": list(probabilities.shape), "wrong": mistakes.wrong}))
"""


def test_the_reports_evaluation_path_does_not_hold_the_split_as_floats(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", REPORT_MEMORY, str(Path(tmp_path) / "test.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout)
    assert facts["probabilities"] == [4000, 4] and 0 < facts["wrong"] <= 4000
    assert facts["grown_kib"] < 48 * 1024  # the split as floats would be 188 MiB


def test_to_float_of_a_view_batch_is_to_float_of_the_rows(digits):
    view = FloatImages(digits.test_images[:7])
    assert torch.equal(view[:], to_float(digits.test_images[:7]))
