"""Fine-tune from weights: ``init`` loads what fits, re-initialises the head, reports it;
``freeze_epochs`` trains the head alone first; an initialised run resumes exactly; bad ``--init``
values are one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from convlens.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from convlens.data import Dataset
from convlens.errors import ConvlensError
from convlens.models import create_model
from convlens.train import TrainConfig, fit
from convlens.train.init_weights import InitSource, describe_init, initialise
from testing_helpers import StopAfter

BACKBONE = ["body.conv1.weight", "body.conv1.bias", "body.conv2.weight", "body.conv2.bias"]


@pytest.fixture(scope="module")
def digits5(digits) -> Dataset:
    """Digits 0-4 only: 5 classes where the source run had 10, and its own normalization."""
    train, test = digits.train_labels < 5, digits.test_labels < 5
    return Dataset(
        "digits0-4",
        digits.train_images[train],
        digits.train_labels[train],
        digits.test_images[test],
        digits.test_labels[test],
        digits.class_names[:5],
    )


def _weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[1].state_dict()


def test_report_lists_loaded_reinitialised_and_skipped_exactly(digits_run, digits5, tmp_path):
    result = fit(digits5, TrainConfig(epochs=1, init=str(digits_run)), tmp_path / "run")
    fc = {"reason": "shape", "source_shape": [10, 128], "model_shape": [5, 128]}
    bias = {"reason": "shape", "source_shape": [10], "model_shape": [5]}
    assert result.init == {
        "source": str(digits_run),
        "source_model": "convnet",
        "loaded": BACKBONE,
        "reinitialised": [{"tensor": "body.fc.weight", **fc}, {"tensor": "body.fc.bias", **bias}],
        "skipped": [
            {"tensor": "body.normalize.mean", "reason": "normalization"},
            {"tensor": "body.normalize.std", "reason": "normalization"},
            {"tensor": "body.fc.weight", **fc},
            {"tensor": "body.fc.bias", **bias},
        ],
        "warm_up": ["body.fc.weight", "body.fc.bias"],
    }
    for name in ("model", "best", "last"):  # every checkpoint records it, for the faces
        assert json.loads((tmp_path / "run" / f"{name}.json").read_text())["init"] == result.init
    text = describe_init(result.init)
    assert "loaded 4 of 6 tensors" in text and "body.fc.weight (10, 128) -> (5, 128)" in text
    assert text.count("body.fc.weight") == 1  # skipped at the source and renewed here: named once
    # the new data's normalization, not the source's: in the model and in the metadata
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["normalization"]["mean"] == list(digits5.mean) != _weights(digits_run)["body.normalize.mean"]
    assert model.body.normalize.mean.flatten().tolist() == pytest.approx(list(digits5.mean))


def test_head_is_replaced_and_backbone_copied_when_classes_differ(digits_run, digits5):
    source = _weights(digits_run)
    torch.manual_seed(0)
    model = create_model("convnet", digits5.input_shape, 5, digits5.mean, digits5.std)
    torch.manual_seed(0)
    fresh = create_model("convnet", digits5.input_shape, 5, digits5.mean, digits5.std).state_dict()
    report = initialise(model, InitSource("src", source, "convnet"), "convnet")
    state = model.state_dict()
    for name in BACKBONE:
        assert torch.equal(state[name], source[name]), name
    for name in ("body.fc.weight", "body.fc.bias"):  # the fresh model's head, not a slice of the source's
        assert torch.equal(state[name], fresh[name]), name
    assert [e["tensor"] for e in report.reinitialised] == ["body.fc.weight", "body.fc.bias"]


def test_same_classes_load_everything_but_the_normalization(digits_run, digits):
    model = create_model("convnet", digits.input_shape, 10, (0.1,), (0.2,))
    report = initialise(model, InitSource("src", _weights(digits_run), "convnet"), "convnet")
    assert report.loaded == [*BACKBONE, "body.fc.weight", "body.fc.bias"]
    assert report.reinitialised == []
    assert report.warm_up == ["body.fc.weight", "body.fc.bias"]  # the last linear layer
    assert model.body.normalize.mean.flatten().tolist() == pytest.approx([0.1])


def test_bare_safetensors_file_loads_by_name_and_shape(digits_run, digits5, tmp_path):
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in _weights(digits_run).items() if "conv1" in k}, str(weights))
    result = fit(digits5, TrainConfig(epochs=1, init=str(weights)), tmp_path / "run")
    assert result.init["source_model"] is None
    assert result.init["loaded"] == ["body.conv1.weight", "body.conv1.bias"]
    missing = [e["tensor"] for e in result.init["reinitialised"] if e["reason"] == "missing"]
    assert missing == ["body.conv2.weight", "body.conv2.bias", "body.fc.weight", "body.fc.bias"]


def test_other_model_family_is_refused_naming_both(digits, digits5, tmp_path):
    other = create_model("tinyvgg", digits.input_shape, 10)
    save_checkpoint(tmp_path / "vgg" / "model", other, {"class_names": digits.class_names})
    with pytest.raises(
        ConvlensError, match=r"^init: .* holds a tinyvgg model, the new model is a convnet"
    ) as info:
        fit(digits5, TrainConfig(epochs=1, init=str(tmp_path / "vgg")), tmp_path / "run")
    assert info.value.parameter == "init"
    assert not (tmp_path / "run").exists()  # the run folder the lock made is removed again


def test_other_model_family_whose_tensors_line_up_is_accepted(digits, digits5, tmp_path):
    from convlens.models import MODELS, register_model
    from convlens.models.convnets import convnet

    @register_model("convnet-twin")
    def twin(in_shape, num_classes, mean, std):
        """The default convnet under another name: the same layers and shapes."""
        return convnet(in_shape, num_classes, mean, std)

    try:
        save_checkpoint(
            tmp_path / "twin" / "model",
            create_model("convnet-twin", digits.input_shape, 10),
            {"class_names": digits.class_names},
        )
        result = fit(digits5, TrainConfig(epochs=1, init=str(tmp_path / "twin")), tmp_path / "run")
    finally:
        MODELS.unregister("convnet-twin")
    assert result.init["source_model"] == "convnet-twin"
    assert result.init["loaded"] == BACKBONE
    assert [e["tensor"] for e in result.init["reinitialised"]] == ["body.fc.weight", "body.fc.bias"]


def test_frozen_warm_up_then_everything_and_exact_resume(digits_run, digits5, tmp_path):
    config = dict(epochs=3, init=str(digits_run), freeze_epochs=2, seed=4)
    whole = fit(digits5, TrainConfig(**config), tmp_path / "whole")
    source, cut = _weights(digits_run), tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(digits5, TrainConfig(**config), cut, observer=StopAfter(1))
    after_one = _weights(cut / "last.json")
    with pytest.raises(KeyboardInterrupt):  # resumed into the second frozen epoch
        fit(digits5, TrainConfig(), cut, resume=True, observer=StopAfter(2))
    after_two = _weights(cut / "last.json")
    for name in BACKBONE:
        assert torch.equal(after_one[name], source[name]), f"{name} changed in frozen epoch 1"
        assert torch.equal(after_two[name], source[name]), f"{name} changed in frozen epoch 2 (resumed)"
    assert not torch.equal(after_one["body.fc.weight"], after_two["body.fc.weight"])  # the head trains
    resumed = fit(digits5, TrainConfig(), cut, resume=True)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in whole.history]
    last_whole, last_cut = _weights(tmp_path / "whole" / "last.json"), _weights(cut / "last.json")
    for name, tensor in last_whole.items():
        assert torch.equal(tensor, last_cut[name]), name
    for name in BACKBONE:  # epoch 3 trained everything
        assert not torch.equal(last_whole[name], source[name]), f"{name} still frozen after the warm-up"
    assert resumed.init == whole.init


def test_warm_up_keeps_the_schedule(digits_run, digits5, tmp_path):
    """The learning rates of a run with a frozen warm-up are those of one without."""
    plain = fit(digits5, TrainConfig(epochs=2, init=str(digits_run)), tmp_path / "plain")
    frozen = fit(digits5, TrainConfig(epochs=2, init=str(digits_run), freeze_epochs=1), tmp_path / "frozen")
    assert [r["lr"] for r in frozen.history] == [r["lr"] for r in plain.history]
    assert frozen.history[0]["train_loss"] != plain.history[0]["train_loss"]


def _bad_inputs(tmp_path, digits_run):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04pickle")
    return [
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path / "empty", "is not a convlens run"),
        (tmp_path / "notes.txt", "is not a run folder or a weights file"),
        (tmp_path / "broken.safetensors", "not a valid safetensors file"),
        (tmp_path / "model.pt", "refusing a pickle file"),
    ]


def test_bad_init_is_one_line_and_writes_nothing(tmp_path, digits_run, run_cli):
    for path, message in _bad_inputs(tmp_path, digits_run):
        out = tmp_path / "out"
        code, _, stderr = run_cli("train", "--data", "digits", "--init", path, "--out", out)
        assert code == 2, (path, stderr)
        assert stderr.strip().count("\n") == 0 and stderr.startswith("convlens: error: --init: "), stderr
        assert message in stderr, stderr
        assert not out.exists()


def test_bad_init_in_the_library_names_the_parameter(tmp_path, digits, digits_run):
    for path, message in _bad_inputs(tmp_path, digits_run):
        with pytest.raises(ConvlensError, match=f"^init: .*{message}") as info:
            fit(digits, TrainConfig(init=str(path)), tmp_path / "run")
        assert info.value.parameter == "init"
        assert not (tmp_path / "run").exists()
    with pytest.raises(ConvlensError, match="^freeze_epochs needs init=") as info:
        TrainConfig(freeze_epochs=2).check()
    with pytest.raises(ConvlensError, match="^freeze_epochs must be 0 or"):
        TrainConfig(init=str(digits_run), freeze_epochs=-1).check()


def test_cli_prints_the_report_on_stderr_and_in_json(tmp_path, digits_run, run_cli):
    code, stdout, stderr = run_cli(
        "train", "--data", "digits", "--epochs", "1", "--init", digits_run, "--freeze-epochs", "1",
        "--out", tmp_path / "run", "--json", "--no-snapshots",
    )  # fmt: skip
    assert code == 0, stderr
    assert "loaded 6 of 6 tensors" in stderr
    report = json.loads(stdout)["init"]
    assert report["loaded"][-2:] == ["body.fc.weight", "body.fc.bias"]
    code, _, stderr = run_cli("train", "--data", "digits", "--freeze-epochs", "2", "--out", tmp_path / "x")
    assert code == 2 and "--freeze-epochs needs --init RUN_OR_WEIGHTS" in stderr
