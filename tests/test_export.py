"""ONNX export: onnxruntime must compute what PyTorch computes, on real images, at any batch size."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConvlensError
from convlens.models import Normalize, StagedModel, create_model, list_families, register_model
from convlens.run import Run

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from convlens.export import DEFAULT_OPSET, export_onnx  # noqa: E402  (after the skips)


def onnx_logits(path, images: torch.Tensor) -> torch.Tensor:
    """Logits (N, classes) from onnxruntime, fed exactly what Run.predict is fed."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"pixels": images.numpy().astype(np.float32)})
    return torch.from_numpy(logits)


def torch_logits(run: Run, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return run.model(images)


def save_untrained_run(folder, name: str, input_shape, class_names, **options):
    """A run folder with a freshly built model; BatchNorm statistics made non-trivial, so eval-mode
    normalization is part of what the export has to get right."""
    from convlens.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model(name, input_shape, len(class_names), mean=[0.4] * input_shape[0], **options)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    save_checkpoint(folder / "model", model.eval(), {"class_names": list(class_names)})
    return folder


@pytest.fixture(scope="module")
def digits_export(digits_run, tmp_path_factory):
    """(run, export result) of the trained digits convnet."""
    run = Run.open(digits_run)
    return run, export_onnx(run, tmp_path_factory.mktemp("onnx") / "digits.onnx")


def test_logits_match_pytorch_on_real_test_images(digits_export):
    run, result = digits_export
    images, _, _ = run.test_data()  # all 360 test digits, float in [0, 1]
    difference = (onnx_logits(result.path, images) - torch_logits(run, images)).abs().max()
    assert difference <= 1e-4
    assert result.max_abs_logit_difference <= 1e-4
    assert result.opset == DEFAULT_OPSET == 18
    assert result.bytes == result.path.stat().st_size


def test_graph_takes_raw_pixels_like_run_predict(digits_export):
    """The normalize stage is inside the graph: softmax of its logits on [0, 1] pixels is Run.predict."""
    run, result = digits_export
    images, _, _ = run.test_data(limit=50)
    probabilities = torch.softmax(onnx_logits(result.path, images), dim=1)
    assert torch.allclose(probabilities, run.predict(images), atol=1e-5)
    graph = onnx.load(str(result.path)).graph
    assert graph.node[0].op_type == "Sub" and graph.node[1].op_type == "Div"  # (pixels - mean) / std


@pytest.mark.parametrize("batch", [1, 7])
def test_batch_axis_is_dynamic(digits_export, batch):
    run, result = digits_export
    images, _, _ = run.test_data(limit=batch, seed=batch)
    logits = onnx_logits(result.path, images)
    assert logits.shape == (batch, run.num_classes)
    assert (logits - torch_logits(run, images)).abs().max() <= 1e-4
    assert result.inputs == [{"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert result.outputs == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]


def test_metadata_holds_class_names_and_how_to_feed_the_graph(digits_export):
    from convlens import __version__

    run, result = digits_export
    metadata = {prop.key: prop.value for prop in onnx.load(str(result.path)).metadata_props}
    assert json.loads(metadata["class_names"]) == run.class_names
    assert json.loads(metadata["input_shape"]) == [1, 8, 8]
    assert metadata["convlens_version"] == __version__
    assert metadata["model_name"] == "convnet"
    assert "[0, 1]" in metadata["input_range"] and "NCHW" in metadata["input_layout"]
    normalization = json.loads(metadata["normalization"])
    stage = dict(run.model.stages())["normalize"]
    assert normalization["mean"] == pytest.approx(stage.mean.flatten().tolist())
    assert normalization["std"] == pytest.approx(stage.std.flatten().tolist())
    assert metadata == result.metadata


def test_colour_model_round_trip_on_photos(tmp_path):
    """Three channels in their own order: scikit-image's colour photos, cut into quarters."""
    from skimage import data as photos

    from convlens.data.readers import array_to_input

    shape = (3, 32, 32)
    run = Run.open(save_untrained_run(tmp_path, "convnet", shape, ["cat", "coffee", "person", "rocket"]))
    quarters = []
    for photo in (photos.astronaut(), photos.chelsea(), photos.coffee()):  # (H, W, 3) uint8 RGB
        rows, cols = photo.shape[0] // 2, photo.shape[1] // 2
        quarters += [photo[r : r + rows, c : c + cols] for r in (0, rows) for c in (0, cols)]
    images = torch.stack(
        [array_to_input(np.ascontiguousarray(q), shape) for q in quarters]
    )  # (12, 3, 32, 32)
    assert not torch.equal(images[:, 0], images[:, 2])  # really colour: red and blue differ
    result = export_onnx(run, tmp_path / "colour.onnx")
    assert (onnx_logits(result.path, images) - torch_logits(run, images)).abs().max() <= 1e-4
    swapped = images[:, [2, 1, 0]]  # BGR: the graph must care about channel order
    assert (onnx_logits(result.path, swapped) - torch_logits(run, images)).abs().max() > 1e-3


@pytest.mark.parametrize("name", list_families())
def test_every_registered_family_exports(tmp_path, name):
    run = Run.open(save_untrained_run(tmp_path, name, (3, 16, 16), ["a", "b", "c"]))
    result = export_onnx(run, tmp_path / f"{name}.onnx")
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert (onnx_logits(result.path, images) - torch_logits(run, images)).abs().max() <= 1e-4


# ----------------------------------------------------------- models torch's exporter cannot take


class MedianDenoise(nn.Module):
    """A 3x3 median filter, the classic salt-and-pepper denoiser: ONNX has no median operator."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        padded = F.pad(pixels, (1, 1, 1, 1), mode="replicate")
        windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # (B, C, H, W, 3, 3)
        return windows.flatten(-2).median(dim=-1).values  # (B, C, H, W)


class MedianDenoiseMeanWhenExported(MedianDenoise):
    """The usual workaround: export a 3x3 mean filter in place of the median. It exports, and
    computes something else."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return F.avg_pool2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return super().forward(pixels)


DENOISERS = {"median": MedianDenoise, "mean-when-exported": MedianDenoiseMeanWhenExported}


@pytest.fixture
def unexportable(tmp_path):
    """A registered model with a first stage torch's exporter cannot reproduce; unregistered after."""
    from convlens.models import MODELS

    name = "denoised-convnet"

    @register_model(name)
    def denoised_convnet(in_shape, num_classes, mean, std, denoiser: str = "median") -> StagedModel:
        """Test-only: a denoising stage before a one-block convnet."""
        stages = [
            ("normalize", Normalize(mean, std)),
            ("denoise", DENOISERS[denoiser]()),
            ("conv1", nn.Conv2d(in_shape[0], 4, 3, padding=1)),
            ("relu1", nn.ReLU()),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(4 * in_shape[1] * in_shape[2], num_classes)),
        ]
        return StagedModel(stages, in_shape, num_classes)

    def make(denoiser: str):
        folder = tmp_path / denoiser
        return save_untrained_run(folder, name, (1, 8, 8), ["0", "1"], denoiser=denoiser)

    try:
        yield make
    finally:
        MODELS.unregister(name)


@pytest.mark.parametrize(
    ("denoiser", "reason"),
    [
        (
            "median",
            "stage 'denoise' (MedianDenoise): it uses the torch operator aten.median.dim, which has no ONNX",
        ),
        (
            "mean-when-exported",
            "stage 'denoise' (MedianDenoiseMeanWhenExported): onnxruntime's outputs differ from PyTorch's",
        ),
    ],
    ids=["no-onnx-operator", "exports-something-else"],
)
def test_unexportable_stage_is_named_and_nothing_is_written(unexportable, denoiser, reason):
    run_dir = unexportable(denoiser)
    target = run_dir / "model.onnx"
    target.write_bytes(b"the previous export")
    with pytest.raises(ConvlensError) as error:
        export_onnx(run_dir)
    message = str(error.value)
    assert message.startswith("model 'denoised-convnet' cannot be exported to ONNX: " + reason)
    assert "\n" not in message
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.json", "model.onnx", "model.safetensors"]


def test_bad_arguments_are_refused_before_the_model_loads(digits_run, tmp_path):
    for kwargs, parameter, text in [
        ({"opset": 17}, "opset", "opset must be a whole number from 18 to"),
        ({"opset": True}, "opset", "got True"),
        ({"out_file": tmp_path / "model.pt"}, "out_file", "expected a file name ending in .onnx"),
        ({"out_file": tmp_path}, "out_file", "expected a file name ending in .onnx"),
    ]:
        with pytest.raises(ConvlensError) as error:
            export_onnx(tmp_path / "no-such-run", **kwargs)  # a missing run would fail later
        assert error.value.parameter == parameter and str(error.value).startswith(parameter)
        assert text in str(error.value)
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    with pytest.raises(ConvlensError, match="is a folder"):
        export_onnx(digits_run, folder)


@pytest.mark.parametrize("package", ["onnx", "onnxruntime", "onnxscript"])
def test_a_missing_package_names_the_extra(monkeypatch, tmp_path, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(
        ConvlensError, match=rf"needs the {package} package: pip install 'convlens\[export\]'"
    ):
        export_onnx(tmp_path / "run")  # refused before the run is looked for


# ------------------------------------------------------------------------------------------ CLI


def test_cli_json_writes_into_the_run_folder_by_default(run_cli, digits_run, tmp_path):
    run_dir = shutil.copytree(digits_run, tmp_path / "run")
    code, out, err = run_cli("export", run_dir, "--format", "onnx", "--opset", "20", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["path"] == str(run_dir / "model.onnx")
    assert report["bytes"] == (run_dir / "model.onnx").stat().st_size
    assert report["opset"] == 20
    assert [e.version for e in onnx.load(report["path"]).opset_import if e.domain in ("", "ai.onnx")] == [20]
    assert report["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert report["outputs"][0]["shape"] == ["batch", 10]
    assert 0 <= report["max_abs_logit_difference"] <= 1e-4
    assert json.loads(report["metadata"]["class_names"]) == Run.open(run_dir).class_names
    assert err == ""  # torch's exporter says nothing


def test_cli_text_names_the_file_and_the_check(run_cli, digits_run, tmp_path):
    target = tmp_path / "digits.onnx"
    code, out, _ = run_cli("export", digits_run, "--out", target)
    assert code == 0
    assert f"wrote {target}" in out and "ONNX opset 18" in out
    assert "pixels float32 [batch, 1, 8, 8]" in out and "logits float32 [batch, 10]" in out
    assert "onnxruntime matches PyTorch" in out
    assert target.is_file()


def test_cli_help_has_an_example_and_the_default_opset(run_cli):
    code, out, _ = run_cli("export", "--help")
    assert code == 0
    assert "convlens export runs/mnist" in out
    assert f"default {DEFAULT_OPSET}" in out
    assert "pip install 'convlens[export]'" in out


def test_cli_errors_are_one_line(run_cli, digits_run, unexportable, tmp_path):
    cases = [
        (["export", tmp_path / "missing"], "no checkpoint here"),
        (["export", digits_run, "--format", "tflite"], "--format must be one of: onnx, got 'tflite'"),
        (["export", digits_run, "--opset", "9"], "--opset must be a whole number from 18 to"),
        (["export", digits_run, "--out", tmp_path / "model.pt"], "--out "),
        (["export", unexportable("median")], "stage 'denoise' (MedianDenoise)"),
    ]
    for args, text in cases:
        code, out, err = run_cli(*args)
        assert code == 2, (args, err)
        assert out == ""
        assert err.startswith("convlens: error: ") and text in err, err
        assert err.count("\n") == 1, err
