"""`convlens playground`: its defaults solve every data set (spiral >= 90 % test accuracy, the
others >= 95 %; the regressions explain >= 70 % of their targets' variance), it writes the
boundary and the strip, its defaults are the library's, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
import math

import pytest

from convlens.playground2d import DEFAULT_EPOCHS, PlaygroundConfig, make_points

SOLVED = {"spiral": 0.90, "xor": 0.95, "circle": 0.95, "gauss": 0.95}  # test accuracy the defaults reach
UNEXPLAINED = 0.3  # regressions: test MSE at most this share of the targets' variance (seeds 0-2: 0.1-0.21)


def cli_defaults_solve(run_cli, tmp_path, dataset: str, seed: int, *extra: str) -> dict:
    code, out, err = run_cli(
        "playground", dataset, "--seed", seed, "--out", tmp_path / "boundary.png", "--json", *extra
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == DEFAULT_EPOCHS and summary["seconds"] > 0
    assert summary["test_accuracy"] >= SOLVED[dataset], summary
    assert summary["test_loss"] < math.log(2)  # better than guessing
    assert (tmp_path / "boundary.png").stat().st_size > 0
    return summary


@pytest.mark.parametrize("dataset", list(SOLVED))
def test_defaults_solve_every_data_set(run_cli, tmp_path, dataset):
    extra = {
        "spiral": ("--strip", tmp_path / "evolution.gif"),
        "xor": ("--strip", tmp_path / "evolution.png"),
    }
    summary = cli_defaults_solve(run_cli, tmp_path, dataset, 0, *extra.get(dataset, ()))
    assert {"train_loss", "test_loss", "test_accuracy", "epochs", "seconds"} <= set(summary)
    if dataset == "spiral":
        from PIL import Image

        with Image.open(summary["files"]["strip"]) as gif:
            assert gif.n_frames == 24
    if dataset == "xor":
        assert (tmp_path / "evolution.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("dataset", list(SOLVED))
def test_defaults_solve_every_data_set_at_other_seeds(run_cli, tmp_path, dataset, seed):
    cli_defaults_solve(run_cli, tmp_path, dataset, seed)


def cli_defaults_regress(run_cli, tmp_path, dataset: str, seed: int) -> dict:
    code, out, err = run_cli("playground", dataset, "--seed", seed, "--out", tmp_path / "value.png", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["task"] == "regression" and "test_accuracy" not in summary  # no classes to count
    variance = float(make_points(dataset, seed=seed).test_labels.var(unbiased=False))
    assert summary["test_loss"] <= UNEXPLAINED * variance, (summary["test_loss"], variance)
    assert (tmp_path / "value.png").stat().st_size > 0
    return summary


def test_defaults_regress_the_bumps(run_cli, tmp_path):
    cli_defaults_regress(run_cli, tmp_path, "multi-gauss", 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "seed"), [("plane", 0), ("plane", 1), ("multi-gauss", 1), ("multi-gauss", 2)]
)
def test_defaults_regress_at_other_seeds(run_cli, tmp_path, dataset, seed):
    cli_defaults_regress(run_cli, tmp_path, dataset, seed)


def test_cli_defaults_are_the_library_defaults():
    import typer

    from convlens.cli import app

    command = typer.main.get_command(app).commands["playground"]
    defaults = {param.name: param.default for param in command.params}
    library = PlaygroundConfig()
    assert defaults["hidden"] == ",".join(map(str, library.hidden))
    assert defaults["features"] == ",".join(library.features)
    assert defaults["epochs"] == DEFAULT_EPOCHS
    for name in (
        "activation",
        "lr",
        "noise",
        "seed",
        "batch_size",
        "train_percent",
        "regularization",
        "regularization_rate",
    ):
        assert defaults[name] == getattr(library, name), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["spiral", "--hidden", "8,8,8,8,8,8,8"],
            "convlens: error: --hidden: at most 6 hidden layers, got 7",
        ),
        (["spiral", "--hidden", "9"], "convlens: error: --hidden: each layer has 1 to 8 neurons, got 9"),
        (["spiral", "--hidden", "a"], "convlens: error: --hidden: expected neurons per layer"),
        (["spiral", "--lr", "0"], "convlens: error: --lr must be above 0"),
        (
            ["spiral", "--noise", "60"],
            "convlens: error: --noise must be between 0 and 50 (percent), got 60.0",
        ),
        (
            ["moons"],
            "convlens: error: DATASET 'moons' is not one of spiral, xor, circle, gauss, plane, multi-gauss",
        ),
        (["xor", "--features", "x1,x3"], "convlens: error: --features: unknown feature 'x3'"),
        (["xor", "--batch-size", "0"], "convlens: error: --batch-size must be a whole number from 1 to 100"),
        (["xor", "--epochs", "0"], "convlens: error: --epochs must be a whole number from 1"),
        (["xor", "--strip", "strip.txt"], "convlens: error: --strip must end in .png or .gif"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(run_cli, args, message):
    code, out, err = run_cli("playground", *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err
