"""The core commands end to end, and the one-line error contract for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def test_help_lists_every_core_command(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("datasets", "models", "train", "eval", "predict", "demo"):
        assert command in out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(run_cli, flag):
    from convlens import __version__

    code, out, err = run_cli(flag)
    assert code == 0 and out == f"convlens {__version__}\n" and not err


def test_version_does_not_load_torch():
    """Startup stays fast: --version (like --help) answers before any heavy import."""
    script = (
        "import sys; sys.argv = ['convlens', '--version']\n"
        "from convlens.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "heavy = sorted({'torch', 'numpy', 'matplotlib'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("convlens ")


def test_short_flags_mean_one_thing_everywhere():
    """A short flag is the same long option in every command that has it."""
    import typer.main

    from convlens.cli import app

    meaning: dict[str, set[str]] = {}
    for command in typer.main.get_command(app).commands.values():
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            for short in (o for o in param.opts if len(o) == 2 and o[0] == "-"):
                meaning.setdefault(short, set()).update(longs)
    assert {short: sorted(longs) for short, longs in meaning.items() if len(longs) > 1} == {}
    assert meaning["-k"] == {"--top-k"} and meaning["-m"] == {"--model"} and meaning["-o"] == {"--out"}


def test_every_command_with_a_result_has_json():
    """Only the interactive commands (demo, serve) may lack --json."""
    import typer.main

    from convlens.cli import app

    commands = typer.main.get_command(app).commands
    missing = [
        name
        for name, command in sorted(commands.items())
        if not any("--json" in param.opts for param in command.params)
    ]
    assert missing == ["demo", "serve"]


def test_datasets_and_models_json(run_cli):
    """The listings are the registries: every registered built-in and model, nothing else."""
    from convlens.data import DATASETS
    from convlens.models import MODELS

    code, out, _ = run_cli("datasets", "--json")
    assert code == 0 and [row["name"] for row in json.loads(out)] == DATASETS.names()
    code, out, _ = run_cli("models", "--input", "1x8x8", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) == set(MODELS.names())
    built = [row for name, row in rows.items() if name != "graph"]  # graph: an imported model's layers
    assert all(row["parameters"] > 0 and row["flops"] > 0 for row in built)
    assert "made by convlens import" in rows["graph"]["error"]


def test_train_json_then_eval_and_predict(run_cli, tmp_path, digits):
    run = tmp_path / "run"
    code, out, _ = run_cli("train", "--data", "digits", "--epochs", "3", "--out", run, "--json")
    assert code == 0
    result = json.loads(out)  # stdout holds only the JSON object
    assert {"test_accuracy", "train_seconds", "epochs", "history", "checkpoint"} <= set(result)
    assert len(result["history"]) == 3 and result["history"][-1]["train_seconds"] == result["train_seconds"]

    code, out, _ = run_cli("eval", run, "--json")
    assert code == 0 and json.loads(out)["test_accuracy"] == pytest.approx(result["test_accuracy"])

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for index in range(3):  # saved larger and in RGB: predict must convert to the model's 1x8x8
        array = digits.test_images[index, 0].numpy()
        Image.fromarray(np.stack([array] * 3, axis=-1)).resize((32, 32)).save(image_dir / f"{index}.png")
    code, out, _ = run_cli("predict", run, image_dir, "--top-k", "10", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 3
    for row in rows:
        assert sum(p["probability"] for p in row["predictions"]) == pytest.approx(1.0, abs=1e-5)
        assert len(row["predictions"]) == 10


def _assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:"), err
    assert expected in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--data", "imagenet"], "unknown data set 'imagenet'; built-ins are"),
        (["train", "--data", "digits", "--model", "vgg99"], "unknown model 'vgg99'; choose one of"),
        (["train", "--data", "digits", "--epochs", "0"], "--epochs must be a positive integer"),
        (["train", "--data", "digits", "--lr", "-1"], "--lr must be a positive number"),
        (["train", "--data", "./no/such/folder"], "no such file or folder"),
        (["predict", "./no/such/run", "x.png"], "no checkpoint here"),
        (["eval", "model.pth"], "refusing a pickle file"),
        (["models", "--input", "28x28"], "--input: expected CxHxW"),
    ],
)
def test_bad_input_gets_one_clear_line(run_cli, args, expected):
    code, _, err = run_cli(*args)
    _assert_one_line_error(code, err, expected)


def test_predict_undecodable_image(run_cli, digits_run, tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    code, _, err = run_cli("predict", digits_run, bad)
    _assert_one_line_error(code, err, "photo.jpg: cannot decode image")


def test_console_script_runs_as_a_process(digits_run):
    """The installed entry point (not only the in-process call) keeps the exit-code contract."""
    result = subprocess.run(
        [sys.executable, "-m", "convlens", "train", "--epochs", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_one_line_error(result.returncode, result.stderr, "--epochs must be a positive integer")
