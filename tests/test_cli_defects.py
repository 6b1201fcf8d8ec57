"""The command line's defects of issue 23 (items 11, 12, 13, 18, 19, 20), each as a user meets
it: the message or the output of a real command, run in-process (``run_cli``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image


def single_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)  # one line, nothing before it
    return err


@pytest.fixture
def digit_png(tmp_path, digits) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(digits.test_images[0, 0].numpy()).save(path)
    return path


# --- 11: explain --at ---------------------------------------------------------------------------


def test_explain_at_with_two_numbers_asks_for_three_or_one(run_cli, digits_run):
    code, out, err = run_cli("explain", digits_run, "smiley", "--stage", "conv2", "--at", "5,3")
    assert code == 2 and out == ""
    line = single_line(err)
    assert "as 3 whole numbers" in line and "1, a unit index, for a flat stage" in line
    assert "as 1 whole numbers" not in line
    code, _, err = run_cli("explain", digits_run, "smiley", "--stage", "fc", "--at", "x")
    assert code == 2 and "as 1 whole number," in single_line(err)  # one number: no plural


# --- 12: what the selection and the end of training say ----------------------------------------


def history(*accuracies: float) -> list[dict]:
    return [
        {"epoch": epoch, "val_accuracy": accuracy, "val_loss": 1.0 / epoch}
        for epoch, accuracy in enumerate(accuracies, start=1)
    ]


def test_a_tie_at_100_percent_is_not_within_points_of_the_best():
    from convlens.train.selection import choose_epoch

    chosen = choose_epoch(history(0.9, 1.0, 1.0), best_epoch=2, validation_images=13)
    assert chosen["epoch"] == 3
    assert "within" not in chosen["reason"] and "points" not in chosen["reason"]
    assert "as accurate on validation as the best (100.00 %" in chosen["reason"]
    close = choose_epoch(history(0.9, 1.0, 0.95), best_epoch=2, validation_images=20)["reason"]
    assert "95.00 % on validation, 5 points below the best (epoch 2, 100.00 %)" in close
    assert "20 validation images cannot tell apart" in close


def test_a_run_that_ran_every_epoch_did_not_stop_early(capsys):
    from convlens.cli.render import training_summary
    from convlens.train.selection import stopping_text

    assert stopping_text(100, None, 24) == (
        "ran all 100 epochs (early stopping needs 100 validation images, this run had 24)"
    )
    assert stopping_text(100, None, 500) == "ran all 100 epochs"
    stopped = "early stopping: no better validation score for 10 epochs"
    assert stopping_text(31, stopped, 500) == f"stopped after epoch 31: {stopped}"
    result = SimpleNamespace(
        test_accuracy=0.9, epochs=100, stopped=None, validation={"validation": 24}, train_seconds=3.0,
        selected_epoch=100, selection="the last epoch, also the best on validation",
        per_class=[], confusion=[], class_names=[], diagnostics=[],
    )  # fmt: skip
    training_summary(result)
    out = capsys.readouterr().out
    assert "ran all 100 epochs (early stopping needs 100 validation images" in out
    assert "stopped" not in out


# --- 13: demo --out X serves X's own runs folder; 18: its commands are not wrapped --------------


def test_demo_serves_its_own_runs_folder_and_its_commands_stay_whole(run_cli, monkeypatch, tmp_path, digits):
    import convlens.cli.serve_cmd
    import convlens.data
    import convlens.report
    import convlens.train

    fit = convlens.train.fit
    served = {}
    monkeypatch.setattr(convlens.data, "load_dataset", lambda name, **_: digits)  # seconds, not minutes
    monkeypatch.setattr(
        convlens.train, "fit", lambda data, config, *a, **k: fit(data, type(config)(epochs=1), *a, **k)
    )
    monkeypatch.setattr(convlens.report, "build_report", lambda run_dir: Path(run_dir) / "report.html")
    monkeypatch.setattr(
        convlens.cli.serve_cmd, "serve_runs", lambda runs, **kw: served.update(runs=runs, **kw)
    )
    out_dir = tmp_path / "a-folder-name-long-enough-to-push-every-command-past-eighty-columns" / "demo"
    code, out, _ = run_cli("demo", "--out", out_dir)
    assert code == 0
    assert served["runs"] == [out_dir]
    assert served["runs_dir"] == out_dir / "runs"  # not out_dir.parent: the demo's own folder
    # piped (not a terminal): every suggested command is one line, however long
    samples = out_dir / "samples"
    assert re.search(
        rf"^    convlens explain {out_dir} {samples}/\S+\.png --out {out_dir / 'explain'}$", out, re.M
    )
    assert f"    convlens predict {out_dir} {out_dir / 'samples'} --json\n" in out


def test_output_that_is_not_a_terminal_is_not_wrapped(capsys):
    from convlens.cli.render import out

    out.print("word " * 60)
    assert capsys.readouterr().out == "word " * 60 + "\n"


# --- 18: predict's unreadable file -------------------------------------------------------------


def test_predict_puts_an_unreadable_file_in_an_error_column(run_cli, digits_run, digit_png, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    code, out, err = run_cli("predict", digits_run, digit_png, broken)
    assert code == 0 and "broken.png" in err
    header = next(line for line in out.splitlines() if "runners-up" in line)
    assert re.search(r"runners-up\s*┃\s*error\s*┃", header)
    row = next(line for line in out.splitlines() if "broken.png" in line and "unreadable" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[0] == str(broken) and cells[1] == "unreadable" and cells[2] == cells[3] == ""
    assert cells[4].startswith("cannot decode image")  # the reason, without the file again
    good = next(line for line in out.splitlines() if "digit.png" in line)
    assert good.rstrip().endswith("│") and good.count("│") == 6  # five cells, the error one empty


# --- 19: help, and errors before anything else --------------------------------------------------


@pytest.mark.parametrize("command", ["explain", "train", "predict", "lab", "serve"])
def test_help_shows_no_type_on_flags(run_cli, command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    assert "<bool>" not in out
    assert "<str>" in out or "<path>" in out  # options with values keep theirs


def test_lab_help_lists_every_experiment(run_cli):
    from convlens.lab import list_experiments

    code, out, _ = run_cli("lab", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "faithfulness" in list_experiments()
    for name in list_experiments():
        assert name in text


@pytest.mark.parametrize("command", ["datasets", "models", "methods", "eval", "demo"])
def test_help_has_an_example(run_cli, command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "Example" in out
    assert re.search(rf"^\s*│?\s*convlens {command}\b", out, re.MULTILINE), out


def test_report_on_a_folder_without_a_run_is_one_line_naming_it(run_cli, tmp_path):
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    code, out, err = run_cli("report", folder)
    assert code == 2 and out == ""
    assert single_line(err) == (
        f"convlens: error: {folder}: no checkpoint here (expected a run folder or a .json written by "
        "convlens train)\n"
    )
    assert not (folder / "report.html").exists()


def test_train_into_a_finished_run_says_so_first(run_cli, digits_run):
    code, out, err = run_cli("train", "--data", "digits", "--epochs", "1", "--out", digits_run)
    assert code == 2 and out == ""
    assert single_line(err) == (
        f"convlens: error: --out {digits_run}: already holds a run; pass --resume to continue it "
        "or --overwrite to replace it\n"
    )


# --- 20: no float32 noise in --json ----------------------------------------------------------


def six_digits(value: float) -> bool:
    return value == float(f"{value:.6g}")


def test_json_numbers_carry_the_digits_they_mean(run_cli, digits_run, digit_png, tmp_path):
    code, out, _ = run_cli("predict", digits_run, digit_png, "--json", "--top-k", "3")
    assert code == 0
    (row,) = json.loads(out)
    probabilities = [p["probability"] for p in row["predictions"]]
    assert all(six_digits(p) for p in probabilities) and sum(probabilities) <= 1.00001
    assert all(six_digits(v) for v in row["shift"].values() if isinstance(v, float))
    code, out, _ = run_cli("eval", digits_run, "--json")
    summary = json.loads(out)
    assert code == 0 and six_digits(summary["test_loss"])
    assert summary["test_accuracy"] == round(summary["test_accuracy"] * 360) / 360  # an exact share
    code, out, _ = run_cli("playground", "xor", "--epochs", "2", "--json", "--out", tmp_path / "xor.png")
    played = json.loads(out)
    assert code == 0
    assert all(six_digits(played[key]) for key in ("train_loss", "test_loss"))
    for key, points in (("train_accuracy", 250), ("test_accuracy", 250)):
        assert played[key] == round(played[key] * points) / points and len(repr(played[key])) <= 6
