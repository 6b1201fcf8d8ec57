"""Options that once ran unbounded or wrote before they were checked: one line, exit 2, nothing written.

``--threads 1000`` made training 11x slower at load 127; ``attack --method pgd --steps
1000000000`` never ended (the explorer caps PGD); ``explain --target 99`` wrote 7 PNGs before
refusing; ``report --lab /does/not/exist`` wrote a report without the lab results, exit 0.
"""

from __future__ import annotations

import pytest

from convlens.attacks.methods import MAX_STEPS
from convlens.process import THREADS_PER_CORE, max_threads


def _one_error_line(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("convlens: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("convlens: error: ")


def _help(run_cli, *command: str) -> str:
    code, out, _ = run_cli(*command, "--help")
    assert code == 0
    return " ".join(out.replace("│", " ").split())


def test_threads_are_bounded_by_the_cores(run_cli):
    too_many = max_threads() + 1
    message = _one_error_line(*run_cli("--threads", str(too_many), "models")[::2])
    assert message == (
        f"--threads must be at most {max_threads()} CPU threads ({THREADS_PER_CORE} per core: more only "
        f"slows every step down), got '{too_many}'"
    )
    assert run_cli("--threads", str(max_threads()), "models")[0] == 0
    assert f"At most {THREADS_PER_CORE} per CPU core" in _help(run_cli)


def test_pgd_steps_are_bounded(digits_run, run_cli, tmp_path):
    out = tmp_path / "attack"
    code, _, err = run_cli(
        "attack", digits_run, "--method", "pgd", "--steps", "1000000000", "--images", "4", "--out", out
    )
    assert _one_error_line(code, err) == f"--steps must be at most {MAX_STEPS:,}, got 1,000,000,000"
    assert not out.exists()
    assert f"PGD steps (1..{MAX_STEPS:,})" in _help(run_cli, "attack")


def test_explain_checks_the_target_before_writing(digits_run, run_cli, tmp_path):
    out = tmp_path / "explain"
    code, _, err = run_cli("explain", digits_run, "digits:3", "--target", "99", "--out", out)
    assert _one_error_line(code, err) == "--target must be a class index 0..9 or a class name, got '99'"
    assert not out.exists()


@pytest.mark.parametrize("target", ["3", "-1", "x"])
def test_explain_target_forms(digits_run, run_cli, tmp_path, target):
    code, _, err = run_cli("explain", digits_run, "digits:3", "--target", target, "--out", tmp_path / "e")
    if target == "3":
        assert code == 0, err
    else:
        assert "--target must be a class index 0..9" in _one_error_line(code, err)


def test_report_refuses_a_lab_folder_that_is_not_there(digits_run, run_cli, tmp_path):
    out = tmp_path / "report.html"
    code, _, err = run_cli("report", digits_run, "--lab", tmp_path / "nowhere", "--out", out)
    message = _one_error_line(code, err)
    assert message.startswith(f"--lab {tmp_path / 'nowhere'}: no such folder")
    assert not out.exists()
