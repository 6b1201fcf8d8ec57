"""``convlens import MODEL``: the route chosen from MODEL, the user's code run only with --trust-code.

A Python factory ``FILE.py:FUNCTION`` is written into tmp_path; it records in a marker file that it
ran, so the tests can tell whether convlens executed it. Its module is traced and saved as a graph,
so opening the run later (Run.open, every command) must not run the file again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from any_models import SHAPE, Handwritten, trained
from convlens import Run
from convlens.errors import ConvlensError
from convlens.imports import import_file, route_of

FACTORY = """
import pathlib
import torch
from PIL import Image
from torch import nn
import torch.nn.functional as F

pathlib.Path(__file__).with_name("ran.txt").write_text("yes")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        y = self.relu(self.conv(x))
        y = F.max_pool2d(y + self.conv(x), 2)
        return self.fc(torch.flatten(y, 1))


def build():
    torch.manual_seed(0)
    return Net().eval()


def untraceable():
    class Branchy(Net):
        def forward(self, x):
            y = self.relu(self.conv(x))
            if y.mean() > 0:  # control flow on a value: torch.fx cannot trace it
                y = y * 2
            return self.fc(torch.flatten(F.max_pool2d(y, 2), 1))
    return Branchy().eval()


def broken():
    raise ValueError("no such layer")
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


def test_the_route_comes_from_the_name():
    assert route_of("model.pt2") == "program" and route_of("m.ONNX") == "onnx"
    assert route_of("net.py:build") == "factory" and route_of("w.pth") == "weights"
    assert route_of("weights.data", arch="resnet18") == "weights"
    with pytest.raises(ConvlensError, match=r"model notes\.txt: expected a torch\.export program"):
        route_of("notes.txt")


def test_a_factory_runs_only_with_trust_code_and_never_again(run_cli, tmp_path, factory):
    out = tmp_path / "run"
    code, _, err = run_cli(
        "import", f"{factory}:build", "--class-names", "a,b,c", "--input-shape", "6,12,12", "--out", out
    )
    assert code == 2 and err.count("\n") == 1 and "pass --trust-code" in err and "net.py" in err
    assert not (tmp_path / "ran.txt").exists() and not out.exists()
    code, stdout, err = run_cli(
        "import", f"{factory}:build", "--trust-code", "--class-names", "a,b,c", "--input-shape", "3,12,12",
        "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["arch"] == "graph" and (tmp_path / "ran.txt").read_text() == "yes"
    (tmp_path / "ran.txt").unlink()
    run = Run.open(out)
    assert (
        run.metadata["imported"]["factory"] == "net.py:build"
        and len(run.metadata["imported"]["sha256"]) == 64
    )
    assert [name for name, _ in run.model.stages()] == [
        "normalize", "conv", "relu", "conv_1", "add", "max_pool2d", "flatten", "fc",
    ]  # fmt: skip
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(image)
    code, stdout, err = run_cli("predict", out, image, "--json")
    assert code == 0, err
    assert not (tmp_path / "ran.txt").exists()  # opening the run ran no user code


def test_a_factorys_weights_and_outputs(tmp_path, factory):
    net = trained(Handwritten(), 0)
    tests = str(Path(__file__).parent)
    (tmp_path / "hand.py").write_text(
        f"import sys\nsys.path.insert(0, {tests!r})\nfrom any_models import Handwritten\n\n"
        "def build():\n    return Handwritten().eval()\n"
    )
    torch.save(net.state_dict(), tmp_path / "hand.pth")
    result = import_file(
        f"{tmp_path / 'hand.py'}:build", tmp_path / "run", trust_code=True, weights=tmp_path / "hand.pth",
        class_names="a,b,c", input_shape=SHAPE,
    )  # fmt: skip
    assert result.arch == "graph" and result.stages == 13
    run = Run.open(tmp_path / "run")
    pixels = torch.rand(4, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(run.model(pixels), net(pixels), atol=1e-5, rtol=0)
    assert run.metadata["imported"]["weights"] == "hand.pth"


@pytest.mark.parametrize(
    ("target", "extra", "match"),
    [
        ("untraceable", {}, r"could not be traced .*convlens\.open_model"),
        ("broken", {}, r"the code raised ValueError: no such layer"),
        ("missing", {}, r"defines no function 'missing'"),
    ],
)
def test_a_factory_that_cannot_be_saved_says_why(tmp_path, factory, target, extra, match):
    with pytest.raises(ConvlensError, match=match):
        import_file(
            f"{factory}:{target}",
            tmp_path / "run",
            trust_code=True,
            class_names="a,b,c",
            input_shape=SHAPE,
            **extra,
        )
    assert not (tmp_path / "run").exists()


def test_flags_of_another_route_are_refused(run_cli, tmp_path, factory):
    weights = tmp_path / "w.pth"
    torch.save(nn.Linear(2, 2).state_dict(), weights)
    for args, message in (
        ([weights, "--trust-code"], "--trust-code: only for a Python factory"),
        ([weights], "--arch is needed for the weights file"),
        ([f"{factory}:build", "--arch", "resnet18", "--trust-code"], "--arch: only for a weights file"),
        ([tmp_path / "m.pt2", "--weights", weights], "--weights: only for a Python factory"),
        (["net.py:"], "MODEL net.py:: expected a torch.export program"),
    ):
        code, _, err = run_cli(
            "import", *args, "--class-names", "a,b,c", "--input-shape", "3,12,12", "--out", tmp_path / "run"
        )
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "run").exists()


class _Small(nn.Module):
    """An imported 8x8 grayscale classifier of three classes, with a residual addition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(nn.functional.max_pool2d(y, 2), 1))


def test_an_imported_model_fine_tunes_as_itself_with_a_new_head(tmp_path, digits):
    from convlens.train import TrainConfig, fit

    torch.manual_seed(0)
    source = _Small().eval()
    Run.from_model(source, tmp_path / "imported", class_names="a,b,c", input_shape=(1, 8, 8))
    result = fit(
        digits, TrainConfig(model="graph", init=str(tmp_path / "imported"), epochs=1), tmp_path / "tuned"
    )
    init = Run.open(tmp_path / "tuned").metadata["init"]
    assert {"body.conv1.weight", "body.conv1.bias", "body.conv2.weight", "body.conv2.bias"} == set(
        init["loaded"]
    )
    assert {entry["tensor"] for entry in init["reinitialised"]} == {"body.fc.weight", "body.fc.bias"}
    assert result is not None
    tuned = Run.open(tmp_path / "tuned")
    assert tuned.model_name == "graph" and tuned.model.num_classes == 10
    assert [name for name, _ in tuned.model.stages()] == [
        name for name, _ in Run.open(tmp_path / "imported").model.stages()
    ]
    with pytest.raises(ConvlensError, match="graph takes its layers from init=RUN"):
        TrainConfig(model="graph", epochs=1).check()
