"""The recipe resolve_defaults picks: large data sets on the CPU, and the GPU recipe (checked on the CPU)."""

from __future__ import annotations

import pytest
import torch

from convlens.errors import ConvlensError
from convlens.models import create_model
from convlens.train import TrainConfig, resolve_defaults, train_one_epoch
from convlens.train.loop import REPORT_EVERY
from convlens.train.recipe import gpu_lr

FASHION_SIZE = 54_000  # Fashion-MNIST's training split less its validation split


def test_cpu_recipe_is_unchanged_by_the_gpu_rules_and_large_data_gets_a_hidden_layer(digits):
    for size in (1_000, 3_600, FASHION_SIZE):
        config = resolve_defaults(TrainConfig(), digits, train_images=size, device="cpu")
        assert (config.batch_size, config.lr, config.precision) == (64, 0.1, "fp32")
        assert config.weight_decay == (5e-4 if size == FASHION_SIZE else 0)
    on_cpu = resolve_defaults(TrainConfig(), digits, train_images=FASHION_SIZE, device="cpu")
    assert (on_cpu.epochs, on_cpu.augment) == (10, "none")
    assert on_cpu.model_options == {"blocks": 3, "batchnorm": True, "pool_last": False, "hidden": 64}
    assert resolve_defaults(TrainConfig(), digits).precision == "fp32"  # no device given: the CPU


def test_large_data_on_cuda_gets_a_wider_model_big_batches_a_scaled_lr_and_bf16(digits):
    config = resolve_defaults(TrainConfig(), digits, train_images=FASHION_SIZE, device="cuda")
    assert (config.batch_size, config.lr, config.precision) == (512, 0.4, "bf16")
    assert config.pct_start == 0.25  # OneCycle warms the scaled rate up over the first quarter
    assert (config.epochs, config.weight_decay, config.augment) == (14, 5e-4, digits.augmentation)
    assert config.model_options == {"blocks": 3, "batchnorm": True, "width": 64, "convs": 2}
    model = create_model(config.model, (1, 28, 28), 10, **config.model_options)
    widths = [stage.out_channels for name, stage in model.stages() if name.startswith("conv")]
    assert widths == [64, 64, 128, 128, 256, 256]


def test_small_data_on_cuda_keeps_its_batch(digits):
    config = resolve_defaults(TrainConfig(), digits, train_images=3_600, device=torch.device("cuda", 0))
    assert (config.batch_size, config.lr, config.precision, config.epochs) == (64, 0.1, "bf16", 6)


def test_what_the_user_sets_wins_on_cuda(digits):
    chosen = resolve_defaults(
        TrainConfig(batch_size=256, precision="fp32"), digits, train_images=FASHION_SIZE, device="cuda"
    )
    assert (chosen.batch_size, chosen.lr, chosen.precision) == (256, 0.2, "fp32")  # lr follows the batch
    explicit = resolve_defaults(
        TrainConfig(lr=0.05, weight_decay=0.0, augment="none", model_options={"width": 8}),
        digits,
        train_images=FASHION_SIZE,
        device="cuda",
    )
    assert (explicit.batch_size, explicit.lr, explicit.weight_decay) == (512, 0.05, 0.0)
    assert (explicit.augment, explicit.model_options) == ("none", {"width": 8})


def test_gpu_lr_is_half_the_linear_rule_and_never_below_the_cpu_rate():
    assert [gpu_lr(b) for b in (32, 64, 128, 512, 1024)] == [0.1, 0.1, 0.1, 0.4, 0.8]


@pytest.mark.parametrize(
    ("config", "parameter"),
    [
        ({"precision": "fp16"}, "precision"),
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"weight_decay": "0.1"}, "weight_decay"),
    ],
)
def test_bad_recipe_values_name_their_option(config, parameter):
    with pytest.raises(ConvlensError) as caught:
        TrainConfig(**config).check()
    assert caught.value.parameter == parameter


class _Counter:
    def __init__(self) -> None:
        self.reports = 0

    def start_epoch(self, epoch, epochs, batches):
        pass

    def batch_done(self, loss, accuracy, images_per_second):
        self.reports += 1

    def end_epoch(self, metrics):
        pass


def _one_epoch(digits, precision: str, batches: int) -> tuple[dict, _Counter]:
    torch.manual_seed(0)
    model = create_model("convnet", digits.input_shape, digits.num_classes, digits.mean, digits.std)
    model = model.to(memory_format=torch.channels_last)
    config = TrainConfig(batch_size=8, augment="none", precision=precision, lr=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    counter = _Counter()
    images, labels = digits.train_images[: 8 * batches], digits.train_labels[: 8 * batches]
    metrics = train_one_epoch(
        model, images, labels, optimizer, scheduler, config, torch.Generator().manual_seed(0), counter
    )
    return metrics, counter


def test_progress_reads_the_loss_every_10_steps_on_the_cpu(digits):
    assert REPORT_EVERY["cpu"] == 10 and REPORT_EVERY["cuda"] > REPORT_EVERY["cpu"]
    _, counter = _one_epoch(digits, "fp32", batches=25)
    assert counter.reports == 2 + 1  # after steps 10 and 20, and the epoch's total


def test_bf16_autocast_trains_when_asked_for(digits):
    metrics, _ = _one_epoch(digits, "bf16", batches=10)
    assert torch.isfinite(torch.tensor(metrics["train_loss"])) and metrics["train_accuracy"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_line_and_writes_nothing(run_cli, tmp_path):
    code, _, err = run_cli("train", "--data", "digits", "--device", "cuda", "--out", tmp_path / "run")
    errors = [line for line in err.splitlines() if line.startswith("convlens: error:")]
    assert code == 2 and errors == ["convlens: error: --device cuda: CUDA is not available on this machine"]
    assert "Traceback" not in err and not (tmp_path / "run").exists()
