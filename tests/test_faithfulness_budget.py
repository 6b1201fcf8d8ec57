"""What measuring a run costs: the budget's image count, its cost estimate against forward passes
counted by a hook, a stage-taking method on a model without convolutions, and a stored verdict
that is the same on every measurement (RISE and SmoothGrad draw from seeded generators)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from convlens.inspect.attribution import ATTRIBUTIONS
from convlens.inspect.cam_stages import takes_stage
from convlens.inspect.faithfulness_budget import (
    MIN_IMAGES,
    map_passes,
    measurement_budget,
    measurement_flops,
)
from convlens.inspect.method_choice import candidate_keys
from convlens.inspect.random_masks import default_masks
from convlens.inspect.run_faithfulness import FAITHFULNESS_FILE, run_faithfulness
from convlens.models import create_model
from convlens.run import Run


def _forward_rows(model, call) -> int:
    """Images the model's first stage sees while ``call()`` runs (a hook counts batch rows)."""
    seen = []
    first = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    handle = first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        call()
    finally:
        handle.remove()
    return sum(seen)


@pytest.mark.parametrize("method", ["rise", "occlusion"])
def test_the_cost_estimate_counts_the_forward_passes_a_map_runs(method):
    torch.manual_seed(0)
    model = create_model("convnet", (1, 28, 28), 10).eval()
    image = torch.rand(1, 28, 28)
    rows = _forward_rows(model, lambda: ATTRIBUTIONS.get(method).call(model, image, target=3))
    # Captum's occlusion also runs the unoccluded image once more than the prediction
    assert rows - map_passes(method, 28, 28) in ((0,) if method == "rise" else (0, 1))


def test_rise_masks_fall_with_the_pixel_count():
    assert default_masks(28, 28) == default_masks(64, 64) == 1000
    assert default_masks(128, 128) == 250 and default_masks(224, 224) == 250
    assert default_masks(96, 96) == round(1000 * 4096 / 9216)
    torch.manual_seed(0)
    model = create_model("convnet", (1, 96, 96), 3).eval()
    rows = _forward_rows(model, lambda: ATTRIBUTIONS.get("rise").call(model, torch.rand(1, 96, 96), target=0))
    assert rows == 1 + default_masks(96, 96)


def test_a_costly_model_is_measured_on_fewer_images_and_a_cheap_one_on_32(digits_model):
    model, _ = digits_model
    cheap = measurement_budget(model, candidate_keys(model))
    assert (cheap["images"], cheap["randomization_images"]) == (32, 16)
    torch.manual_seed(0)
    costly = create_model("resnet8", (3, 64, 64), 3).eval()
    keys = candidate_keys(costly)
    budget = measurement_budget(costly, keys)
    assert MIN_IMAGES <= budget["images"] < 32 and budget["randomization_images"] <= budget["images"]
    from convlens.models.summary import flops_per_image

    flops = flops_per_image(costly, (3, 64, 64))
    assert budget["flops"] == pytest.approx(measurement_flops(flops, keys, 64, 64, budget["images"]))
    assert measurement_flops(flops, keys, 64, 64, 32) > measurement_flops(flops, keys, 64, 64, 8)
    # a stage-taking method is measured at the last four rectified stages at most
    assert sum(key.partition("@")[0] == "grad-cam" for key in keys) <= 4


def test_every_stage_taking_method_on_a_model_without_convolutions_shows_no_map(run_cli, tmp_path, digits):
    from convlens.checkpoint import save_checkpoint
    from convlens.inspect.analyses import explanation_attribution

    torch.manual_seed(0)
    mlp = create_model("mlp", (1, 12, 12), 3).eval()
    save_checkpoint(tmp_path / "run" / "model", mlp, {"class_names": ["a", "b", "c"]})
    stage_methods = [entry.name for entry in ATTRIBUTIONS if takes_stage(entry)]
    assert {"grad-cam", "grad-cam++"} <= set(stage_methods)
    for method in stage_methods:
        assert explanation_attribution(mlp, torch.rand(1, 12, 12), method) is None, method
        code, out, err = run_cli(
            "explain", tmp_path / "run", "smiley", "--method", method, "--out", tmp_path / "x", "--json"
        )
        assert code == 0, (method, err)
        assert json.loads(out)["attribution"] is None
    with pytest.raises(Exception, match="target"):
        explanation_attribution(mlp, torch.rand(1, 12, 12), "grad-cam++", target=7)  # still checked


def test_the_stored_verdict_of_the_stochastic_methods_is_reproducible(digits_run, tmp_path):
    stored, steps = [], []
    for copy in ("a", "b"):
        run = Run.open(shutil.copytree(digits_run, tmp_path / copy))
        (run.folder / FAITHFULNESS_FILE).unlink(missing_ok=True)
        run_faithfulness(
            run, ["rise", "smoothgrad"], images=4, seed=3, progress=lambda *step: steps.append(step)
        )
        stored.append(json.loads((run.folder / FAITHFULNESS_FILE).read_text()))
    # the progress a face draws: one step per method, then the end
    assert steps[:3] == [(0, 2, "measuring rise on 4 test images"),
                         (1, 2, "measuring smoothgrad on 4 test images"), (2, 2, "measured")]  # fmt: skip
    assert stored[0]["methods"] == stored[1]["methods"] and stored[0]["reference"] == stored[1]["reference"]
    # another seed draws other masks and noise: the per-image AUCs differ
    run = Run.open(tmp_path / "a")
    other = run_faithfulness(run, ["rise"], images=4, seed=4)["methods"]
    assert other["rise"]["deletion"]["per_image"] != stored[0]["methods"]["rise"]["deletion"]["per_image"]
