"""Faithfulness measured on the user's run: stored verdicts against a computation written here."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from scipy.stats import t as student

from convlens.inspect import run_faithfulness as measuring
from convlens.inspect.analyses import explanation_attribution
from convlens.inspect.attribution import ATTRIBUTIONS
from convlens.inspect.cam_stages import grad_cam_stages
from convlens.inspect.run_faithfulness import FAITHFULNESS_FILE, run_faithfulness, stored_faithfulness
from convlens.inspect.verdicts import (
    combined_verdict,
    method_faithfulness,
    reference_aucs,
    verdict_below,
)
from convlens.run import Run

IMAGES, SEED, STEPS, REPEATS, RANDOMIZED = 24, 3, 16, 4, 16


@pytest.fixture
def run_dir(digits_run, tmp_path):
    """A private copy of the digits run: the stored file must not leak into other tests."""
    return shutil.copytree(digits_run, tmp_path / "run")


@pytest.fixture(scope="module")
def measured_dir(digits_run, tmp_path_factory):
    """One copy of the digits run for the tests that only read its measurement at the default
    settings: every candidate method is measured once (on the first test's need), not per test."""
    return shutil.copytree(digits_run, tmp_path_factory.mktemp("measured") / "run")


def _blur(image: np.ndarray) -> np.ndarray:
    """Gaussian blur, sigma = size / 7 (at least 1), mirrored at the edges, per channel."""
    sigma = max(1.0, min(image.shape[-2:]) / 7)
    radius = max(1, min(int(3 * sigma), min(image.shape[-2:]) - 1))
    return np.stack([gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma) for c in image])


def _probability(model, image: np.ndarray, target: int) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(image[None]).float())
    return float(torch.softmax(logits, 1)[0, target])


def _deletion_auc(model, image: np.ndarray, target: int, order: np.ndarray) -> float:
    """Delete pixels in ``order`` in 16 equal chunks (blur fill), trapezoid over the share deleted."""
    pixels = order.size
    filled, curve, shares = _blur(image), [], []
    for s in range(STEPS + 1):
        count = round(s * pixels / STEPS)
        mask = np.zeros(pixels, dtype=bool)
        mask[order[:count]] = True
        mask = mask.reshape(image.shape[-2:])[None]
        curve.append(_probability(model, np.where(mask, filled, image), target))
        shares.append(count / pixels)
    return float(np.trapezoid(curve, shares))


def _ranked(values: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """Highest first, ties in a seeded random order."""
    flat = values.flatten().numpy()
    shuffle = torch.randperm(flat.size, generator=generator).numpy()
    return shuffle[np.argsort(-flat[shuffle], kind="stable")]


def _unsigned(result, shape) -> torch.Tensor:
    raw = result.raw.detach().abs().float()
    if raw.shape[-2:] == shape:
        return raw.reshape(-1, *shape).sum(0)
    return torch.nn.functional.interpolate(raw[None, None], size=shape, mode="bilinear")[0, 0]


def _interval(values) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=np.float64)
    half = student.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return values.mean(), values.mean() - half, values.mean() + half


def _rule(low, high, reference):
    return "passes" if high < reference else "fails" if low >= reference else "inconclusive"


def _by_hand(run: Run, method: str) -> dict:
    model = run.model
    images, _, _ = run.test_data(limit=IMAGES, seed=SEED)
    with torch.no_grad():
        targets = model(images).argmax(1)
    arrays = images.numpy().astype(np.float64)
    pixels = images.shape[-1] * images.shape[-2]
    generator = torch.Generator().manual_seed(SEED)
    random = np.zeros(IMAGES)
    for k in range(IMAGES * REPEATS):
        order = torch.randperm(pixels, generator=generator).numpy()
        random[k % IMAGES] += (
            _deletion_auc(model, arrays[k % IMAGES], int(targets[k % IMAGES]), order) / REPEATS
        )
    entry = ATTRIBUTIONS.get(method)
    results = [entry.call(model, images[i], target=int(targets[i]), seed=SEED + i) for i in range(IMAGES)]
    generator = torch.Generator().manual_seed(SEED)
    aucs = [
        _deletion_auc(model, arrays[i], int(targets[i]), _ranked(results[i].map, generator))
        for i in range(IMAGES)
    ]
    mean, low, high = _interval(np.array(aucs) - random)
    randomized = copy.deepcopy(model)
    torch.manual_seed(SEED)
    for name in ("fc", "conv2", "conv1"):  # the convnet's stages with weights, from the top
        getattr(randomized.body, name).reset_parameters()
    shape = tuple(images.shape[-2:])
    rhos = []
    for i in range(RANDOMIZED):
        other = entry.call(randomized, images[i], target=int(targets[i]), seed=SEED + i)
        rhos.append(spearmanr(_unsigned(results[i], shape).flatten(), _unsigned(other, shape).flatten())[0])
    rho, rho_low, rho_high = _interval(rhos)
    deletion, randomization = _rule(low, high, 0.0), _rule(rho_low, rho_high, 0.5)
    verdict = (
        "fails"
        if "fails" in (deletion, randomization)
        else "passes"
        if deletion == randomization == "passes"
        else "inconclusive"
    )
    return {"aucs": aucs, "random": random, "difference": (mean, low, high), "rho": (rho, rho_low, rho_high),
            "verdict": verdict, "deletion": deletion, "randomization": randomization}  # fmt: skip


def test_stored_verdicts_equal_an_independent_computation(run_dir):
    run = Run.open(run_dir)
    result = run_faithfulness(run, ["saliency", "grad-cam"], images=IMAGES, seed=SEED)
    assert result["settings"]["fill"] == "blur"
    for method, measured in result["methods"].items():
        expected = _by_hand(run, method)
        deletion, randomization = measured["deletion"], measured["randomization"]
        assert deletion["per_image"] == pytest.approx(expected["aucs"], abs=1e-5), method
        assert deletion["random_auc"] == pytest.approx(expected["random"].mean(), abs=1e-5)
        assert [deletion["difference"], *deletion["interval"]] == pytest.approx(
            expected["difference"], abs=1e-5
        )
        assert [randomization["spearman"], *randomization["interval"]] == pytest.approx(
            expected["rho"], abs=1e-5
        )
        assert (deletion["verdict"], randomization["verdict"]) == (
            expected["deletion"],
            expected["randomization"],
        )
        assert measured["verdict"] == expected["verdict"], method
    # saliency on this model: clearly better than random order, and it depends on the weights
    assert result["methods"]["saliency"]["verdict"] == "passes"


def test_stored_file_is_reused_and_invalidated_by_a_new_checkpoint(run_dir, digits, monkeypatch):
    from convlens.train import TrainConfig, fit

    first = run_faithfulness(Run.open(run_dir), ["saliency"], images=8)
    assert (run_dir / FAITHFULNESS_FILE).is_file()
    calls = []
    measure = measuring.method_faithfulness
    monkeypatch.setattr(
        measuring, "method_faithfulness", lambda *a, **k: calls.append(a[3]) or measure(*a, **k)
    )
    assert run_faithfulness(Run.open(run_dir), ["saliency"], images=8) == first
    assert calls == []  # read back, not measured
    run_faithfulness(Run.open(run_dir), ["saliency", "integrated-gradients"], images=8)
    assert calls == ["integrated-gradients"]  # only the method not stored yet
    fit(digits, TrainConfig(model="convnet", epochs=1, seed=7), run_dir, overwrite=True)
    retrained = run_faithfulness(Run.open(run_dir), ["saliency"], images=8)
    assert retrained["weights_sha256"] != first["weights_sha256"]
    assert calls == ["integrated-gradients", "saliency"]


def test_blank_maps_are_left_out_and_counted(digits_model):
    model, _ = digits_model
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = model(images).argmax(1)

    def half_blank(model, image, target):
        return torch.zeros(8, 8) if image.sum() < images.sum((1, 2, 3)).median() else image[0]

    references = {mode: dict(zip(("random", "brightness"), reference_aucs(model, images, targets, mode=mode), strict=True))
                  for mode in ("deletion", "insertion")}  # fmt: skip
    found = method_faithfulness(model, images, targets, half_blank, references)
    blank = int((images.sum((1, 2, 3)) < images.sum((1, 2, 3)).median()).sum())
    assert blank > 0
    assert (found["deletion"]["blank"], found["deletion"]["images"]) == (blank, 6 - blank)
    assert found["randomization"]["blank"] == blank  # the pair is left out when either map is blank
    assert sum(v is None for v in found["deletion"]["per_image"]) == blank


def test_the_verdict_rule_on_constructed_numbers():
    assert verdict_below(-0.3, -0.1) == "passes"  # better than random order, beyond the noise
    assert verdict_below(-0.1, 0.05) == "inconclusive"  # the interval straddles the reference
    assert verdict_below(0.0, 0.2) == "fails"
    assert verdict_below(0.1, 0.3, 0.5) == "passes"
    assert verdict_below(0.4, 0.6, 0.5) == "inconclusive"
    assert verdict_below(float("nan"), float("nan")) == "inconclusive"
    assert combined_verdict("passes", "passes") == "passes"
    assert combined_verdict("passes", "fails") == "fails"
    assert combined_verdict("inconclusive", "passes") == "inconclusive"


def test_one_image_carries_its_verdict_and_the_runs(measured_dir):
    run = Run.open(measured_dir)
    images, _, _ = run.test_data(limit=1, seed=11)
    result = explanation_attribution(run.model, images[0], "saliency", run=run)
    found = result.faithfulness
    assert found["verdict"] in ("passes", "fails", "inconclusive")
    assert found["drop"] == pytest.approx(found["random_deletion_auc"] - found["deletion_auc"])
    generator = torch.Generator().manual_seed(0)
    order = _ranked(result.map, generator)
    assert found["deletion_auc"] == pytest.approx(
        _deletion_auc(run.model, images[0].numpy().astype(np.float64), result.target, order), abs=1e-5
    )
    stored = run_faithfulness(run, ["saliency"])["methods"]["saliency"]
    assert found["run"]["verdict"] == stored["verdict"]
    assert found["run"]["deletion"]["auc"] == stored["deletion"]["auc"]


def test_grad_cam_stages_list_rectified_stages_first(digits_model):
    model, _ = digits_model
    stages = grad_cam_stages(model)
    flags = [s["rectified"] for s in stages]
    assert flags == sorted(flags, reverse=True) and any(flags) and not all(flags)
    assert {s["stage"] for s in stages if not s["rectified"]} == {"conv1", "conv2"}
    assert [s["stage"] for s in stages if s["default"]] == ["pool2"]


def test_the_reports_attribution_section_carries_the_verdicts(measured_dir):
    from convlens.report import _attributions, render_report

    run = Run.open(measured_dir)
    images, labels, _ = run.test_data(limit=1, seed=4)
    section = _attributions(run, images[0], int(labels[0]))
    chosen = stored_faithfulness(run)["default"]
    stored = stored_faithfulness(run)["methods"]
    # the measured default first, at its stage; the others after it in registry order
    keys = [chosen["key"]] + [m for m in ATTRIBUTIONS.names() if m != chosen["method"]]
    (table,) = section.tables
    assert [row[1] for row in table["rows"]] == [stored[k]["verdict"] for k in keys]
    assert [row[2] for row in table["rows"]] == [f"{stored[k]['deletion']['auc']:.3f}" for k in keys]
    assert table["rows"][0][0].endswith("(default)")
    assert "The default on this run, first, is" in section.text and chosen["why"] in section.text
    assert "faithfulness on this run" in render_report("t", [section])


def test_the_lab_experiment_reports_the_runs_own_numbers(measured_dir):
    from convlens.lab import run_experiment
    from convlens.views.lab import TABLES

    result = run_experiment("faithfulness", None, run=str(measured_dir), methods=["saliency", "occlusion"])
    stored = run_faithfulness(Run.open(measured_dir), ["saliency", "occlusion"])
    for method, entry in stored["methods"].items():
        assert result.deletion[method] == entry["deletion"]["auc"]
        assert result.spearman[method] == entry["randomization"]["spearman"]
        assert result.verdict(method).startswith(f"{entry['verdict']} on this run")
    assert result.deletion["random"] == stored["reference"]["random_auc"]
    assert len(result.fractions) == len(result.curves["saliency"]) == len(result.curves["random"]) == 17
    (table,) = TABLES["faithfulness"](result)
    assert [row[0] for row in table.rows][:2] == ["saliency", "occlusion"]


def test_explain_prints_the_verdict_and_its_json_carries_it(measured_dir, run_cli, tmp_path):
    import json

    code, out, err = run_cli("explain", measured_dir, "digits:3", "--out", tmp_path / "x", "--json")
    assert code == 0, err
    found = json.loads(out)["attribution"]["faithfulness"]
    assert found["verdict"] in ("passes", "fails", "inconclusive")
    assert {"deletion_auc", "random_deletion_auc", "interval", "run"} <= set(found)
    assert found["run"]["verdict"] in ("passes", "fails", "inconclusive")
    assert len(repr(found["deletion_auc"])) <= 9  # 6 significant digits, no float32 noise
    shown = json.loads(out)["attribution"]
    chosen = stored_faithfulness(Run.open(measured_dir))["default"]
    assert shown["chosen_by"] == "measurement" and shown["default"]["why"] == chosen["why"]
    assert (shown["method"], shown["stage"]) == (chosen["method"], chosen["stage"])
    code, out, err = run_cli("explain", measured_dir, "digits:3", "--out", tmp_path / "y")
    assert code == 0, err
    text = " ".join(out.split())
    assert f"{found['run']['verdict']} on this run: deletion AUC" in text
    assert chosen["why"] in text


def test_stage_picks_feature_maps_and_cam_stage_the_attribution(measured_dir, run_cli, tmp_path):
    import json

    code, out, err = run_cli("explain", measured_dir, "digits:3", "--stage", "conv2", "--method", "grad-cam",
                             "--out", tmp_path / "x", "--json")  # fmt: skip
    assert code == 0, err
    found = json.loads(out)
    assert found["attribution"]["stage"] == "pool2"  # --stage conv2 does not move Grad-CAM
    assert any(f.endswith("stage-conv2.png") for f in found["files"])
    code, out, err = run_cli(
        "explain", measured_dir, "digits:3", "--cam-stage", "relu1", "--out", tmp_path / "y", "--json"
    )
    assert code == 0, err
    assert (json.loads(out)["attribution"]["method"], json.loads(out)["attribution"]["stage"]) == (
        "grad-cam",
        "relu1",
    )
    code, _, err = run_cli("explain", measured_dir, "digits:3", "--cam-stage", "fc", "--out", tmp_path / "z")
    assert code == 2 and "--cam-stage: Grad-CAM cannot look at 'fc'; choose one of: relu1, pool1" in err
    assert "conv1 (before a ReLU)" in err and "Traceback" not in err
    code, _, err = run_cli(
        "explain", measured_dir, "digits:3", "--method", "saliency", "--cam-stage", "relu1"
    )
    assert code == 2 and "--cam-stage: saliency looks at pixels, not at a stage" in err


def test_lab_faithfulness_takes_the_run_as_an_argument(measured_dir, run_cli, tmp_path):
    import json

    code, out, err = run_cli("lab", "faithfulness", measured_dir, "--out", tmp_path / "lab", "--json")
    assert code == 0, err
    result = json.loads(out)
    stored = stored_faithfulness(Run.open(measured_dir))
    assert result["default"]["key"] == stored["default"]["key"]
    for key, entry in stored["methods"].items():
        assert result["deletion"][key] == entry["deletion"]["auc"]
    code, _, err = run_cli("lab", "locality", measured_dir)
    assert code == 2 and "RUN: only `convlens lab faithfulness RUN` measures a run folder" in err
