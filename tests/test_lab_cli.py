"""`convlens lab` and `convlens attack` end to end, and the one-line error for each bad input."""

from __future__ import annotations

import json

import pytest

from convlens.lab import EXPERIMENTS, list_experiments, load_record


def _one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:"), err
    assert expected in lines[0], lines[0]


def test_lab_params_json_writes_result_and_plot(run_cli, tmp_path):
    code, out, err = run_cli("lab", "params", "--data", "digits", "--json", "--out", tmp_path)
    assert code == 0, err
    result = json.loads(out)
    assert result["experiment"] == "params" and result["dense_parameters"] == 3_000_001_000
    assert json.loads((tmp_path / "result.json").read_text())["conv_parameters"] == 1_792
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "took" in err


def test_lab_table_with_options(run_cli, tmp_path):
    code, out, err = run_cli(
        "lab",
        "locality",
        "--data",
        "digits",
        "--option",
        "epochs=1",
        "--option",
        "test_limit=100",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    assert "shuffled" in out and "convnet" in out and "mlp" in out
    assert json.loads((tmp_path / "result.json").read_text())["test_images"] == 100


def test_lab_all_quick_writes_an_index(run_cli, tmp_path):
    code, out, err = run_cli("lab", "all", "--data", "digits", "--quick", "--json", "--out", tmp_path)
    assert code == 0, err
    printed = json.loads(out)  # one JSON object for all experiments
    assert [r["experiment"] for r in printed["experiments"]] == list_experiments()
    index = json.loads((tmp_path / "index.json").read_text())
    names = [entry["experiment"] for entry in index["experiments"]]
    assert names == EXPERIMENTS.names()
    for entry in index["experiments"]:
        assert (tmp_path / entry["result"]).is_file() and (tmp_path / entry["plot"]).is_file()
        record = load_record(tmp_path / entry["experiment"])  # what the report reads back
        assert record.experiment == entry["experiment"] and record.tables and record.plot[:4] == b"\x89PNG"
    assert "calibration" in (tmp_path / "index.md").read_text()


def test_attack_json_and_pictures(run_cli, digits_run, tmp_path):
    code, out, err = run_cli(
        "attack",
        digits_run,
        "--eps",
        "0.1",
        "--eps-sweep",
        "0,0.1,0.2",
        "--steps",
        "3",
        "--json",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    result = json.loads(out)
    for key in (
        "clean_accuracy",
        "adversarial_accuracy",
        "eps",
        "max_linf",
        "mean_confidence_clean",
        "mean_confidence_adversarial",
    ):
        assert key in result
    assert result["eps"] == 0.1 and result["max_linf"] == pytest.approx(0.1, abs=1e-6)
    assert result["images"] == 360  # digits has 360 test images, fewer than the default 1000
    assert result["adversarial_accuracy"] < result["clean_accuracy"]
    curve = result["robustness_curve"]
    assert curve["eps"] == [0.0, 0.1, 0.2] and set(curve["accuracy"]) == {"fgsm", "pgd"}
    for name in ("examples.png", "robustness.png", "result.json"):
        assert (tmp_path / name).is_file()
    # a later attack without a sweep must not leave the old curve beside its new result.json
    code, out, err = run_cli("attack", digits_run, "--steps", "1", "--images", "20", "--out", tmp_path)
    assert code == 0, err
    assert not (tmp_path / "robustness.png").exists()
    assert "robustness_curve" not in json.loads((tmp_path / "result.json").read_text())


def test_targeted_attack_table(run_cli, digits_run, tmp_path):
    code, out, err = run_cli(
        "attack",
        digits_run,
        "--method",
        "pgd",
        "--eps",
        "0.3",
        "--steps",
        "20",
        "--target",
        "3",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    assert "now predicted as the target" in out and "target 3" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["lab", "nope"], "unknown experiment 'nope'; choose one of: params, locality, equivariance"),
        (["lab", "params", "--option", "colour=red"], "--option colour: unknown"),
        (["attack", "RUN", "--eps", "-0.1"], "--eps must be between 0 and 1"),
        (["attack", "RUN", "--eps", "1.5"], "--eps must be between 0 and 1"),
        (["attack", "RUN", "--eps-sweep", "0,0.1,2"], "--eps-sweep must be between 0 and 1"),
        (["attack", "RUN", "--eps-sweep", "0,x"], "--eps-sweep: expected numbers separated by commas"),
        (
            ["attack", "RUN", "--target", "10"],
            "--target must be a class index 0..9 or a class name, got '10'",
        ),
        (["attack", "RUN", "--steps", "0"], "--steps must be a positive integer, got 0"),
        (["attack", "RUN", "--method", "cw"], "--method must be one of fgsm, pgd"),
        (["attack", "RUN", "--data", "mnist5k"], "--data mnist5k: images are 1x28x28, the model takes 1x8x8"),
        (["report", "RUN", "--data", "mnist5k"], "--data mnist5k: images are 1x28x28, the model takes 1x8x8"),
        (["report", "RUN", "--eps", "2"], "--eps must be between 0 and 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, digits_run, args, expected):
    code, _, err = run_cli(*[str(digits_run) if a == "RUN" else a for a in args])
    _one_line_error(code, err, expected)
