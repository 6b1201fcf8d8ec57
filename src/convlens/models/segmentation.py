"""Fully convolutional families for segmentation: a U-Net and a plain FCN, a class score per pixel.

Both are written as graph descriptions (``convlens.models.graph_spec``) and built by
``GraphModel``, so every stage — each convolution, ReLU, pooling, transposed convolution,
upsampling and skip concatenation — is a stage the inside view names, with the tensors it
reads: the explorer draws the U-Net's skip connections as it draws a ResNet's, receptive
fields walk through both branches, and cell arithmetic covers the decoder. The output is
``(B, classes, H, W)`` logits at the input's size: a softmax over classes at every pixel.

The U-Net follows Ronneberger et al. (2015) at laptop scale: ``depth`` levels of
(conv3x3-BN-ReLU) x 2 then 2x2 max-pooling, a bottom level, and a decoder that doubles the
size with a 2x2 transposed convolution, concatenates the encoder's map of that size (the skip
connection that brings back the detail pooling threw away) and convolves twice more; a 1x1
convolution gives the class scores. Odd sides are kept exact: the transposed convolution's
``output_padding`` restores the pixel a floor-dividing pool dropped, so any image size works.
The FCN (Long et al., 2015) has no decoder: the encoder's coarse class scores are upsampled
bilinearly to the input's size, which is why its masks are blobby — the contrast the skip
connections exist to fix.
"""

from __future__ import annotations

from convlens.errors import ConvlensError
from convlens.models._registry import register_model
from convlens.models.graph_model import GraphModel
from convlens.models.graph_spec import GRAPH_FORMAT, INPUT

SEGMENTATION = "segmentation"


class _Graph:
    """Writes a graph description stage by stage; ``last`` is the stage written most recently."""

    def __init__(self) -> None:
        self.modules: dict[str, dict] = {}
        self.stages: list[dict] = []
        self.last = INPUT

    def layer(self, name: str, kind: str, reads: list[str] | None = None, **args) -> str:
        """A stage with weights (a module of its own, its weights under ``name``)."""
        self.modules[name] = {"type": kind, "args": args}
        self.stages.append({"name": name, "module": name, "reads": reads or [self.last]})
        self.last = name
        return name

    def step(self, name: str, kind: str, reads: list[str] | None = None, **args) -> str:
        """A stage without weights (ReLU, pooling, upsampling, concatenation)."""
        self.stages.append({"name": name, "type": kind, "args": args, "reads": reads or [self.last]})
        self.last = name
        return name

    def conv_bn_relu(
        self, prefix: str, index: int, in_channels: int, out_channels: int, batchnorm: bool
    ) -> str:
        self.layer(
            f"{prefix}.conv{index}", "Conv2d", in_channels=in_channels, out_channels=out_channels,
            kernel_size=3, padding=1, bias=not batchnorm,
        )  # fmt: skip
        if batchnorm:
            self.layer(f"{prefix}.bn{index}", "BatchNorm2d", num_features=out_channels)
        return self.step(f"{prefix}.relu{index}", "ReLU")

    def block(self, prefix: str, in_channels: int, out_channels: int, convs: int, batchnorm: bool) -> str:
        for index in range(1, convs + 1):
            self.conv_bn_relu(
                prefix, index, in_channels if index == 1 else out_channels, out_channels, batchnorm
            )
        return self.last

    def description(self) -> dict:
        return {"format": GRAPH_FORMAT, "modules": self.modules, "stages": self.stages, "output": self.last}


def _sides(in_shape, depth: int, model: str) -> list[tuple[int, int]]:
    """The map size at each level: level 0 is the image, each pooling halves (floor) the last."""
    sides = [tuple(in_shape[1:])]
    for _ in range(depth):
        height, width = sides[-1]
        sides.append((height // 2, width // 2))
    if min(sides[-1]) < 1:
        raise ConvlensError(
            f"image_size: a {in_shape[1]}x{in_shape[2]} image is too small for a depth-{depth} {model}: "
            f"{depth} poolings shrink it to nothing; use larger images or depth={_max_depth(in_shape)}",
            parameter="image_size",
        )
    return sides


def _max_depth(in_shape) -> int:
    side, depth = min(in_shape[1:]), 0
    while side >= 2:
        side, depth = side // 2, depth + 1
    return max(depth, 1)


def unet_graph(in_shape, num_classes: int, width: int, depth: int, convs: int, batchnorm: bool) -> dict:
    """The U-Net's graph description (see the module docstring)."""
    sides = _sides(in_shape, depth, "U-Net")
    graph, skips, channels = _Graph(), [], in_shape[0]
    for level in range(1, depth + 1):
        skips.append(graph.block(f"enc{level}", channels, width * 2 ** (level - 1), convs, batchnorm))
        channels = width * 2 ** (level - 1)
        graph.step(f"pool{level}", "MaxPool2d", kernel_size=2)
    graph.block("bottom", channels, width * 2**depth, convs, batchnorm)
    channels = width * 2**depth
    for level in range(depth, 0, -1):
        out_channels = width * 2 ** (level - 1)
        height, width_side = sides[level - 1]
        graph.layer(
            f"up{level}", "ConvTranspose2d", in_channels=channels, out_channels=out_channels,
            kernel_size=2, stride=2, output_padding=[height % 2, width_side % 2],
        )  # fmt: skip
        graph.step(f"cat{level}", "Concat", reads=[f"up{level}", skips[level - 1]], dim=1)
        graph.block(f"dec{level}", 2 * out_channels, out_channels, convs, batchnorm)
        channels = out_channels
    graph.layer("head", "Conv2d", in_channels=channels, out_channels=num_classes, kernel_size=1)
    return graph.description()


def fcn_graph(in_shape, num_classes: int, width: int, depth: int, batchnorm: bool) -> dict:
    """The FCN's graph description: an encoder, 1x1 class scores, bilinear upsampling to the image."""
    _sides(in_shape, depth, "FCN")
    graph, channels = _Graph(), in_shape[0]
    for level in range(1, depth + 1):
        out_channels = width * 2 ** (level - 1)
        graph.conv_bn_relu(f"block{level}", 1, channels, out_channels, batchnorm)
        graph.step(f"pool{level}", "MaxPool2d", kernel_size=2)
        channels = out_channels
    graph.conv_bn_relu("block_last", 1, channels, channels, batchnorm)
    graph.layer("score", "Conv2d", in_channels=channels, out_channels=num_classes, kernel_size=1)
    graph.step("upsample", "Upsample", size=list(in_shape[1:]), mode="bilinear", align_corners=False)
    return graph.description()


def _segmentation_model(graph: dict, in_shape, num_classes, mean, std) -> GraphModel:
    model = GraphModel(graph, in_shape, num_classes, mean, std)
    model.task = SEGMENTATION
    return model


@register_model(
    "unet",
    limits={"width": (1, 256), "depth": (1, 5), "convs": (1, 3)},
    task=SEGMENTATION,
)
def unet(
    in_shape, num_classes, mean, std, width: int = 12, depth: int = 3, convs: int = 2, batchnorm: bool = True
):
    """U-Net for segmentation: an encoder, a decoder with skip connections, a class score per pixel."""
    return _segmentation_model(
        unet_graph(in_shape, num_classes, width, depth, convs, batchnorm), in_shape, num_classes, mean, std
    )


@register_model("fcn", limits={"width": (1, 256), "depth": (1, 5)}, task=SEGMENTATION)
def fcn(in_shape, num_classes, mean, std, width: int = 16, depth: int = 3, batchnorm: bool = True):
    """Plain FCN for segmentation: coarse class scores upsampled to the image (no skip connections)."""
    return _segmentation_model(
        fcn_graph(in_shape, num_classes, width, depth, batchnorm), in_shape, num_classes, mean, std
    )
