"""`convlens report`: one self-contained HTML file with every section, opening cleanly in Chromium."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from convlens.report import build_report

SECTIONS = ["overview", "training", "confusion", "misclassified", "filters", "feature-maps", "attacks", "lab"]


@pytest.fixture(scope="module")
def report_file(digits_run, tmp_path_factory) -> Path:
    """A report of the digits run, with one lab result written the way `convlens lab` writes it."""
    lab = tmp_path_factory.mktemp("lab")
    (lab / "params").mkdir()
    (lab / "params" / "result.json").write_text(
        json.dumps(
            {
                "experiment": "params",
                "seconds": 0.1,
                "tables": [
                    {"title": "first layer", "columns": ["layer", "parameters"], "rows": [["conv", "1,792"]]}
                ],
            }
        )
    )
    (lab / "params" / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\nnot-really")
    return build_report(digits_run, tmp_path_factory.mktemp("report") / "report.html", lab_dir=lab)


def test_report_has_every_section_and_embeds_its_images(report_file):
    html = report_file.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "Misclassified test images" in html and "Grad-CAM" in html
    assert "conv1 kernels" not in html  # figure text is inside PNGs, not the HTML
    assert "params: first layer" in html and "1,792" in html
    images = re.findall(r'src="([^"]+)"', html)
    assert len(images) >= 8 and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        base64.b64decode(src.split(",", 1)[1], validate=True)
    assert "http://" not in html and "https://" not in html  # nothing to fetch: it opens offline


def test_report_right_aligns_numbers_and_left_aligns_text(report_file):
    html = report_file.read_text()
    assert '<td>conv</td><td class="num">1,792</td>' in html  # the lab table: name left, count right
    assert '<th class="num">parameters</th>' in html


def test_numeric_columns():
    from convlens.views.tables import numeric_columns

    rows = [["conv1", "16x28x28", "98.20 %", "1.5 s", "(0.30)", "yes"], ["fc", "10", "-", "2 s", "−2", "no"]]
    assert numeric_columns(rows) == [False, True, True, True, True, False]
    assert numeric_columns([["-"], ["-"]]) == [False]  # no number at all: text


def test_report_without_lab_results_says_how_to_make_them(tmp_path):
    from convlens.report import _lab

    section = _lab(tmp_path / "missing")
    assert section.id == "lab" and "convlens lab all --out RUN_DIR/lab" in section.text


def test_report_command(run_cli, digits_run, tmp_path):
    code, out, err = run_cli("report", digits_run, "--out", tmp_path / "out.html")
    assert code == 0, err
    assert str(tmp_path / "out.html") in out.replace("\n", "")
    assert (tmp_path / "out.html").stat().st_size > 10_000


def test_report_json_defaults_to_the_run_folder(run_cli, digits_run, tmp_path):
    import shutil

    run = Path(shutil.copytree(digits_run, tmp_path / "run"))
    code, out, err = run_cli("report", run, "--json")
    assert code == 0, err
    result = json.loads(out)  # stdout holds only the JSON object
    assert Path(result["report"]) == run / "report.html"
    assert result["bytes"] == (run / "report.html").stat().st_size > 10_000
    assert result["seconds"] > 0 and result["run"] == str(run)


@pytest.mark.browser
def test_report_opens_in_headless_chromium_without_errors(chromium, report_file, tmp_path):
    errors: list[str] = []
    page = chromium.new_page()
    try:
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "request",
            lambda request: (
                None if request.url.startswith(("file:", "data:")) else errors.append(request.url)
            ),
        )
        page.goto(report_file.as_uri())
        for section in SECTIONS:
            assert page.locator(f"section#{section} h2").is_visible()
        # every embedded picture decoded (the lab plot here is deliberately broken: skip it)
        broken = page.evaluate(
            "Array.from(document.querySelectorAll('section:not(#lab) img'))"
            ".filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        assert broken == 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert errors == []


def test_confusion_matrix_is_of_the_data_the_report_shows(
    digits_run, digits, digits_model, tmp_path, monkeypatch
):
    """With --data, the matrix counts that data's test images, not those of the training run."""
    import numpy as np

    from convlens.report import report_sections
    from convlens.views import plots as figures

    other = tmp_path / "other.npz"  # 8x8, 10 classes, 50 test images: data the model can take
    np.savez(
        other,
        x=digits.train_images[:200, 0].numpy(),
        y=digits.train_labels[:200].numpy(),
        x_test=digits.test_images[:50, 0].numpy(),
        y_test=digits.test_labels[:50].numpy(),
    )
    totals = []
    real = figures.confusion_matrix
    monkeypatch.setattr(
        figures, "confusion_matrix", lambda m, n: totals.append(sum(map(sum, m))) or real(m, n)
    )
    report_sections(digits_run, data=str(other))
    assert totals == [50]


def test_the_training_text_says_what_ended_training(digits_run):
    """A run that ran every epoch did not "stop early" (issue 23, defect 12)."""
    from convlens.report import _training_text
    from convlens.run import Run

    run = Run.open(digits_run)
    text = _training_text(run)
    assert "stopped early" not in text
    assert f"Training ran all {len(run.history)} epochs" in text or "Training stopped after epoch" in text
