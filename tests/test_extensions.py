"""Extension points: a method or experiment registered at run time reaches every face unedited."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest
import torch


def brightness(model, image, target=None):
    """Pixel brightness: a model-free baseline that any real method should beat."""
    from convlens.inspect import Attribution
    from convlens.predict import predict_probabilities

    probabilities = predict_probabilities(model, image.unsqueeze(0))[0]  # (classes,)
    target = int(probabilities.argmax()) if target is None else int(target)
    gray = image.mean(dim=0)  # (H, W)
    top = gray.max()
    return Attribution(
        method="brightness",
        target=target,
        stage=None,
        map=gray / top if top > 0 else gray,
        raw=image.clone(),
        probability=float(probabilities[target]),
    )


@dataclass
class MeanPixelResult:
    dataset: str
    mean_pixel: float
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "mean_pixel": self.mean_pixel, "seconds": self.seconds}


def mean_pixel_tables(result):
    from convlens.views.tables import Table

    return [
        Table(f"mean pixel of {result.dataset}", ["split", "mean"], [["train", f"{result.mean_pixel:.4f}"]])
    ]


def mean_pixel(dataset, scale: float = 1.0) -> MeanPixelResult:
    """The average training pixel: a toy experiment."""
    from convlens.data import to_float

    return MeanPixelResult(dataset.name, scale * float(to_float(dataset.train_images).mean()))


def mean_pixel_figure(result):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2))
    figure.subplots().bar(["train"], [result.mean_pixel])
    return figure


@pytest.fixture
def toys():
    """Register a toy attribution method and a toy lab experiment; remove them afterwards."""
    from convlens.inspect import ATTRIBUTIONS
    from convlens.lab import EXPERIMENTS, register_experiment

    ATTRIBUTIONS.register("brightness", brightness, label="brightness")
    register_experiment(
        "mean-pixel", mean_pixel, mean_pixel_figure, quick={"scale": 1.0}, tables=mean_pixel_tables
    )
    try:
        yield
    finally:
        ATTRIBUTIONS.unregister("brightness")
        EXPERIMENTS.unregister("mean-pixel")


def test_toys_appear_in_the_cli(toys, run_cli, digits_run, tmp_path):
    code, out, err = run_cli("methods", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert "brightness" in [e["name"] for e in listed["attributions"]]
    toy = next(e for e in listed["experiments"] if e["name"] == "mean-pixel")
    assert toy["help"] == "The average training pixel: a toy experiment."
    assert toy["parameters"] == [{"name": "scale", "default": 1.0, "kind": "float", "required": False}]

    code, out, err = run_cli(
        "explain", digits_run, "digits:3", "--method", "brightness", "--json", "--out", tmp_path / "x"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["attribution"]["method"] == "brightness" and summary["grad_cam"] is None
    assert (tmp_path / "x" / "attribution-brightness.png").is_file()

    code, out, err = run_cli(
        "lab", "mean-pixel", "--data", "digits", "--option", "scale=2", "--json", "--out", tmp_path / "lab"
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["experiment"] == "mean-pixel" and 0 < record["mean_pixel"] < 2
    assert record["tables"][0]["title"] == "mean pixel of digits"
    assert (tmp_path / "lab" / "plot.png").is_file()

    # the help of `lab` and `explain` lists what is registered when it is shown
    for command, name in (("lab", "mean-pixel"), ("explain", "brightness")):
        code, out, err = run_cli(command, "--help")
        assert code == 0, err
        assert name in _words(out), out


def test_toys_appear_in_the_server(toys, digits_run):
    from fastapi.testclient import TestClient

    from convlens.server import create_app

    client = TestClient(create_app([digits_run], allowed_hosts=["testserver"]))
    listed = client.get("/api/registry").json()
    assert "brightness" in [e["name"] for e in listed["attributions"]]
    assert "mean-pixel" in [e["name"] for e in listed["experiments"]]
    run_id = client.get("/api/runs").json()[0]["id"]
    answer = client.post(f"/api/runs/{run_id}/attribution", data={"test_index": 0, "method": "brightness"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["method"] == "brightness"


def test_toys_appear_in_the_report(toys, run_cli, digits_run, tmp_path):
    from convlens.report import report_sections

    lab_dir = tmp_path / "lab"
    code, _, err = run_cli("lab", "mean-pixel", "--data", "digits", "--out", lab_dir / "mean-pixel")
    assert code == 0, err
    _, sections = report_sections(digits_run, lab_dir=lab_dir)
    by_id = {section.id: section for section in sections}
    assert "brightness" in by_id["attributions"].text and by_id["attributions"].images
    titles = [table["title"] for table in by_id["lab"].tables]
    assert "mean-pixel: mean pixel of digits" in titles
    (plot,) = [image for image in by_id["lab"].images if image["alt"] == "mean-pixel plot"]
    assert base64.b64decode(plot["data"])[:4] == b"\x89PNG"  # the plot the lab saved, read back
    not_run = next(t for t in by_id["lab"].tables if t["title"] == "not run yet")
    assert "params" in [row[0] for row in not_run["rows"]]


def _words(text: str) -> str:
    """Help text without Rich's boxes and line breaks (a long list wraps anywhere)."""
    return "".join(ch for ch in text if ch not in "│╭╮╰╯─ \n")


def test_a_plugin_result_with_its_own_tables_method_still_shows_them(digits):
    """The contract before results were plain data: ``tables()`` on the result, no ``tables=``."""
    from convlens.lab import EXPERIMENTS, register_experiment, run_experiment
    from convlens.views.lab import experiment_tables

    class OldStyle(MeanPixelResult):
        def tables(self):
            return mean_pixel_tables(self)

    register_experiment("old-style", lambda dataset: OldStyle(dataset.name, 0.5))
    try:
        (table,) = experiment_tables("old-style", run_experiment("old-style", digits))
    finally:
        EXPERIMENTS.unregister("old-style")
    assert table.title == "mean pixel of digits" and table.rows == [["train", "0.5000"]]


def test_unregistered_names_list_the_choices():
    from convlens.attacks import ATTACKS
    from convlens.errors import ConvlensError

    with pytest.raises(ConvlensError, match="method must be one of fgsm, pgd, got 'cw'") as caught:
        ATTACKS.get("cw")
    assert caught.value.parameter == "method"
    assert ATTACKS.get("fgsm").name == "fgsm" and "grad_cam" not in ATTACKS


def test_an_entry_gets_only_the_options_it_takes():
    from convlens.inspect import ATTRIBUTIONS

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    model.in_shape = (1, 2, 2)
    result = ATTRIBUTIONS.get("saliency").call(model, torch.rand(1, 2, 2), target=1, stage="ignored")
    assert result.target == 1 and result.method == "saliency"
