"""`convlens report` of a segmentation run: its own sections, numbers checked independently."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import segmentation_fixtures
from convlens.data.bundle import IGNORE_INDEX
from segmentation_fixtures import as_uint8

SECTIONS = ["overview", "training", "scores", "per-class", "confusion", "samples", "worst", "calibration"]
CLASSIFIER_ONLY = ["misclassified", "attributions", "attacks", "feature-maps", "lab"]


def _squares(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Red and green squares (classes 1, 2) on dim noise (class 0); the top row marked no class."""
    images, masks = segmentation_fixtures.squares(count, seed)
    return as_uint8(images).transpose(0, 2, 3, 1), masks.numpy()


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """(run folder, data file): a U-Net trained one epoch on squares saved as an .npz of masks."""
    from convlens.data import load_dataset
    from convlens.train import fit
    from convlens.train.recipe import TrainConfig

    images, masks = _squares(64, 0)
    test_images, test_masks = _squares(24, 1)
    folder = tmp_path_factory.mktemp("squares")
    data = folder / "squares.npz"
    np.savez(
        data,
        images=images,
        masks=masks,
        images_test=test_images,
        masks_test=test_masks,
        class_names=np.array(["background", "red", "green"]),
    )
    dataset = load_dataset(data)
    assert dataset.task == "segmentation"
    fit(dataset, TrainConfig(epochs=1, snapshots=False), folder / "run")
    return folder / "run", data


@pytest.fixture(scope="module")
def sections(squares):
    from convlens.report import report_sections

    run_dir, data = squares
    return report_sections(run_dir, data=str(data))


def test_report_writes_the_segmentation_sections_and_no_classifier_section(squares, tmp_path):
    from convlens.report import build_report

    run_dir, data = squares
    html = build_report(run_dir, tmp_path / "report.html", data=str(data)).read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    for section in CLASSIFIER_ONLY:
        assert f'<section id="{section}">' not in html
    assert "mean IoU" in html and "expected calibration error" in html and "true pixels" in html
    images = re.findall(r'src="([^"]+)"', html)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)


def test_worst_images_match_sklearn_per_image_iou(squares, sections):
    """Per-image IoU = sklearn's macro Jaccard over the classes in that image's truth or prediction
    (scored pixels only); the worst list is the lowest of those, in order."""
    from sklearn.metrics import jaccard_score

    from convlens.inspect.segmentation_quality import segmentation_quality

    run, built = sections
    _, data = squares
    images, masks, _ = run.test_data(str(data))
    quality = segmentation_quality(run.model, images, masks, run.class_names, worst=6)
    with torch.no_grad():
        predicted = torch.softmax(run.model.eval()(images), 1).argmax(1)  # the model, not the library
    assert torch.equal(quality.predicted.long(), predicted)
    expected = []
    for i in range(masks.shape[0]):
        scored = masks[i] != IGNORE_INDEX
        truth, guess = masks[i][scored].long().numpy(), predicted[i][scored].numpy()
        present = sorted(set(truth.tolist()) | set(guess.tolist()))
        expected.append(jaccard_score(truth, guess, labels=present, average="macro", zero_division=0))
    for score in quality.per_image:
        assert score.mean_iou == pytest.approx(expected[score.index], abs=1e-12)
    order = sorted(range(len(expected)), key=lambda i: (expected[i], i))[:6]
    assert quality.worst == order
    worst = next(s for s in built if s.id == "worst")
    shown_rows = worst.tables[0]["rows"]
    assert [int(row[1]) for row in shown_rows] == order
    assert shown_rows[0][2] == f"{100 * expected[order[0]]:.2f} %"


def test_split_scores_match_the_checkpoint_metrics(squares, sections):
    """The report's headline is computed again on the test split: it equals what training recorded."""
    run, built = sections
    scores = next(s for s in built if s.id == "scores").tables[0]["rows"]
    shown = dict((row[0], row[1]) for row in scores)
    assert shown["mean IoU"] == f"{100 * run.metrics['test_mean_iou']:.2f} %"
    assert shown["pixel accuracy"] == f"{100 * run.metrics['test_pixel_accuracy']:.2f} %"
    assert shown["kept epoch"] == str(run.metrics["selected_epoch"])


def test_pixel_ece_by_hand():
    """Four scored pixels and one ignored, 10 bins: (0.92 right, 0.96 wrong) share the top bin,
    (0.64 wrong, 0.67 right) the (0.6, 0.7] bin; the ignored pixel counts nowhere."""
    from convlens.inspect.segmentation_quality import pixel_calibration

    class_one = torch.tensor([0.92, 0.96, 0.64, 0.33, 0.99], dtype=torch.float64)
    probabilities = torch.stack([1 - class_one, class_one]).reshape(1, 2, 1, 5)
    masks = torch.tensor([[[1, 0, 0, 0, IGNORE_INDEX]]], dtype=torch.uint8)
    result = pixel_calibration(probabilities, masks, bins=10)
    top = abs(0.5 - (0.92 + 0.96) / 2)
    middle = abs(0.5 - (0.64 + 0.67) / 2)
    assert result.pixels == 4
    assert result.ece == pytest.approx(2 / 4 * top + 2 / 4 * middle, abs=1e-12)
    assert [b.count for b in result.bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert result.accuracy == 0.5


def test_row_normalised_confusion():
    from convlens.inspect.segmentation_quality import row_shares

    shares = row_shares(torch.tensor([[3, 1, 0], [0, 0, 0], [2, 2, 4]]))
    assert shares.tolist() == [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]]
