"""Scoring no images is an error, never accuracy 0.0 (issue 25, the Python API list): a split of
no images has no accuracy, and zeros read as a model that gets everything wrong."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from convlens.errors import ConvlensError


def test_classification_summary_of_no_labels_names_them():
    from convlens.metrics import classification_summary

    none = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(ConvlensError) as refused:
        classification_summary(none, none, ["a", "b"])
    assert refused.value.parameter == "labels"
    assert str(refused.value).startswith("labels: no images to score") and "\n" not in str(refused.value)


def test_classification_summary_wants_one_prediction_per_label():
    from convlens.metrics import classification_summary

    with pytest.raises(ConvlensError) as refused:
        classification_summary(torch.tensor([0, 1]), torch.tensor([0]), ["a", "b"])
    assert refused.value.parameter == "predictions"
    per_class, confusion = classification_summary(torch.tensor([0, 1]), torch.tensor([0, 0]), ["a", "b"])
    assert confusion == [[1, 0], [1, 0]] and per_class[0]["recall"] == 1.0


def test_evaluate_on_no_images_names_the_parameter(digits_model):
    from convlens.train import evaluate

    model, _ = digits_model
    with pytest.raises(ConvlensError) as refused:
        evaluate(model, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))
    assert refused.value.parameter == "images" and "\n" not in str(refused.value)


def test_eval_of_data_without_test_images_says_so_and_exits_2(digits_run, tmp_path):
    """``convlens eval RUN --data X`` where X's test split is empty: one line naming it, exit 2,
    no accuracy printed (the data set is refused before anything is scored)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16 * 255).astype(np.uint8)[:, None]
    data = tmp_path / "no-test.npz"
    np.savez(data, x=images[:200], y=digits.target[:200], x_test=images[:0], y_test=digits.target[:0])
    for extra in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "convlens", "eval", str(digits_run), "--data", str(data), *extra],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""  # no accuracy, not even a JSON one
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "x_test" in lines[0] and "no images" in lines[0], done.stderr
