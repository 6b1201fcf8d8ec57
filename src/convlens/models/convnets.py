"""Plain convolutional families: convnet (the fast default), Tiny VGG and LeNet-5."""

from __future__ import annotations

from torch import nn

from convlens.models._registry import Normalize, StagedModel, flat_features, register_model


def _conv_block(
    index: int, in_channels: int, out_channels: int, batchnorm: bool, pool: bool, stride: int = 1
) -> list:
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batchnorm)
    stages = [(f"conv{index}", conv)]
    if batchnorm:
        stages.append((f"bn{index}", nn.BatchNorm2d(out_channels)))
    stages.append((f"relu{index}", nn.ReLU()))
    if pool:
        stages.append((f"pool{index}", nn.MaxPool2d(2)))
    return stages


@register_model(
    "convnet",
    limits={
        "width": (1, 1024),
        "blocks": (1, 8),
        "convs": (1, 4),
        "hidden": (0, 4096),
        "stem_stride": (1, 2),
    },
)
def convnet(
    in_shape,
    num_classes,
    mean,
    std,
    width: int = 16,
    blocks: int = 2,
    batchnorm: bool = False,
    pool: bool = True,
    convs: int = 1,
    pool_last: bool = True,
    hidden: int = 0,
    stem_stride: int = 1,
) -> StagedModel:
    """Fast default: blocks of conv3x3 (+ optional BatchNorm) + ReLU + max-pool, channels doubling, then a linear layer.

    BatchNorm is off by default: on mnist5k it costs 1.3x per epoch on 2 cores and reached
    98 % later, not sooner (bench/train_speed.py); turn it on with ``batchnorm=True``
    (``--model-option batchnorm=true``) for deeper or wider variants. ``convs`` stacks that many
    convolutions per block before its pooling (VGG style; the GPU recipe for large data sets uses
    2 at width 64). Stages are numbered by convolution: conv1, conv2, then pool2 after a block of two.

    ``stem_stride=2`` makes the first convolution move two pixels at a time, which does the first
    block's downsampling instead of its pooling: every later stage of that block then works on a
    quarter of the pixels. ``pool_last=False`` keeps the last block's resolution for the
    classifier, and ``hidden`` puts a fully connected layer of that many units (fc1, relu_fc1)
    before the output layer: together they are the CPU recipe for large data sets, 64 x 7 x 7
    features into 64 units (+0.7 points on Fashion-MNIST in the same training time,
    bench/README.md).
    """
    stages: list = [("normalize", Normalize(mean, std))]
    channels, size, index = in_shape[0], min(in_shape[1:]), 0
    for block in range(blocks):
        out_channels = width * 2**block
        strided = block == 0 and stem_stride > 1  # the stem's stride downsamples this block
        use_pool = pool and not strided and size >= 2 and (pool_last or block < blocks - 1)  # 8x8: 3 pools
        for layer in range(convs):
            index += 1
            stride = stem_stride if index == 1 else 1
            stages += _conv_block(
                index, channels, out_channels, batchnorm, use_pool and layer == convs - 1, stride
            )
            channels = out_channels
        size = (size + 1) // 2 if strided else size // 2 if use_pool else size
    stages.append(("flatten", nn.Flatten()))
    if hidden:
        stages += [("fc1", nn.Linear(flat_features(stages, in_shape), hidden)), ("relu_fc1", nn.ReLU())]
    stages.append(("fc", nn.Linear(hidden or flat_features(stages, in_shape), num_classes)))
    return StagedModel(stages, in_shape, num_classes)


@register_model("tinyvgg", limits={"channels": (1, 1024), "padding": (0, 2)})
def tinyvgg(in_shape, num_classes, mean, std, channels: int = 10, padding: int = 1) -> StagedModel:
    """CNN Explainer's Tiny VGG: (conv3x3-ReLU-conv3x3-ReLU-maxpool) x 2, then a linear layer."""
    stages: list = [("normalize", Normalize(mean, std))]
    in_channels = in_shape[0]
    for block in range(2):
        for i in (1, 2):
            index = 2 * block + i
            stages.append((f"conv{index}", nn.Conv2d(in_channels, channels, 3, padding=padding)))
            stages.append((f"relu{index}", nn.ReLU()))
            in_channels = channels
        stages.append((f"pool{block + 1}", nn.MaxPool2d(2)))
    stages.append(("flatten", nn.Flatten()))
    stages.append(("fc", nn.Linear(flat_features(stages, in_shape), num_classes)))
    return StagedModel(stages, in_shape, num_classes)


@register_model("lenet5")
def lenet5(in_shape, num_classes, mean, std) -> StagedModel:
    """LeCun's LeNet-5: conv5x5(6)-pool-conv5x5(16)-pool-fc120-fc84 (same-padding on inputs under 28 px)."""
    pooled = min(in_shape[1:]) // 2
    stages: list = [
        ("normalize", Normalize(mean, std)),
        ("conv1", nn.Conv2d(in_shape[0], 6, 5, padding=2)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.AvgPool2d(2)),
        # the classic valid 5x5 needs a 10-pixel map; smaller inputs keep their size instead
        ("conv2", nn.Conv2d(6, 16, 5, padding=0 if pooled >= 10 else 2)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
    ]
    stages.append(("fc1", nn.Linear(flat_features(stages, in_shape), 120)))
    stages += [
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)),
        ("relu4", nn.ReLU()),
        ("fc", nn.Linear(84, num_classes)),
    ]
    return StagedModel(stages, in_shape, num_classes)


@register_model("mlp", limits={"hidden": (2, 65536)})
def mlp(in_shape, num_classes, mean, std, hidden: int = 256) -> StagedModel:
    """Dense baseline: flatten the image, two hidden layers, no convolution (for comparison)."""
    features = in_shape[0] * in_shape[1] * in_shape[2]
    stages = [
        ("normalize", Normalize(mean, std)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(features, hidden)),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(hidden, hidden // 2)),
        ("relu2", nn.ReLU()),
        ("fc", nn.Linear(hidden // 2, num_classes)),
    ]
    return StagedModel(stages, in_shape, num_classes)
