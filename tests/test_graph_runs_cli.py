"""The command line on graph runs: an imported torchvision-named ResNet-18 (with and without data)
and a hand-written module saved with ``Run.from_model``.

Every command that works on a run exits 0 and speaks of the graph's stages by name; one that
needs data the run does not name says so in one line and exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from any_models import MODELS, SHAPE
from convlens.imports import import_weights
from convlens.inspect import grad_cam_stage, stage_inputs
from convlens.run import Run
from test_graph_runs import _resnet18_reference
from test_imports import NAMES, _image_folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, image folder): a ResNet-18 state_dict imported with an image folder of 16x16
    pictures as its data (three classes, 6 test images)."""
    root = tmp_path_factory.mktemp("imported")
    data = _image_folder(root / "data")
    torch.save(_resnet18_reference(seed=5).state_dict(), root / "resnet18.pth")
    import_weights(root / "resnet18.pth", "resnet18", root / "run", data=data)
    return root / "run", data


@pytest.fixture(scope="module")
def without_data(tmp_path_factory) -> Path:
    """The same weights imported with class names and an input shape only: no data set."""
    root = tmp_path_factory.mktemp("without-data")
    torch.save(_resnet18_reference(seed=5).state_dict(), root / "resnet18.pth")
    import_weights(
        root / "resnet18.pth", "resnet18", root / "run", class_names=NAMES, input_shape=(3, 16, 16)
    )
    return root / "run"


def _json(run_cli, *args):
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_predict_and_explain_name_the_graphs_stages(run_cli, imported, tmp_path):
    run_dir, data = imported
    run = Run.open(run_dir)
    assert run.model_name == "graph"
    image = data / "test" / "dog" / "0.png"
    top = _json(run_cli, "predict", run_dir, image)[0]["predictions"][0]
    probabilities = run.predict(run.input(image).pixels.unsqueeze(0))[0]
    assert top["class"] == run.class_names[int(probabilities.argmax())]
    assert top["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    code, out, err = run_cli("predict", run_dir, image)
    assert code == 0 and top["class"] in out, err

    # the last block's second ReLU call (Grad-CAM's default); without --stage explain draws all 70
    # stages (25 s here: the slow test below)
    stage = grad_cam_stage(run.model)
    assert stage == "layer4.1.relu_1"
    explained = _json(
        run_cli,
        "explain",
        run_dir,
        image,
        "--stage",
        stage,
        "--method",
        "grad-cam",
        "--out",
        tmp_path / "explain",
    )
    assert explained["grad_cam"]["stage"] == stage
    names = [name for name, _ in run.model.stages()]
    assert [row["stage"] for row in explained["stages"]] == [*names, "softmax"]
    assert {"gradcam.png", f"stage-{stage}.png"} <= {Path(f).name for f in explained["files"]}
    for path in explained["files"]:
        assert Path(path).stat().st_size > 100, path

    cell = _json(run_cli, "explain", run_dir, image, "--stage", "layer1.0.add", "--at", "1,2,3")
    assert cell["input_stages"] == ["layer1.0.bn2", "maxpool"]  # the identity shortcut
    assert cell["total"] == pytest.approx(sum(cell["values"]), abs=1e-5)
    with torch.no_grad():
        from convlens.inspect import activations

        expected = activations(run.model, run.input(image).pixels)["layer1.0.add"][1, 2, 3]
    assert cell["total"] == pytest.approx(float(expected), abs=1e-5)
    code, out, err = run_cli("explain", run_dir, image, "--stage", "layer1.0.add", "--at", "1,2,3")
    assert code == 0 and "layer1.0.bn2" in out and "maxpool" in out, err  # the inputs, named


def test_attack_and_eval_run_on_the_imported_data(run_cli, imported):
    run_dir, _ = imported
    run = Run.open(run_dir)
    attacked = _json(run_cli, "attack", run_dir, "--eps", "0.05")
    assert attacked["images"] == 6 and attacked["max_linf"] <= 0.05 + 1e-6
    assert Path(attacked["files"]["examples"]).is_file()
    evaluated = _json(run_cli, "eval", run_dir)
    images, labels, _ = run.test_data()
    accuracy = float((run.predict(images).argmax(dim=1) == labels).float().mean())
    assert evaluated["test_accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("command", ["eval", "attack", "report"])
def test_without_data_the_commands_that_need_it_say_so(run_cli, without_data, command):
    extra = ["--eps", "0.05"] if command == "attack" else []
    code, out, err = run_cli(command, without_data, *extra)
    assert code == 2 and out == ""
    line = err.lstrip("\n")  # report's progress bar, off a terminal, leaves an empty line (the CLI's)
    assert line.startswith("convlens: error: ") and line.count("\n") == 1 and "Traceback" not in err
    assert "--data" in err and "does not say which data set" in err, err


def test_without_data_predict_and_explain_still_work(run_cli, without_data, imported, tmp_path):
    image = imported[1] / "test" / "cat" / "1.png"
    top = _json(run_cli, "predict", without_data, image)[0]["predictions"][0]
    assert top["class"] in NAMES
    explained = _json(
        run_cli,
        "explain",
        without_data,
        "smiley",
        "--stage",
        "layer2.0.add",
        "--cam-stage",
        "layer2.0.add",
        "--out",
        tmp_path,
    )
    assert explained["grad_cam"]["stage"] == "layer2.0.add"


def test_a_module_saved_from_python_works_with_explain_and_predict(run_cli, imported, tmp_path):
    """The hand-written model (a concatenation, a reused in-place ReLU): Grad-CAM by default at its
    last rectified spatial stage, a concat cell read back from the stage it copies."""
    build, _ = MODELS["handwritten"]
    Run.from_model(build(), tmp_path / "run", class_names="a,b,c", input_shape=SHAPE)
    run = Run.open(tmp_path / "run")
    assert stage_inputs(run.model)["cat"] == ("relu_2", "branch")
    image = imported[1] / "test" / "bird" / "0.png"  # 16x16, resized to the model's 12x12
    top = _json(run_cli, "predict", tmp_path / "run", image)[0]["predictions"][0]
    probabilities = run.predict(run.input(image).pixels.unsqueeze(0))[0]
    assert top["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    explained = _json(run_cli, "explain", tmp_path / "run", "smiley", "--out", tmp_path / "x")
    assert explained["grad_cam"]["stage"] == grad_cam_stage(run.model)
    assert [row["stage"] for row in explained["stages"]][-3:] == ["flatten", "fc", "softmax"]
    cell = _json(run_cli, "explain", tmp_path / "run", "smiley", "--stage", "cat", "--at", "5,3,4")
    assert cell["input_stages"] == ["relu_2", "branch"] and cell["source"] == 1  # channel 5: branch's 1
    assert cell["source_index"] == [1, 3, 4]


@pytest.mark.slow  # 50 s: explain and the report draw every one of the 70 stages
def test_explain_and_the_report_of_an_imported_run_name_its_stages(run_cli, imported, tmp_path):
    run_dir, data = imported
    explained = _json(run_cli, "explain", run_dir, data / "test" / "cat" / "0.png", "--out", tmp_path / "x")
    assert explained["grad_cam"]["stage"] == "layer4.1.relu_1"  # the default
    drawn = {Path(f).name for f in explained["files"]}
    assert {"gradcam.png", "stage-layer1.0.add.png", "stage-layer2.0.downsample.1.png"} <= drawn
    report = _json(run_cli, "report", run_dir, "--out", tmp_path / "report.html")
    html = Path(report["report"]).read_text()
    assert "resnet18 (imported from resnet18.pth)" in html and "Grad-CAM" in html
    assert all(name in html for name in NAMES)
    for stage in ("conv1", "layer1.0.add", "layer1.0.relu_1", "layer2.0.downsample.0", "avgpool", "fc"):
        assert f"<td>{stage}</td>" in html, stage
    assert "<td>layer2.0.bn2, layer2.0.downsample.1</td>" in html  # what the block's addition reads
