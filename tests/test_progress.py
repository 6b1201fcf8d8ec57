"""Progress callbacks of the long core functions, the CLI's bars on stderr, and --threads."""

from __future__ import annotations

import json

import pytest
import torch


class Recorder:
    """A progress callback that remembers every (done, total, what)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str]] = []

    def __call__(self, done: int, total: int, what: str) -> None:
        self.calls.append((done, total, what))

    def check(self, total: int | None = None) -> None:
        assert self.calls, "progress was never called"
        done = [call[0] for call in self.calls]
        assert done == sorted(done), done  # never goes back
        assert len({call[1] for call in self.calls}) == 1  # one total for the whole job
        assert self.calls[-1][0] == self.calls[-1][1]  # ends done
        assert all(isinstance(call[2], str) for call in self.calls)
        if total is not None:
            assert self.calls[-1][1] == total


@pytest.fixture(scope="module")
def sample(digits_run):
    from convlens.run import Run

    run = Run.open(digits_run)
    images, labels, _ = run.test_data(limit=20)
    return run, images, labels


def test_attack_reports_every_batch(sample):
    from convlens.attacks import fgsm

    run, images, labels = sample
    progress = Recorder()
    fgsm(run.model, images, labels, 0.1, batch_size=7, progress=progress)
    progress.check(20)
    assert [call[0] for call in progress.calls] == [7, 14, 20]


def test_robustness_curve_counts_images_over_every_method_and_eps(sample):
    from convlens.attacks import robustness_curve

    run, images, labels = sample
    progress = Recorder()
    curve = robustness_curve(run.model, images, labels, [0.0, 0.1], steps=2, progress=progress)
    progress.check(20 * 2 * len(curve.accuracy))
    assert any("PGD-2" in call[2] for call in progress.calls)


def test_feature_visualization_reports_every_step(digits_model):
    from convlens.inspect import feature_visualization

    progress = Recorder()  # relu1: optimized step by step (conv1 is linear: solved in closed form, one step)
    feature_visualization(digits_model[0], "relu1", [0, 1], steps=5, progress=progress)
    progress.check(5)
    assert [call[0] for call in progress.calls] == [1, 2, 3, 4, 5]
    closed = Recorder()
    feature_visualization(digits_model[0], "conv1", [0, 1], steps=5, progress=closed)
    closed.check(5)


def test_report_reports_its_sections(digits_run, tmp_path):
    import shutil

    from convlens.report import report_sections

    run_dir = tmp_path / "run"  # a copy with nothing measured yet: the attribution section measures it
    shutil.copytree(digits_run, run_dir, ignore=shutil.ignore_patterns("faithfulness.json"))
    progress = Recorder()
    _, sections = report_sections(run_dir, progress=progress)
    progress.check(len(sections))  # one total, never back: the measurement's steps are the section's
    measuring = [call for call in progress.calls if call[2].startswith("attributions: ")]
    assert measuring and {call[0] for call in measuring} == {7}
    shown = [call for call in progress.calls if call not in measuring]
    assert [call[0] for call in shown] == list(range(len(sections) + 1))
    assert [call[2] for call in shown][-4:] == ["attributions", "attacks", "lab results", "done"]


def test_lab_reports_coarse_steps(digits):
    from convlens.lab import quick_options, run_experiment

    plain = Recorder()  # an experiment without its own steps: start and end
    run_experiment("params", digits, progress=plain)
    assert plain.calls == [(0, 1, "params"), (1, 1, "params")]
    steps = Recorder()  # locality trains 2 models x 2 pixel orders
    run_experiment("locality", digits, progress=steps, **quick_options("locality"))
    steps.check(4)
    assert len(steps.calls) == 5 and "training convnet on original pixels" in steps.calls[0][2]


def test_attack_command_keeps_stdout_json(run_cli, digits_run, tmp_path):
    code, out, _ = run_cli(
        "attack", digits_run, "--images", "20", "--eps-sweep", "0,0.1", "--out", tmp_path, "--json"
    )
    assert code == 0
    assert json.loads(out)["robustness_curve"]["images"] == 20


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_flag_and_environment_variable(run_cli, monkeypatch, restore_threads):
    code, out, _ = run_cli("--threads", "1", "datasets", "--json")
    assert code == 0 and json.loads(out) and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("CONVLENS_THREADS", "1")
    code, _, _ = run_cli("datasets", "--json")
    assert code == 0 and torch.get_num_threads() == 1
    monkeypatch.setenv("CONVLENS_THREADS", "x")  # the flag wins over the variable
    code, _, _ = run_cli("--threads", "2", "datasets", "--json")
    assert code == 0 and torch.get_num_threads() == 2


@pytest.mark.parametrize(
    ("args", "environment", "expected"),
    [
        (["--threads", "0"], None, "--threads must be a whole number of CPU threads, 1 or more, got '0'"),
        (["--threads", "-1"], None, "--threads must be a whole number of CPU threads, 1 or more, got '-1'"),
        (["--threads", "x"], None, "--threads must be a whole number of CPU threads, 1 or more, got 'x'"),
        ([], "0", "CONVLENS_THREADS must be a whole number of CPU threads, 1 or more, got '0'"),
        ([], "two", "CONVLENS_THREADS must be a whole number of CPU threads, 1 or more, got 'two'"),
    ],
)
def test_bad_threads_is_one_line(run_cli, monkeypatch, restore_threads, args, environment, expected):
    if environment is not None:
        monkeypatch.setenv("CONVLENS_THREADS", environment)
    code, out, err = run_cli(*args, "datasets", "--json")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"convlens: error: {expected}"]
