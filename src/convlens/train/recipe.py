"""The training recipe: every setting of a run, and the defaults chosen from the data.

Measured in bench/train_speed.py and bench/own_folder.py: the whole data set lives in one
tensor and is shuffled with a seeded generator (no per-sample DataLoader), a random affine
per image is applied to each batch in one grid_sample call, channels_last memory, SGD with
Nesterov momentum under a OneCycle schedule, and cross-entropy with label smoothing.

On a CUDA device a large data set trains a wider VGG-style convnet in batches of 512 at a
higher peak learning rate, with the data set's augmentation and weight decay, and every run
under bf16 autocast; the CPU keeps fp32 (bf16 is 5x slower there, emulated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from convlens.data import Dataset
from convlens.data.transforms import AUGMENTATIONS
from convlens.errors import ConvlensError

LARGE_DATASET = 20_000  # training images above which the big-data recipe applies
SMALL_DATASET = 2_000  # training images up to which a schedule counts optimizer steps, not epochs
MIN_STEPS = 460  # optimizer steps a small data set gets at least (digits: 23 steps x 20 epochs)
MAX_SMALL_EPOCHS = 100  # a 120-image folder: 100 short epochs, not 230 (early stopping may end sooner)
TINY_DATASET = 500  # up to here, batches of 32: twice the steps per epoch, half the epochs
MAX_SEED = 2**63 - 1
MIN_VALIDATION_TO_STOP = 100  # validation images early stopping needs to tell a plateau from noise
BASE_LR = 0.1  # OneCycle peak learning rate at batch 64 (the CPU recipe)
BASE_BATCH = 64
CUDA_BATCH = 512  # large data sets on a GPU: 8x fewer steps, each one still cheap for the card
CUDA_EPOCHS = 14  # large data sets on a GPU
LARGE_EPOCHS = 10  # large data sets on the CPU (Fashion-MNIST: 9 spread wider, 92.8-93.4 %)
CUDA_MODEL_OPTIONS = {"blocks": 3, "batchnorm": True, "width": 64, "convs": 2}  # 64-64p-128-128p-256-256p
# large data sets on the CPU: 16p-32p-64, then 64x7x7 features into a hidden layer of 64 units
LARGE_MODEL_OPTIONS = {"blocks": 3, "batchnorm": True, "pool_last": False, "hidden": 64}
LARGE_WEIGHT_DECAY = 5e-4  # every large data set; small ones need none (label smoothing regularizes)
PRECISIONS = ("auto", "fp32", "bf16")
# segmentation (bench/segmentation.py, bench/README.md): the U-Net family's defaults (width 12,
# depth 3), batches of 16, OneCycle to 0.1, 26 epochs
SEGMENTATION_BATCH = 16
SEGMENTATION_LR = 0.1
SEGMENTATION_EPOCHS = 26
SEGMENTATION_STEPS = 400


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in every checkpoint."""

    model: str = "convnet"  # a registered model name
    model_options: dict = field(default_factory=dict)  # extra constructor options, e.g. {"width": 32}
    epochs: int | None = None  # None: chosen by data set size (see resolve_defaults)
    batch_size: int | None = None  # None: 64, 32 for tiny folders, 512 for large data on a GPU
    lr: float | None = None  # OneCycle peak learning rate for SGD; None: 0.1, scaled with a GPU batch
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float | None = None  # None: 5e-4 above 20k images, else 0 (label smoothing regularizes)
    label_smoothing: float = 0.1  # +0.6 points on mnist5k
    augment: str = "auto"  # auto | affine | flip-shift | shift | none (see data.transforms.AUGMENTATIONS)
    pct_start: float = 0.25  # fraction of steps spent warming the learning rate up
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto: bf16 on CUDA, fp32 on the CPU
    eval_batch_size: int = 100  # batch 100 evaluates 2-5x faster than one big batch on CPU
    validation_fraction: float = 0.1  # carved from the training split; every decision uses it
    early_stopping: int | None = None  # patience in epochs; None: chosen by schedule length, 0: off
    max_seconds: float | None = None  # a time budget: stop after the epoch that passes it
    snapshots: bool = True  # first-layer kernels and probe feature maps per epoch (train.snapshots)
    init: str | None = None  # a run folder or .safetensors to start from (train.init_weights)
    freeze_epochs: int = 0  # with init: epochs that train only the head before everything trains

    def check(self) -> None:
        """Reject values training cannot use, naming the option."""
        from convlens.models import check_model_options, list_models

        if self.model not in list_models():
            raise ConvlensError(
                f"model: unknown model {self.model!r}; choose one of: {', '.join(list_models())}",
                parameter="model",
            )
        check_model_options(self.model, self.model_options)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        if self.eval_batch_size is None:
            raise ConvlensError(
                "eval_batch_size must be a positive integer, got None", parameter="eval_batch_size"
            )
        for name, bounds, low_ok in (("momentum", "[0, 1)", True), ("pct_start", "(0, 1)", False)):
            value = getattr(self, name)  # SGD's and OneCycleLR's ranges
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not (0 < value < 1 or (low_ok and value == 0)):
                raise ConvlensError(f"{name} must be a number in {bounds}, got {value!r}", parameter=name)
        if self.lr is not None and not (
            isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0
        ):
            raise ConvlensError(f"lr must be a positive number, got {self.lr}", parameter="lr")
        if self.augment != "auto" and self.augment not in AUGMENTATIONS:
            raise ConvlensError(
                f"augment must be auto or one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}",
                parameter="augment",
            )
        if self.weight_decay is not None and not (
            isinstance(self.weight_decay, int | float)
            and not isinstance(self.weight_decay, bool)
            and math.isfinite(self.weight_decay)
            and self.weight_decay >= 0
        ):
            raise ConvlensError(
                f"weight_decay must be a number >= 0, got {self.weight_decay!r}", parameter="weight_decay"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ConvlensError(
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}", parameter="label_smoothing"
            )
        if self.precision not in PRECISIONS:
            raise ConvlensError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                parameter="precision",
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConvlensError(f"device must be auto, cpu or cuda, got {self.device!r}", parameter="device")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConvlensError(
                f"seed must be a whole number 0..2**63-1, got {self.seed!r}", parameter="seed"
            )
        if not 0 <= self.validation_fraction < 0.5:
            raise ConvlensError(
                f"validation_fraction must be in [0, 0.5), got {self.validation_fraction}",
                parameter="validation_fraction",
            )
        if self.early_stopping is not None and (
            not isinstance(self.early_stopping, int) or self.early_stopping < 0
        ):
            raise ConvlensError(
                f"early_stopping must be 0 (off) or a number of epochs, got {self.early_stopping!r}",
                parameter="early_stopping",
            )
        if self.max_seconds is not None and not (
            isinstance(self.max_seconds, int | float)
            and math.isfinite(self.max_seconds)
            and self.max_seconds > 0
        ):
            raise ConvlensError(
                f"max_seconds must be a positive number of seconds, got {self.max_seconds!r}",
                parameter="max_seconds",
            )
        self._check_init()

    def _check_init(self) -> None:
        from convlens.train.init_weights import check_init

        self.init = check_init(self.init)  # a path as text: the config is stored as JSON
        if (
            isinstance(self.freeze_epochs, bool)
            or not isinstance(self.freeze_epochs, int)
            or self.freeze_epochs < 0
        ):
            raise ConvlensError(
                f"freeze_epochs must be 0 or a number of epochs, got {self.freeze_epochs!r}",
                parameter="freeze_epochs",
            )
        if self.freeze_epochs and self.init is None:
            raise ConvlensError(
                "freeze_epochs needs init=RUN_OR_WEIGHTS: a random backbone is not worth freezing",
                parameter="freeze_epochs",
            )
        if self.model == "graph" and "graph" not in self.model_options:
            from convlens.train.init_weights import graph_of_init

            # an imported model trains on as itself: its layers come from the run it starts from
            self.model_options = {**self.model_options, "graph": graph_of_init(self.init)}


def _positive_int(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConvlensError(f"{name} must be a positive integer, got {value}", parameter=name)


def resolve_defaults(
    config: TrainConfig,
    dataset: Dataset,
    train_images: int | None = None,
    validation_images: int = 0,
    device: torch.device | str | None = None,
) -> TrainConfig:
    """Fill the settings left on "auto" with the recipe measured best for this data.

    ``train_images`` is how many images the optimizer sees (the training split less the
    validation split); by default the whole training split. ``device`` is where training runs
    (None: the CPU); a CUDA device gets the GPU recipe below.

    - Up to 2k images (digits, a clinic's folder): count optimizer steps, not epochs — at least
      460 steps, at most 100 epochs; batches of 32 up to 500 images.
    - Up to 20k (mnist5k): 6 epochs (5 reached 98 % on mnist5k in 5 of 7 seeds once 10 % went to
      validation; 6 in 7 of 7, as fast as 5 epochs on all the data: bench/README.md).
    - Above 20k (Fashion-MNIST's 60k): 10 epochs, a 3-block convnet with BatchNorm whose last
      block keeps its 7x7 maps (no third pooling) for a hidden fully connected layer of 64
      units, weight decay 5e-4, no augmentation (it cost 0.1-2 points in every configuration
      measured). On Fashion-MNIST 93.07-93.14 % in 6 runs, where the plain 3-block convnet gave
      92.2-92.6 %, at 1.1x its time per step (bench/README.md): dropping the last pooling saves
      most of what the hidden layer costs. 9 epochs spread wider (92.77-93.43 %). A 256-unit
      layer gave 93.2-93.5 % but trained 1.5x slower on 2 cores (its 800k weights make every
      optimizer step long); stride-2 stems, dropout and batch 128 were no better.
    - Colour photos up to 20k images: the convnet with BatchNorm (without it a small RGB folder
      collapsed to mostly-dead ReLUs) and mirror-plus-shift augmentation.
    - Early stopping (on the validation score) with a patience of a fifth of the schedule, at
      least 10 epochs — when the validation split has at least 100 images. On a smaller one the
      score is too noisy to stop on (on 10-image splits it stopped drawn-shape runs at 62-88 %
      where the full 100 epochs reached 88-96 %, bench/own_folder.py), so the capped schedule
      is the budget.
    - On a CUDA device, a large data set: a GPU runs a small network far below its capacity and
      pays per step, not per FLOP (on an H200 the previous CPU convnet trained at 114k img/s and one
      with 45x its FLOPs at 77k img/s, bench/README.md). So it gets the capacity the CPU cannot
      afford: the convnet with two 3x3 convolutions per block at width 64 (64-64p-128-128p-
      256-256p), 14 epochs in batches of 512 with a peak learning rate scaled with the batch
      (``gpu_lr``, warmed up by OneCycle over the first quarter of the steps), the data set's own
      augmentation and weight decay 5e-4: 94.1 % on Fashion-MNIST in 8.1 s of training on an
      H200, where the previous CPU recipe there gave 92.0 % in 4.8 s. Every CUDA run uses bf16
      autocast; the CPU keeps fp32 and batch 64.
    """
    size = int(train_images if train_images is not None else dataset.train_labels.shape[0])
    if dataset.is_segmentation:
        return _segmentation_defaults(config, dataset, size, validation_images, device)
    large = size > LARGE_DATASET
    photos = dataset.input_shape[0] == 3 and not large
    on_gpu = device is not None and torch.device(device).type == "cuda"
    gpu_large = on_gpu and large
    if config.batch_size is None:
        config.batch_size = CUDA_BATCH if gpu_large else 32 if size <= TINY_DATASET else BASE_BATCH
    if config.lr is None:
        config.lr = gpu_lr(config.batch_size) if on_gpu else BASE_LR
    if config.precision == "auto":
        config.precision = "bf16" if on_gpu else "fp32"
    if config.epochs is None:
        steps_per_epoch = math.ceil(size / config.batch_size)
        # a small folder still needs a few hundred optimizer steps: 48 images at batch 64 is one
        # step an epoch, so count epochs from steps there (digits: 23 steps x 20 epochs)
        small = min(max(20, math.ceil(MIN_STEPS / steps_per_epoch)), MAX_SMALL_EPOCHS)
        config.epochs = (
            small if size <= SMALL_DATASET else CUDA_EPOCHS if gpu_large else LARGE_EPOCHS if large else 6
        )
    if config.augment == "auto":
        chosen = dataset.augmentation or "shift"
        config.augment = (
            "none" if large and not gpu_large else ("flip-shift" if photos and chosen == "shift" else chosen)
        )
    if config.model == "convnet" and not config.model_options:
        if gpu_large:
            config.model_options = dict(CUDA_MODEL_OPTIONS)
        elif large:
            config.model_options = dict(LARGE_MODEL_OPTIONS)
        elif photos:
            config.model_options = {"batchnorm": True}
    if config.weight_decay is None:
        config.weight_decay = LARGE_WEIGHT_DECAY if large else 0.0
    if config.early_stopping is None:
        config.early_stopping = (
            max(10, config.epochs // 5) if validation_images >= MIN_VALIDATION_TO_STOP else 0
        )
    return config


def _segmentation_defaults(
    config: TrainConfig, dataset: Dataset, size: int, validation_images: int, device
) -> TrainConfig:
    """Segmentation data: a U-Net (the default ``convnet`` is a classifier), the data set's own
    augmentation or shifts (applied to each image and its mask alike), no weight decay, and at
    least ``SEGMENTATION_STEPS`` optimizer steps (a small folder gets more epochs, up to 100).

    Measured on ``scenes`` (bench/README.md): the plateau is capacity, not data — a width-8 U-Net
    stops near 0.78 mean IoU however long it trains, shift or affine augmentation lowered it
    (0.745), and a fourth level did not help (0.776); smaller batches reached a score in less
    time (batch 16 vs 32: 0.77 in 65 s vs 87 s). Width 12 at batch 16 (seeds 0 and 1): 0.815 and
    0.790 after 20 epochs (100 s), 0.811 and 0.7998 after 24, 0.815 (seed 1) after 26."""
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if config.model == "convnet" and not config.model_options:
        config.model = "unet"
    if config.batch_size is None:
        config.batch_size = SEGMENTATION_BATCH
    if config.lr is None:
        config.lr = SEGMENTATION_LR
    if config.precision == "auto":
        config.precision = "bf16" if on_gpu else "fp32"
    if config.epochs is None:
        steps_per_epoch = math.ceil(size / config.batch_size)
        config.epochs = min(
            max(SEGMENTATION_EPOCHS, math.ceil(SEGMENTATION_STEPS / steps_per_epoch)), MAX_SMALL_EPOCHS
        )
    if config.augment == "auto":  # shifts keep any mask's labels (the edges it pulls in are ignored)
        config.augment = dataset.augmentation or "shift"
    if config.weight_decay is None:
        config.weight_decay = 0.0
    config.label_smoothing = 0.0  # not used: it would blur the boundaries the masks are exact about
    if config.early_stopping is None:
        config.early_stopping = (
            max(10, config.epochs // 5) if validation_images >= MIN_VALIDATION_TO_STOP else 0
        )
    return config


def gpu_lr(batch_size: int) -> float:
    """Peak learning rate for a batch on a GPU: half the linear scaling rule, never below 0.1.

    The linear rule (lr in proportion to the batch, with a warm-up) would give 0.8 at batch 512;
    0.4 is the point measured on a GPU (the large recipe above at batch 512: 94.1 %; at batch 1024
    and 0.8, 16 or 20 epochs: 93.2-93.8 %; the previous 3-block convnet at 512 and 0.4: 91.8-92.0 %).
    """
    return max(BASE_LR, BASE_LR * batch_size / (2 * BASE_BATCH))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConvlensError(f"device {name}: CUDA is not available on this machine", parameter="device")
    return torch.device(name)


def warmup_fraction(pct_start: float, total_steps: int) -> float:
    """``pct_start`` as OneCycleLR can take it for ``total_steps`` steps.

    OneCycleLR divides by ``pct_start * total_steps - 1``: a warm-up of exactly one step (4 steps
    at 0.25) raises ZeroDivisionError. Such a schedule starts at its peak instead (half a step of
    warm-up, which no step falls in); every other schedule is left as it is."""
    if pct_start * total_steps == 1:
        return 0.5 / total_steps
    return pct_start
