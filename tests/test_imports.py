"""Importing a model: a torchvision-named state_dict or a model object becomes a run every command opens.

Probabilities are checked against the functional ResNet-18 of test_models_torchvision (written
from the paper, over the same dict of tensors), not against convlens' own forward.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from convlens.errors import ConvlensError
from convlens.imports import import_weights, read_weights
from convlens.models import create_model
from convlens.run import Run
from test_models_torchvision import random_state_dict, reference_resnet18, torchvision_resnet18_shapes

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NAMES = ["cat", "dog", "bird"]


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    """A 3-class ResNet-18 state_dict with torchvision's key names."""
    return random_state_dict(torchvision_resnet18_shapes(classes=3), seed=3)


def _reference_probabilities(state, pixels, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    normalized = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return torch.softmax(reference_resnet18(state, normalized), dim=1)


@pytest.mark.parametrize("wrapping", ["plain", "nested", "data-parallel", "safetensors"])
def test_weights_files_are_unwrapped_to_the_state_dict(tmp_path, state, wrapping):
    if wrapping == "safetensors":
        from safetensors.torch import save_file

        weights = tmp_path / "resnet18.safetensors"
        save_file(state, weights)
    else:
        saved = {
            "plain": state,
            "nested": {"model": state, "epoch": 7, "optimizer": {"lr": 0.1}},
            "data-parallel": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        }[wrapping]
        weights = tmp_path / "resnet18.pth"
        torch.save(saved, weights)
    read = read_weights(weights)
    assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)


def test_a_state_dict_file_becomes_a_run_with_the_same_probabilities(tmp_path, state):
    weights = tmp_path / "resnet18.pth"
    torch.save(state, weights)
    result = import_weights(
        weights, "resnet18", tmp_path / "run", class_names=NAMES, input_shape=(3, 32, 32),
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )  # fmt: skip
    assert result.loaded == 122
    run = Run.open(tmp_path / "run")
    assert (run.model_name, run.input_shape, run.class_names) == ("graph", (3, 32, 32), NAMES)
    assert run.normalization == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "source": "given"}
    pixels = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        run.predict(pixels), _reference_probabilities(state, pixels), atol=1e-5, rtol=0
    )


def test_without_mean_and_std_the_model_takes_pixels_as_they_are(tmp_path, state):
    weights = tmp_path / "w.pth"
    torch.save(state, weights)
    import_weights(weights, "resnet18", tmp_path / "run", class_names="a,b,c", input_shape=(3, 16, 16))
    run = Run.open(tmp_path / "run")
    assert run.normalization["mean"] is None and run.check_shift(torch.rand(3, 16, 16)) is None
    pixels = torch.rand(2, 3, 16, 16)
    expected = _reference_probabilities(state, pixels, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    torch.testing.assert_close(run.predict(pixels), expected, atol=1e-5, rtol=0)


def _refused(tmp_path, match, weights, **kwargs):
    options = {"class_names": NAMES, "input_shape": (3, 32, 32), **kwargs}
    with pytest.raises(ConvlensError, match=match) as caught:
        import_weights(weights, options.pop("arch", "resnet18"), tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()  # checked before the folder is touched
    return caught.value


def test_weights_that_do_not_fit_are_named_and_nothing_is_written(tmp_path, state):
    weights = tmp_path / "w.pth"
    torch.save({k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}, weights)
    _refused(tmp_path, r"w.pth: does not fit resnet18: 1 missing \(layer3.1.bn2.running_var\)", weights)
    torch.save({**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)}, weights)
    _refused(tmp_path, "layer1.0.conv1.weight is 64x64x5x5, expected 64x64x3x3", weights)
    torch.save(state, weights)
    error = _refused(
        tmp_path, "class_names: 2 given, but the weights' fc has 3 outputs", weights, class_names="a,b"
    )
    assert error.parameter == "class_names"
    _refused(tmp_path, "input_shape has 1 channel", weights, input_shape=(1, 32, 32))
    _refused(tmp_path, "the keys are resnet18's", weights, arch="resnet34")
    error = _refused(tmp_path, "arch must be one of mobilenet_v2, resnet18, resnet34", weights, arch="vgg16")
    assert error.parameter == "arch"


class Pickled:
    """Any class: a pickle of it would run code on loading; weights_only refuses it."""


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hello", "not a PyTorch state_dict"),
        (pickle.dumps({"fc.weight": Pickled()}), "not a PyTorch state_dict|holds Python objects"),
        ("torch-object", "holds Python objects besides tensors"),
        ("strings", "not a state_dict: 'fc.weight' holds a str"),
    ],
)
def test_a_file_that_is_not_weights_is_refused_without_unpickling(tmp_path, content, match):
    path = tmp_path / "w.pt"
    if content == "torch-object":
        torch.save({"fc.weight": Pickled()}, path)
    elif content == "strings":
        torch.save({"fc.weight": "not a tensor"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConvlensError, match=match):
        read_weights(path)


def test_other_files_are_refused_by_name(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ConvlensError, match="not a valid safetensors file"):
        read_weights(tmp_path / "w.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ConvlensError, match=r"expected weights as a .safetensors file or a .pt"):
        read_weights(tmp_path / "w.onnx")


# ----------------------------------------------------------------------------- Run.from_model


def test_from_model_keeps_a_staged_models_normalization(tmp_path):
    model = create_model("convnet", (1, 12, 12), 3, mean=[0.2], std=[0.3]).eval()
    run = Run.from_model(model, tmp_path / "run", class_names=NAMES)
    assert run.normalization == {"mean": [0.2], "std": [0.3], "source": "the model's normalize stage"}
    pixels = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(
            run.predict(pixels), torch.softmax(model(pixels), dim=1), atol=1e-6, rtol=0
        )
    assert Run.open(tmp_path / "run").metadata["imported"]["route"] == "model object"


class TorchvisionResNet(nn.Module):
    """A module with torchvision's ResNet-18 layout that is not a convlens class (as a user's own copy)."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        for name, module in source.body.named_children():
            if name not in ("normalize", "flatten"):
                self.add_module(name, module)


def test_from_model_takes_a_module_with_torchvisions_layout(tmp_path, state):
    source = create_model("resnet18", (3, 32, 32), 3)
    own = TorchvisionResNet(source)
    own.load_state_dict(state)
    run = Run.from_model(
        own,
        tmp_path / "run",
        class_names=NAMES,
        input_shape=(3, 32, 32),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    assert run.model_name == "graph" and run.metadata["imported"]["class"] == "TorchvisionResNet"
    assert run.metadata["imported"]["arch"] == "resnet18"
    pixels = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(
        run.predict(pixels), _reference_probabilities(state, pixels), atol=1e-5, rtol=0
    )


class _Gated(nn.Module):
    """A classifier with a function convlens does not model (x * sigmoid(x) written out)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((y * torch.sigmoid(y)).flatten(1))


def test_from_model_refuses_what_it_cannot_save_naming_the_stages(tmp_path):
    with pytest.raises(
        ConvlensError, match=r"cannot be saved as a graph: mul \(mul: not a layer convlens can save\)\. Open"
    ) as caught:
        Run.from_model(_Gated(), tmp_path / "run", class_names="a,b", input_shape=(3, 8, 8))
    assert "convlens.open_model" in str(caught.value) and caught.value.parameter == "model"
    assert not (tmp_path / "run").exists()
    with pytest.raises(
        ConvlensError, match=r"output of shape \(4, 6, 6\) per image; convlens opens classifiers"
    ):
        Run.from_model(
            nn.Sequential(nn.Conv2d(3, 4, 3)), tmp_path / "run", class_names="a,b", input_shape=(3, 8, 8)
        )
    assert not (tmp_path / "run").exists()


def test_from_model_checks_its_arguments(tmp_path):
    model = create_model("convnet", (1, 12, 12), 3)
    for kwargs, match in (
        ({"class_names": ["a", "b"]}, "class_names: 2 given, the model has 3 outputs"),
        ({"class_names": ["a", "a", "b"]}, "class_names: a given twice"),
        ({"class_names": NAMES, "mean": [0.5]}, "std is needed too"),
        ({"class_names": NAMES, "mean": [0.5], "std": [0.0]}, "std must be 1 finite positive number"),
        ({"class_names": NAMES, "input_shape": (1, 20, 20)}, "weights do not fit convnet at this size"),
        (
            {"class_names": NAMES, "input_shape": (2, 12, 12)},
            "input_shape must be C,H,W with 1 or 3 channels",
        ),
    ):
        with pytest.raises(ConvlensError, match=match):
            Run.from_model(model, tmp_path / "run", **kwargs)
        assert not (tmp_path / "run").exists()
    Run.from_model(model, tmp_path / "run", class_names=NAMES)
    with pytest.raises(ConvlensError, match="already holds a run; pass overwrite=True"):
        Run.from_model(model, tmp_path / "run", class_names=NAMES)
    Run.from_model(model, tmp_path / "run", class_names=["x", "y", "z"], overwrite=True)
    assert Run.open(tmp_path / "run").class_names == ["x", "y", "z"]


# ------------------------------------------------------------------------------------ the CLI


def _image_folder(root: Path, size: int = 16) -> Path:
    """Three classes, each brighter in its own colour channel: train/ and test/ as image folders take."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for channel, label in enumerate(NAMES):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                pixels = (rng.random((size, size, 3)) * 80).astype(np.uint8)
                pixels[..., channel] += 120
                Image.fromarray(pixels).save(root / split / label / f"{index}.png")
    return root


def test_an_imported_resnet18_works_with_every_command(run_cli, tmp_path, state):
    data = _image_folder(tmp_path / "data")
    weights = tmp_path / "resnet18.pth"
    torch.save(state, weights)
    code, out, err = run_cli(
        "import", weights, "--arch", "resnet18", "--data", data, "--out", tmp_path / "run", "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["arch"] == "resnet18" and summary["input_shape"] == [3, 16, 16]
    assert summary["class_names"] == sorted(NAMES) and summary["loaded_tensors"] == 122  # folder order
    run = tmp_path / "run"
    image = data / "test" / "dog" / "0.png"
    code, out, err = run_cli("predict", run, image, "--json")
    assert code == 0, err
    mean, std = summary["normalization"]["mean"], summary["normalization"]["std"]
    pixels = Run.open(run).input(image).pixels.unsqueeze(0)  # (1, 3, 16, 16)
    expected = _reference_probabilities(state, pixels, mean, std)[0]
    top = json.loads(out)[0]["predictions"][0]
    assert (
        top["class"] == summary["class_names"][int(expected.argmax())]
        and abs(top["probability"] - float(expected.max())) < 1e-4
    )
    code, out, err = run_cli("eval", run, "--json")
    assert code == 0, err
    images, labels, _ = Run.open(run).test_data()  # (6, 3, 16, 16): the folder's test split
    predicted = _reference_probabilities(state, images, mean, std).argmax(dim=1)
    assert json.loads(out)["test_accuracy"] == pytest.approx(float((predicted == labels).float().mean()))
    code, out, err = run_cli(
        "explain",
        run,
        image,
        "--stage",  # one stage's feature maps, not all 70
        "layer4.1.relu_1",
        "--method",
        "grad-cam",
        "--cam-stage",
        "layer4.1.relu_1",
        "--out",
        tmp_path / "x",
        "--json",
    )
    assert code == 0, err
    explained = json.loads(out)
    assert explained["grad_cam"]["stage"] == "layer4.1.relu_1"  # the block's second ReLU call
    files = {Path(f).name for f in explained["files"]}
    assert {
        "stage-layer4.1.relu_1.png",
        "gradcam.png",
    } <= files
    code, out, err = run_cli("attack", run, "--eps", "0.05", "--json")
    assert code == 0, err
    assert json.loads(out)["max_linf"] <= 0.05 + 1e-6


@pytest.mark.slow  # about 30 s on two cores: the report attacks, explains and draws every stage
def test_an_imported_resnet18_gets_a_report(run_cli, tmp_path, state):
    data = _image_folder(tmp_path / "data")
    torch.save(state, tmp_path / "w.pth")
    code, _, err = run_cli(
        "import", tmp_path / "w.pth", "--arch", "resnet18", "--data", data, "--out", tmp_path / "run"
    )
    assert code == 0, err
    run = tmp_path / "run"
    code, out, err = run_cli("report", run, "--out", tmp_path / "report.html", "--json")
    assert code == 0, err
    html = Path(json.loads(out)["report"]).read_text()
    assert "resnet18" in html and "Grad-CAM" in html and all(name in html for name in NAMES)


def test_import_with_class_names_and_input_shape(run_cli, tmp_path, state):
    weights = tmp_path / "w.pth"
    torch.save(state, weights)
    code, out, err = run_cli(
        "import", weights, "--arch", "resnet18", "--class-names", "a,b,c", "--input-shape", "3,32,32",
        "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    assert "122 tensors loaded" in out and "mean 0.485, 0.456, 0.406" in out
    assert Run.open(tmp_path / "run").class_names == ["a", "b", "c"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet50"], "--arch must be one of mobilenet_v2, resnet18, resnet34"),
        (["--arch", "resnet18", "--class-names", "a,b"], "--class-names: 2 given, but the weights' fc has 3"),
        (["--arch", "mobilenet_v2"], "does not fit mobilenet_v2: 314 missing (features.0.0.weight"),
        (["--arch", "resnet18", "--input-shape", "3,x,32"], "--input-shape must be comma-separated integers"),
        (["--arch", "resnet18", "--mean", "0.5,0.5,0.5"], "--std is needed too"),
        (["--arch", "resnet18", "--data", "nowhere/"], "--data nowhere/: nowhere/: no such file or folder"),
    ],
)
def test_import_errors_are_one_line_naming_the_flag(run_cli, tmp_path, state, args, message):
    weights = tmp_path / "w.pth"
    torch.save(state, weights)
    if "--data" not in args:
        args = [
            *args,
            *(["--class-names", "a,b,c"] if "--class-names" not in args else []),
            "--input-shape",
            "3,32,32",
        ]
        if args.count("--input-shape") > 1:  # the case's own shape comes first
            args = args[:-2]
    code, out, err = run_cli("import", weights, *args, "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert err.startswith("convlens: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_import_of_a_file_that_is_not_weights(run_cli, tmp_path):
    (tmp_path / "notes.pt").write_text("my notes")
    code, _, err = run_cli(
        "import", tmp_path / "notes.pt", "--arch", "resnet18", "--class-names", "a,b,c",
        "--input-shape", "3,32,32", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 2 and "notes.pt: not a PyTorch state_dict" in err and err.count("\n") == 1
    code, _, err = run_cli("import", tmp_path / "notes.pt", "--arch", "resnet18", "--out", tmp_path / "run")
    assert code == 2 and "--data or --class-names is needed" in err
