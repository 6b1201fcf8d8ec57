"""The default attribution is chosen by measurement on the run: insertion and the choice checked
against computations written here (scipy blur, numpy loops, scipy's Spearman and t)."""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from scipy.stats import t as student

from convlens.data import to_float
from convlens.inspect import method_choice
from convlens.inspect.attribution import ATTRIBUTIONS
from convlens.inspect.cam_stages import grad_cam_stages
from convlens.inspect.method_choice import candidate_keys, default_method
from convlens.inspect.run_faithfulness import FAITHFULNESS_FILE, stored_faithfulness
from convlens.inspect.verdicts import curve_aucs, map_orders
from convlens.run import Run

STEPS, IMAGES, REPEATS, RANDOMIZED = 16, 32, 4, 16


def _blur(image: np.ndarray) -> np.ndarray:
    sigma = max(1.0, min(image.shape[-2:]) / 7)
    radius = max(1, min(int(3 * sigma), min(image.shape[-2:]) - 1))
    return np.stack([gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma) for c in image])


def _curve_auc(model, image: np.ndarray, target: int, order: np.ndarray, mode: str) -> float:
    """Change pixels in ``order`` in 16 equal chunks: deletion blurs them, insertion starts from the
    blur and puts them back; trapezoid of the class probability over the share changed."""
    start, end = (image, _blur(image)) if mode == "deletion" else (_blur(image), image)
    curve, shares = [], []
    for s in range(STEPS + 1):
        count = round(s * order.size / STEPS)
        mask = np.zeros(order.size, dtype=bool)
        mask[order[:count]] = True
        batch = np.where(mask.reshape(image.shape[-2:])[None], end, start)
        with torch.no_grad():
            logits = model(torch.from_numpy(batch[None]).float())
        curve.append(float(torch.softmax(logits, 1)[0, target]))
        shares.append(count / order.size)
    return float(np.trapezoid(curve, shares))


def _ranked(values: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    flat = values.flatten().numpy()
    shuffle = torch.randperm(flat.size, generator=generator).numpy()
    return shuffle[np.argsort(-flat[shuffle], kind="stable")]


def _interval(values) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=np.float64)
    half = student.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return values.mean(), values.mean() - half, values.mean() + half


def test_insertion_by_hand(digits_model, digits):
    model, _ = digits_model
    images = to_float(digits.test_images[:3]).float()
    targets = torch.tensor([1, 4, 7])
    maps = images[:, 0] * torch.linspace(0, 1, 64).view(8, 8)
    aucs, curves = curve_aucs(model, images, targets, map_orders(maps), mode="insertion")
    generator = torch.Generator().manual_seed(0)
    for i in range(3):
        order = _ranked(maps[i], generator)
        expected = _curve_auc(
            model, images[i].numpy().astype(np.float64), int(targets[i]), order, "insertion"
        )
        assert float(aucs[i]) == pytest.approx(expected, abs=1e-5)
        # the insertion curve ends on the whole image: the model's own probability
        with torch.no_grad():
            whole = torch.softmax(model(images[i : i + 1]), 1)[0, targets[i]]
        assert float(curves[i, -1]) == pytest.approx(float(whole), abs=1e-6)


def _entry(verdict: str, difference: float, half: float = 0.02, rho: float = 0.2) -> dict:
    deletion = {"verdict": verdict, "difference": difference, "interval": [difference - half, difference + half],
                "vs_brightness": {"difference": difference + 0.1, "interval": [difference + 0.05, difference + 0.15]}}  # fmt: skip
    deletion.update(images=32, blank=0)
    return {"verdict": verdict, "deletion": deletion, "stage": None, "images": 32,
            "randomization": {"verdict": "passes" if rho < 0.5 else "fails", "spearman": rho}}  # fmt: skip


def test_the_default_is_the_largest_drop_among_the_methods_that_pass(digits_run, tmp_path, monkeypatch):
    run = Run.open(shutil.copytree(digits_run, tmp_path / "run"))
    names = ATTRIBUTIONS.names()
    found = {name: _entry("fails", -0.4, rho=0.9) for name in names}  # the largest drop fails randomization
    found[names[1]] = _entry("passes", -0.15)
    found[names[2]] = _entry("passes", -0.25)
    monkeypatch.setattr(method_choice, "candidate_keys", lambda model: list(names))
    monkeypatch.setattr(method_choice, "_measured", lambda run, keys, model, progress=None: (found, {}))
    chosen = default_method(run)
    assert (chosen["method"], chosen["passes"]) == (names[2], True)
    assert chosen["drop"] == pytest.approx(0.25) and chosen["interval"] == pytest.approx([0.23, 0.27])
    assert chosen["why"].startswith(
        "chosen because it passed on this run: deletion drop 0.25 vs random (0.23 to 0.27)"
    )
    # none passes: the largest drop, marked as not passing, and the text says so
    found = {name: _entry("inconclusive", -0.1 - 0.01 * i) for i, name in enumerate(names)}
    monkeypatch.setattr(method_choice, "_measured", lambda run, keys, model, progress=None: (found, {}))
    (run.folder / FAITHFULNESS_FILE).unlink(missing_ok=True)
    chosen = default_method(run)
    assert chosen["method"] == names[-1] and chosen["passes"] is False
    assert chosen["why"].startswith("no method passed on this run;") and "does not pass" in chosen["why"]


def test_candidates_are_every_method_and_stage_methods_at_each_rectified_stage(digits_model):
    model, _ = digits_model
    keys = candidate_keys(model)
    rectified = [s["stage"] for s in grad_cam_stages(model) if s["rectified"]]
    assert {key.partition("@")[0] for key in keys} == set(ATTRIBUTIONS.names())
    grad_cam = [key for key in keys if key.partition("@")[0] == "grad-cam"]
    assert grad_cam == [f"grad-cam@{s}" for s in rectified[:-1]] + ["grad-cam"]  # pool2, the default, bare
    assert not any(key.endswith(("@conv1", "@conv2")) for key in keys)  # never before a ReLU


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """A convnet trained 2 epochs on 3,000 Fashion-MNIST training images (the test split is the
    built-in's own)."""
    from convlens.data import load_dataset
    from convlens.data.builtins import FASHION_MNIST_DIR
    from convlens.train import TrainConfig, fit

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    data = load_dataset("fashion-mnist")
    small = dataclasses.replace(
        data, train_images=data.train_images[:3000], train_labels=data.train_labels[:3000]
    )
    run_dir = tmp_path_factory.mktemp("fashion") / "run"
    fit(small, TrainConfig(model="convnet", epochs=2, seed=0), run_dir, overwrite=True)
    return run_dir


@pytest.mark.slow
def test_a_fashion_run_stores_verdicts_equal_to_a_computation_here_and_its_default_beats_random(fashion_run):
    run = Run.open(fashion_run)
    chosen = default_method(run)
    stored = stored_faithfulness(run)
    assert stored["default"]["key"] == chosen["key"]
    model = run.model
    images, _, _ = run.test_data(limit=IMAGES, seed=0)
    with torch.no_grad():
        targets = model(images).argmax(1)
    arrays = images.numpy().astype(np.float64)
    pixels = arrays.shape[-1] * arrays.shape[-2]
    generator = torch.Generator().manual_seed(0)
    random = np.zeros(IMAGES)
    for k in range(IMAGES * REPEATS):
        order = torch.randperm(pixels, generator=generator).numpy()
        random[k % IMAGES] += (
            _curve_auc(model, arrays[k % IMAGES], int(targets[k % IMAGES]), order, "deletion") / REPEATS
        )
    randomized = copy.deepcopy(model)
    torch.manual_seed(0)
    for name in reversed(
        [n for n, m in randomized.body.named_children() if any(True for _ in m.parameters())]
    ):
        for module in getattr(randomized.body, name).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    for key, measured in stored["methods"].items():
        name, _, stage = key.partition("@")
        options = {"stage": stage} if stage else {}
        entry = ATTRIBUTIONS.get(name)
        results = [
            entry.call(model, images[i], target=int(targets[i]), seed=i, **options) for i in range(IMAGES)
        ]
        generator = torch.Generator().manual_seed(0)
        orders = [_ranked(r.map, generator) for r in results]
        kept = [i for i, r in enumerate(results) if float(r.map.max() - r.map.min()) > 1e-12]
        aucs = np.array([_curve_auc(model, arrays[i], int(targets[i]), orders[i], "deletion") for i in kept])
        mean, low, high = _interval(aucs - random[kept])
        deletion = measured["deletion"]
        assert [deletion["difference"], *deletion["interval"]] == pytest.approx(
            [mean, low, high], abs=1e-5
        ), key
        expected_deletion = "passes" if high < 0 else "fails" if low >= 0 else "inconclusive"
        rhos = []
        for i in range(RANDOMIZED):
            other = entry.call(randomized, images[i], target=int(targets[i]), seed=i, **options)
            a, b = _unsigned(results[i]), _unsigned(other)
            if float(a.max() - a.min()) > 1e-12 and float(b.max() - b.min()) > 1e-12:
                rhos.append(spearmanr(a.flatten(), b.flatten())[0])
        _, rho_low, rho_high = _interval(rhos)
        expected_randomization = "passes" if rho_high < 0.5 else "fails" if rho_low >= 0.5 else "inconclusive"
        assert (deletion["verdict"], measured["randomization"]["verdict"]) == (
            expected_deletion,
            expected_randomization,
        ), key
    # the default beats random order with its interval excluding zero
    measured = stored["methods"][chosen["key"]]["deletion"]
    assert measured["interval"][1] < 0 and chosen["interval"][0] > 0
    assert chosen["passes"] == (stored["methods"][chosen["key"]]["verdict"] == "passes")


def _unsigned(result) -> torch.Tensor:
    raw = result.raw.detach().abs().float()
    shape = tuple(result.map.shape)
    if tuple(raw.shape[-2:]) == shape:
        return raw.reshape(-1, *shape).sum(0)
    return torch.nn.functional.interpolate(raw[None, None], size=shape, mode="bilinear")[0, 0]


def test_one_image_is_no_interval_and_a_mostly_blank_method_is_no_default(digits_run, tmp_path, monkeypatch):
    from convlens.inspect.verdicts import mean_interval, verdict_below

    mean, low, high = mean_interval(torch.tensor([-0.3]))
    assert mean == pytest.approx(-0.3) and verdict_below(low, high) == "inconclusive"
    run = Run.open(shutil.copytree(digits_run, tmp_path / "run"))
    names = ATTRIBUTIONS.names()
    found = {name: _entry("passes", -0.1) for name in names}
    found[names[0]] = _entry("passes", -0.3)  # the largest drop, but blank on 10 of 32 images
    found[names[0]]["deletion"].update(images=22, blank=10)
    for name in names[1:]:
        found[name]["deletion"].update(images=32, blank=0)
    monkeypatch.setattr(method_choice, "candidate_keys", lambda model: list(names))
    monkeypatch.setattr(method_choice, "_measured", lambda run, keys, model, progress=None: (found, {}))
    assert default_method(run)["method"] == names[1]


def test_a_stored_default_is_chosen_again_when_the_measurement_changes(digits_run, tmp_path, monkeypatch):
    import json

    run = Run.open(shutil.copytree(digits_run, tmp_path / "run"))
    names = ATTRIBUTIONS.names()
    found = {name: _entry("passes", -0.1 - 0.01 * i) for i, name in enumerate(names)}
    monkeypatch.setattr(method_choice, "candidate_keys", lambda model: list(names))
    monkeypatch.setattr(method_choice, "_measured", lambda run, keys, model, progress=None: (found, {}))
    path = run.folder / FAITHFULNESS_FILE
    settings = method_choice.measurement_settings()
    path.write_text(
        json.dumps(
            {"weights_sha256": method_choice.weights_sha(run), "settings": settings, "methods": {"x": 1}}
        )
    )
    assert default_method(run)["method"] == names[-1]
    assert json.loads(path.read_text())["default"]["method"] == names[-1]  # stored
    found = {name: _entry("passes", -0.3 + 0.01 * i) for i, name in enumerate(names)}
    assert default_method(run)["method"] == names[-1]  # read back: nothing measured again
    stale = json.loads(path.read_text())
    stale["settings"] = {**settings, "measures": ["deletion"]}  # measured by an older rule
    path.write_text(json.dumps(stale))
    assert default_method(run)["method"] == names[0]
