"""Segmentation in the trainer: models, pixel metrics, weighted loss, mask augmentation, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score
from typer.testing import CliRunner

import segmentation_fixtures
from convlens.checkpoint import load_checkpoint
from convlens.cli import app
from convlens.data.bundle import IGNORE_INDEX, Dataset
from convlens.errors import ConvlensError
from convlens.models import count_parameters, create_model, flops_per_image, list_families
from convlens.pixel_metrics import pixel_confusion, segmentation_scores
from convlens.train import fit
from convlens.train.recipe import TrainConfig
from convlens.train.tasks import Segmentation, pixel_class_weights
from testing_helpers import StopAfter


def squares(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with a red and a green square per image; the mask says which pixels are which."""
    return segmentation_fixtures.squares(count, seed, side=24)


def save_npz(data: Dataset, path, **extra) -> None:
    """``data`` as the .npz of images and masks a user brings (``extra``: more arrays)."""
    np.savez(
        path,
        images=data.train_images.numpy(),
        masks=data.train_labels.numpy(),
        images_test=data.test_images.numpy(),
        masks_test=data.test_labels.numpy(),
        **extra,
    )


@pytest.fixture(scope="module")
def squares_data() -> Dataset:
    train_images, train_masks = squares(240, 0)
    test_images, test_masks = squares(60, 1)
    return Dataset(
        "squares",
        train_images,
        train_masks,
        test_images,
        test_masks,
        ["background", "red", "green"],
        task="segmentation",
        augmentation="flip",
    )


def test_segmentation_families_give_a_score_per_pixel_at_any_size():
    assert {"unet", "fcn"} <= set(list_families("segmentation"))
    assert not {"unet", "fcn"} & set(list_families("classification"))
    for name in ("unet", "fcn"):
        for shape in ((3, 64, 64), (1, 61, 45), (3, 9, 13)):
            model = create_model(name, shape, 4, depth=2)
            assert model.task == "segmentation"
            assert model(torch.rand(2, *shape)).shape == (2, 4, *shape[1:])
    unet = create_model("unet", (3, 64, 64), 6)
    skips = {stage.name: stage.reads for stage in unet.graph_stages() if stage.name.startswith("cat")}
    assert skips["cat1"] == ("up1", "enc1.relu2")  # the skip connection brings back full resolution
    assert count_parameters(unet) > 0 and flops_per_image(unet, (3, 64, 64)) > 0
    with pytest.raises(ConvlensError, match="too small for a depth-3 U-Net"):
        create_model("unet", (1, 4, 4), 2)


def test_pixel_metrics_by_hand():
    truth = torch.tensor([[0, 0, 1], [1, 2, IGNORE_INDEX]])
    guess = torch.tensor([[0, 1, 1], [1, 1, 0]])
    confusion = pixel_confusion(truth, guess, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(confusion, ["a", "b", "c", "d"])
    # a: TP 1, FP 0, FN 1 → 1/2; b: TP 2, FP 2, FN 0 → 2/4; c: TP 0, FN 1 → 0; d never occurs
    assert [row["iou"] for row in scores["per_class_iou"]] == [0.5, 0.5, 0.0, None]
    assert scores["mean_iou"] == pytest.approx(1 / 3)
    assert scores["dice"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)


def test_pixel_metrics_match_scikit_learn():
    generator = torch.Generator().manual_seed(3)
    truth = torch.randint(0, 5, (6, 20, 20), generator=generator)
    truth[truth == 4] = IGNORE_INDEX
    guess = torch.randint(0, 4, (6, 20, 20), generator=generator)
    scores = segmentation_scores(pixel_confusion(truth, guess, 4), list("abcd"))
    kept = truth != IGNORE_INDEX
    y_true, y_pred = truth[kept].numpy(), guess[kept].numpy()
    iou = jaccard_score(y_true, y_pred, labels=range(4), average=None)
    dice = f1_score(y_true, y_pred, labels=range(4), average=None)
    np.testing.assert_allclose([row["iou"] for row in scores["per_class_iou"]], iou, rtol=1e-12)
    np.testing.assert_allclose([row["dice"] for row in scores["per_class_iou"]], dice, rtol=1e-12)
    assert scores["mean_iou"] == pytest.approx(iou.mean())


def test_class_weights_lift_small_classes_and_ignore_void():
    masks = torch.zeros(2, 10, 10, dtype=torch.uint8)
    masks[:, :2, :2] = 1  # 8 pixels of class 1 against 172 of background (20 ignored)
    masks[:, 9, :] = IGNORE_INDEX
    weights = pixel_class_weights(masks, 3)
    counts = torch.tensor([172.0, 8.0])
    median = (counts / counts.sum()).median()
    expected = (median / (counts / counts.sum())).sqrt().clamp(0.2, 5.0)
    torch.testing.assert_close(weights[:2], expected.float())
    assert weights[2] == 1.0  # a class with no pixels keeps weight 1 (it never enters the loss)
    assert weights[1] > weights[0]


def test_mask_moves_with_its_image():
    """The segmentation augmentation warps a mask exactly as its image (flip: pixel for pixel);
    pixels pulled in from outside the frame get no class, not background."""
    images, masks = squares(16, 5)
    masks[:, 0, :] = 0
    task = Segmentation(torch.ones(3))
    batch = torch.cat([images, masks.unsqueeze(1).float() / 10], dim=1)  # the mask rides along as a channel
    moved, moved_masks = task.augment(batch, masks.long(), torch.Generator().manual_seed(0), "flip")
    torch.testing.assert_close((moved[:, 3] * 10).round().long(), moved_masks)
    flipped = [bool((moved_masks[i] == masks[i].long().flip(-1)).all()) for i in range(16)]
    kept = [bool((moved_masks[i] == masks[i].long()).all()) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    _, shifted = task.augment(batch, masks.long(), torch.Generator().manual_seed(1), "shift")
    assert (shifted == IGNORE_INDEX).any() and set(shifted.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}


def test_training_reports_pixel_metrics_and_keeps_the_epoch_by_mean_iou(squares_data, tmp_path):
    result = fit(squares_data, TrainConfig(epochs=3, seed=0), tmp_path / "run")
    data = result.to_json()
    assert data["task"] == "segmentation"
    for key in ("test_mean_iou", "test_pixel_accuracy", "test_dice", "per_class_iou", "test_accuracy"):
        assert key in data
    assert data["test_pixel_accuracy"] == data["test_accuracy"]
    assert [row["class"] for row in data["per_class_iou"]] == squares_data.class_names
    assert data["test_mean_iou"] > 0.4  # 3 short epochs on easy squares: far above painting background
    assert all("val_mean_iou" in row and "test_mean_iou" in row for row in result.history)
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["task"] == "segmentation" and meta["training"]["model"] == "unet"
    assert len(meta["class_weights"]) == 3
    # the checkpoint's numbers are the kept model's: recompute mean IoU from its predictions
    with torch.no_grad():
        predicted = model(squares_data.test_images).argmax(1)
    confusion = pixel_confusion(squares_data.test_labels, predicted, 3)
    assert segmentation_scores(confusion, squares_data.class_names)["mean_iou"] == pytest.approx(
        data["test_mean_iou"], abs=1e-6
    )


def test_segmentation_resume_equals_an_uninterrupted_run(squares_data, tmp_path):
    assert_resume_is_exact(squares_data, dict(epochs=3, seed=2), tmp_path)


def assert_resume_is_exact(dataset: Dataset, config: dict, folder) -> None:
    """Interrupted after epoch 2 and resumed, a run ends as the uninterrupted one: the same
    curves and bit-identical weights."""
    whole = fit(dataset, TrainConfig(**config), folder / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(dataset, TrainConfig(**config), folder / "cut", observer=StopAfter(2))
    resumed = fit(dataset, TrainConfig(), folder / "cut", resume=True)
    assert [r["val_mean_iou"] for r in resumed.history] == [r["val_mean_iou"] for r in whole.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    model_a, _ = load_checkpoint(folder / "whole")
    model_b, _ = load_checkpoint(folder / "cut")
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_model_of_the_other_task_is_refused(squares_data, tmp_path):
    with pytest.raises(ConvlensError, match="predicts a class per image but squares is segmentation"):
        fit(squares_data, TrainConfig(model="tinyvgg", epochs=1), tmp_path / "a")
    digits = Dataset(
        "d",
        torch.rand(20, 1, 8, 8),
        torch.arange(20) % 2,
        torch.rand(4, 1, 8, 8),
        torch.arange(4) % 2,
        ["a", "b"],
    )
    with pytest.raises(ConvlensError, match="predicts a class per pixel"):
        fit(digits, TrainConfig(model="unet", epochs=1), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_trains_an_npz_of_masks_and_reports_the_keys(squares_data, tmp_path):
    path = tmp_path / "squares.npz"
    save_npz(squares_data, path, class_names=np.array(squares_data.class_names))
    result = CliRunner().invoke(
        app, ["train", "--data", str(path), "--out", str(tmp_path / "run"), "--epochs", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == "segmentation" and 0 <= data["test_mean_iou"] <= 1
    assert {"test_pixel_accuracy", "test_dice", "per_class_iou"} <= set(data)
    assert "training unet on" in result.stderr  # masks pick the U-Net before the data is read


def test_the_default_run_folder_names_the_unet(squares_data, tmp_path, monkeypatch):
    from convlens.data import spec_task

    monkeypatch.chdir(tmp_path)
    np.savez(
        tmp_path / "tiny.npz",
        images=squares_data.train_images[:40].numpy(),
        masks=squares_data.train_labels[:40].numpy(),
    )
    assert spec_task("scenes") == spec_task(str(tmp_path / "tiny.npz")) == "segmentation"
    assert spec_task("digits") == spec_task(str(tmp_path / "missing")) == "classification"
    result = CliRunner().invoke(app, ["train", "--data", "tiny.npz", "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "tiny.npz-unet" / "model.json").is_file()


def test_two_processes_train_a_segmentation_run_with_one_writer(squares_data, tmp_path):
    """torchrun with 2 processes: pixel counts add up over the shards, rank 0 writes one run,
    and the mean IoU it records is the saved model's on the whole test split."""
    import subprocess

    from test_train_distributed import _environment, _torchrun

    path = tmp_path / "squares.npz"
    save_npz(squares_data, path)
    command = _torchrun("-m", "convlens", "train", "--data", path, "--epochs", "2", "--out", tmp_path / "run")
    done = subprocess.run(
        command, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["world_size"] == 2 and meta["task"] == "segmentation"
    with torch.no_grad():
        predicted = model(squares_data.test_images).argmax(1)
    scores = segmentation_scores(pixel_confusion(squares_data.test_labels, predicted, 3), ["a", "b", "c"])
    assert scores["mean_iou"] == pytest.approx(meta["metrics"]["test_mean_iou"], abs=1e-6)


def _pasted_folder(root, count: int = 24):
    """A user's folder: crops of scikit-image photos with a patch of the cat (class 1) and of the
    astronaut (class 2) pasted at random places; palette-PNG masks say where each patch is."""
    import skimage.data
    from PIL import Image

    photos = [skimage.data.coffee(), skimage.data.rocket(), skimage.data.camera()]
    cat, astronaut = skimage.data.chelsea(), skimage.data.astronaut()
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for index in range(count):
        photo = photos[index % 3]
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo
        top, left = rng.integers(0, 200, 2)
        image = photo[top : top + 32, left : left + 32].copy()
        mask = np.zeros((32, 32), dtype=np.uint8)
        for class_id, source in ((1, cat), (2, astronaut)):
            row, col = rng.integers(0, 22, 2)
            image[row : row + 10, col : col + 10] = source[150:160, 200:210]
            mask[row : row + 10, col : col + 10] = class_id
        Image.fromarray(image).save(root / "images" / f"shot{index:02d}.png")
        palette_mask = Image.fromarray(mask, mode="L").convert("P")
        palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
        palette_mask.save(root / "masks" / f"shot{index:02d}.png")
    (root / "classes.txt").write_text("background\ncat\nastronaut\n")
    return root


@pytest.mark.slow  # about 40 s: the default U-Net recipe end to end; resume is also checked by the faster test above
def test_a_users_mask_folder_trains_with_defaults_predicts_masks_and_resumes_exactly(tmp_path):
    from PIL import Image

    from convlens.data import load_dataset

    folder = _pasted_folder(tmp_path / "shots")
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--json"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert summary["task"] == "segmentation" and summary["test_mean_iou"] > 0.5
    assert [row["class"] for row in summary["per_class_iou"]] == ["background", "cat", "astronaut"]
    image = folder / "images" / "shot03.png"
    predicted = runner.invoke(
        app, ["predict", str(tmp_path / "run"), str(image), "--out", str(tmp_path / "out")]
    )
    assert predicted.exit_code == 0, predicted.output
    mask = np.asarray(Image.open(tmp_path / "out" / "shot03.mask.png"))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1, 2}

    assert_resume_is_exact(load_dataset(str(folder)), dict(epochs=3, seed=4), tmp_path)


def test_a_train_job_refuses_a_model_of_the_other_task():
    from convlens.train.jobs import TrainJob

    with pytest.raises(
        ConvlensError, match="model: unet does segmentation, but digits is classification data"
    ):
        TrainJob(data="digits", model="unet").check()
    TrainJob(data="digits", model="convnet").check()  # the default family: the recipe picks per task
