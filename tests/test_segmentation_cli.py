"""The CLI on a segmentation run: predict's masks, overlays, shares and portraits; eval's IoU;
explain --pixel; and one-line refusals (exit 2) where a command only makes sense per image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_segmentation_inspect import squares, squares_dataset


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    from convlens.train import fit
    from convlens.train.recipe import TrainConfig

    folder = tmp_path_factory.mktemp("segcli") / "run"
    fit(squares_dataset(), TrainConfig(model="unet", epochs=2, model_options={"width": 4}), folder)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two PNGs: one at the model's 32x32, one at 64x96 (portrait at the photo's own size)."""
    folder = tmp_path_factory.mktemp("photos")
    images = squares(2, 11)[0]
    small = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(small).save(folder / "small.png")
    big = torch.nn.functional.interpolate(images[1:2], size=(64, 96), mode="nearest")[0]
    Image.fromarray((big.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / "big.png")
    return folder


def test_predict_writes_mask_overlay_shares_and_portrait(run_cli, seg_run, photos, tmp_path):
    from convlens.predict import segment
    from convlens.run import Run
    from convlens.views.segmentation_colours import class_palette

    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "predict", seg_run, photos / "small.png", photos / "big.png", "--out", out, "--portrait"
    )
    assert code == 0, stderr
    names = sorted(p.name for p in out.iterdir())
    for stem in ("big", "small"):
        assert {f"{stem}.mask.png", f"{stem}.overlay.png", f"{stem}.json", f"{stem}.portrait.png"} <= set(
            names
        )
    assert not [n for n in names if n.endswith(".tmp")]
    run = Run.open(seg_run)
    pixels = run.input(photos / "small.png").pixels
    expected = segment(run.model, pixels).mask.numpy()
    mask = Image.open(out / "small.mask.png")
    assert mask.mode == "P" and np.array_equal(np.asarray(mask), expected)
    assert np.array_equal(np.asarray(mask.getpalette()[:9], dtype=np.uint8).reshape(3, 3), class_palette(3))
    shares = json.loads((out / "small.json").read_text())["shares"]
    assert [s["class"] for s in shares] == ["background", "red", "green"]
    assert [s["pixels"] for s in shares] == [int((expected == c).sum()) for c in range(3)]
    assert Image.open(out / "small.overlay.png").size == (32, 32)
    portrait = np.asarray(Image.open(out / "big.portrait.png"))
    assert portrait.shape == (64, 96, 3)  # the photo's own size
    big_mask = run.segment(photos / "big.png").mask
    upsampled = torch.nn.functional.interpolate(big_mask[None, None].float(), size=(64, 96), mode="nearest")[
        0, 0
    ]
    photo = np.asarray(Image.open(photos / "big.png"))
    keep = upsampled.numpy() != 0
    assert np.array_equal(portrait[keep], photo[keep])  # the foreground untouched


def test_predict_prints_shares_and_json(run_cli, seg_run, photos):
    code, stdout, _ = run_cli("predict", seg_run, photos / "small.png")
    assert code == 0 and "background" in stdout and "%" in stdout
    code, stdout, _ = run_cli("predict", seg_run, photos / "small.png", "--json")
    rows = json.loads(stdout)
    assert code == 0 and rows[0]["file"].endswith("small.png")
    assert sum(s["share"] for s in rows[0]["shares"]) == pytest.approx(1)


def test_eval_prints_iou_and_json(run_cli, seg_run, tmp_path):
    from convlens.run import Run

    images, masks = squares(12, 5)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # N, H, W, C
    data = tmp_path / "squares.npz"
    np.savez(data, images=pixels, masks=masks.numpy(), images_test=pixels, masks_test=masks.numpy(),
             class_names=np.array(["background", "red", "green"]))  # fmt: skip
    code, stdout, stderr = run_cli("eval", seg_run, "--data", data, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    # by hand: the argmax of the model on the same 8-bit pixels, IoU per class, mean over classes seen
    model = Run.open(seg_run).model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    truth = masks.numpy()
    ious = []
    for c in range(3):
        union = ((truth == c) | (predicted == c)).sum()
        if union:
            ious.append(((truth == c) & (predicted == c)).sum() / union)
    assert summary["test_mean_iou"] == pytest.approx(np.mean(ious), abs=1e-6)
    assert summary["test_pixel_accuracy"] == pytest.approx((truth == predicted).mean(), abs=1e-6)
    assert "test_dice" in summary
    assert [row["class"] for row in summary["per_class_iou"]] == ["background", "red", "green"]
    code, stdout, _ = run_cli("eval", seg_run, "--data", data)
    assert code == 0 and "mean IoU" in stdout and "green" in stdout


def test_explain_pixel(run_cli, seg_run, photos, tmp_path):
    code, stdout, stderr = run_cli(
        "explain", seg_run, photos / "small.png", "--pixel", "10,12", "--out", tmp_path, "--json"
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["pixel"] == [10, 12] and summary["grad_cam"]["stage"] == "dec1.relu2"
    assert sum(summary["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert (tmp_path / "pixel-10-12.png").is_file()
    assert any(f["stage"] == "pool1" for f in summary["receptive_fields"])
    code, stdout, _ = run_cli("explain", seg_run, photos / "small.png", "--pixel", "3,4", "--out", tmp_path)
    assert code == 0 and "rows" in stdout and "dec1.relu2" in stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["explain", "RUN", "IMAGE"], "--pixel"),
        (["explain", "RUN", "IMAGE", "--pixel", "40,1"], "--pixel"),
        (["explain", "RUN", "IMAGE", "--pixel", "a,b"], "--pixel"),
        (["attack", "RUN"], "explain"),
        (["lab", "faithfulness", "--option", "run=RUN"], "explain"),
        (["predict", "RUN", "IMAGE", "--portrait"], "--out"),
        (["predict", "RUN", "IMAGE", "--out", "OUT", "--portrait-effect", "sepia"], "--portrait-effect"),
    ],
)
def test_refusals_are_one_line_exit_2(run_cli, seg_run, photos, tmp_path, args, words):
    swap = {"RUN": str(seg_run), "IMAGE": str(photos / "small.png"), "OUT": str(tmp_path / "o")}
    code, _, stderr = run_cli(
        *[a.replace("run=RUN", f"run={seg_run}") if "=" in a else swap.get(a, a) for a in args]
    )
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("convlens: error:") and words in stderr
    assert "Traceback" not in stderr and not (tmp_path / "o").exists()


def test_classification_run_refuses_segmentation_flags(run_cli, digits_run, photos, tmp_path):
    code, _, stderr = run_cli("predict", digits_run, photos / "small.png", "--out", tmp_path / "o")
    assert code == 2 and stderr.count("\n") == 1 and "segmentation" in stderr
    code, _, stderr = run_cli("explain", digits_run, "smiley", "--pixel", "1,1")
    assert code == 2 and stderr.count("\n") == 1 and "--pixel" in stderr
