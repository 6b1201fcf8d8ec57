"""``convlens neuron``: the panel as text, JSON and a PNG, checked against the model itself."""

from __future__ import annotations

import json
import re

import pytest
import torch


def test_json_carries_the_kernel_map_patches_and_ablation(
    run_cli, digits_run, digits_model, digits, tmp_path
):
    model, _ = digits_model
    code, out, _ = run_cli(
        "neuron", digits_run, "--stage", "conv2", "--channel", "5", "--out", tmp_path, "--json"
    )
    assert code == 0
    found = json.loads(out)
    conv2 = dict(model.stages())["conv2"]
    torch.testing.assert_close(
        torch.tensor(found["kernel"]["weight"]), conv2.weight[5].detach(), atol=1e-6, rtol=1e-5
    )
    assert found["kernel"]["input_stage"] == "pool1" and found["input"] == "test image 0"
    with torch.no_grad():  # the default image is test image 0 of the split
        x = digits.test_images[:1].float() / 255
        for name, module in model.stages():
            x = module(x)
            if name == "conv2":
                break
    torch.testing.assert_close(torch.tensor(found["feature_map"]), x[0, 5], atol=1e-5, rtol=1e-4)
    assert len(found["top_patches"]) == 9 and found["image_count"] == digits.test_images.shape[0]
    best = found["top_patches"][0]
    assert best["class"] == str(int(digits.test_labels[best["index"]]))
    assert (
        0 <= found["sample_ablation"]["accuracy_after"] <= 1 and found["dead"] is None
    )  # conv: not rectified
    picture = found["visualization"]  # the whole channel's regularised picture, measured here too
    with torch.no_grad():
        reached = torch.tensor([picture["image"]])
        for name, module in model.stages():
            reached = module(reached)
            if name == "conv2":
                break
    assert picture["activation"] == pytest.approx(float(reached[0, 5].mean()), abs=1e-5)
    assert isinstance(picture["best_image_index"], int) and picture["steps"] > 0
    assert (tmp_path / "neuron-conv2-5.png").is_file() and found["file"] == str(
        tmp_path / "neuron-conv2-5.png"
    )


def test_text_summary_and_the_figure(run_cli, digits_run, tmp_path):
    code, out, _ = run_cli(
        "neuron", digits_run, "--stage", "relu1", "--channel", "2", "--image", "digits:3", "--out", tmp_path
    )
    assert code == 0
    assert out.startswith("relu1 channel 2 (relu, one of 16)")
    assert "kernel conv1[2]: 1 input channels of 3x3 reading normalize" in out
    assert "zeroed on 360 test images" in out and "Grad-CAM at relu1" in out
    assert re.search(r"channel visualization reaches [\d.e+-]+; best test image [\d.e+-]+ \(#\d+\)", out)
    assert (tmp_path / "neuron-relu1-2.png").stat().st_size > 1000


def test_bad_stage_or_channel_is_one_line_with_exit_code_2(run_cli, digits_run, tmp_path):
    code, _, err = run_cli("neuron", digits_run, "--stage", "fc", "--channel", "0", "--out", tmp_path)
    assert code == 2 and err.count("\n") == 1
    assert "has no channels to visualize; choose one of: conv1, relu1, pool1, conv2, relu2, pool2" in err
    code, _, err = run_cli("neuron", digits_run, "--stage", "conv1", "--channel", "16", "--out", tmp_path)
    assert code == 2 and err.strip() == "convlens: error: --channel must be 0..15 for stage 'conv1', got 16"
    assert not list(tmp_path.iterdir())  # nothing written


def test_help_has_examples(run_cli):
    code, out, _ = run_cli("neuron", "--help")
    assert code == 0 and "Examples" in out and "convlens neuron runs/mnist --stage conv1 --channel 3" in out
