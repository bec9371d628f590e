"""The classic cross-architecture evaluation nets of the DC/DSA/DM papers: LeNet, AlexNet, VGG11, MLP.

Layer sizes follow the reference `networks.py` of the dataset-condensation papers. The reference
ties the extra padding of the first convolution to 1-channel inputs; here it is tied to the
input size instead (28x28 behaves as 32x32), so 1- and 3-channel data of either size work.

`feature_maps` returns one map per convolution layer: the output of conv -> (norm) -> act,
taken after the pooling layer that directly follows it, if any.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import BlockNet, Net, conv_out, first_pad_extra, norm_layer, require_size
from .registry import check_choice, register


def _conv_block(
    in_ch: int, out_ch: int, kernel: int, padding: int, norm: str, pool: bool
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=padding)]
    if norm != "none":
        layers.append(norm_layer(norm, out_ch))
    layers.append(nn.ReLU())
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _build_blocks(
    net: BlockNet, name: str, spec: Sequence[tuple[int, int, int, bool]], norm: str
) -> tuple[int, int, int]:
    """Fill `net.blocks` from (out_channels, kernel, padding, pool_after); return (C, H, W) at the end."""
    h, w = net.im_size
    in_ch = net.channels
    blocks = []
    for i, (out_ch, kernel, pad, pool) in enumerate(spec):
        pad += first_pad_extra(net.im_size) if i == 0 else 0
        h, w = conv_out(h, kernel, pad), conv_out(w, kernel, pad)
        require_size(name, (h, w), net.im_size)
        if pool:
            h, w = h // 2, w // 2
            require_size(name, (h, w), net.im_size)
        blocks.append(_conv_block(in_ch, out_ch, kernel, pad, norm, pool))
        in_ch = out_ch
    net.blocks = nn.ModuleList(blocks)
    return in_ch, h, w


class LeNet(BlockNet):
    """conv5(6) -> relu -> maxpool -> conv5(16) -> relu -> maxpool -> fc120 -> fc84 -> classifier.

    `embed_dim` = 84; two feature maps.
    """

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__(channels, num_classes, im_size)
        c, h, w = _build_blocks(self, "lenet", [(6, 5, 0, True), (16, 5, 0, True)], "none")
        self.head = nn.Sequential(nn.Linear(c * h * w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.embed_dim = 84
        self.classifier = nn.Linear(84, num_classes)


class AlexNet(BlockNet):
    """The small AlexNet of the DC papers: conv 128-192-256-192-192 with 3 max pools, linear classifier.

    `embed_dim` = 192 * 4 * 4 for 28/32 inputs; five feature maps.
    """

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__(channels, num_classes, im_size)
        spec = [(128, 5, 2, True), (192, 5, 2, True), (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True)]
        c, h, w = _build_blocks(self, "alexnet", spec, "none")
        self.head = nn.Identity()
        self.embed_dim = c * h * w
        self.classifier = nn.Linear(self.embed_dim, num_classes)


VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(BlockNet):
    """VGG11 with a norm after every conv (instance norm as in the DC papers, or batch norm).

    `embed_dim` = 512 for 28/32 inputs; eight feature maps (one per conv).
    """

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], *, norm: str = "instance") -> None:
        super().__init__(channels, num_classes, im_size)
        self.norm = check_choice("norm", norm, ("instance", "batch"), {"instancenorm": "instance", "batchnorm": "batch"})
        spec = []
        for i, v in enumerate(VGG11_CFG):
            if v != "M":
                pool = i + 1 < len(VGG11_CFG) and VGG11_CFG[i + 1] == "M"
                spec.append((int(v), 3, 1, pool))
        c, h, w = _build_blocks(self, "vgg11", spec, self.norm)
        self.head = nn.Identity()
        self.embed_dim = c * h * w
        self.classifier = nn.Linear(self.embed_dim, num_classes)


class MLP(Net):
    """flatten -> fc128 -> relu -> fc128 -> relu -> classifier. No spatial features."""

    has_spatial_features = False

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__(channels, num_classes, im_size)
        self.head = nn.Sequential(
            nn.Linear(channels * im_size[0] * im_size[1], 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU()
        )
        self.embed_dim = 128
        self.classifier = nn.Linear(128, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.head(x.flatten(1))

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        raise ValueError("mlp has no convolutional blocks / spatial features; use a convolutional network such as convnet")


@register("lenet")
def lenet(channels: int, num_classes: int, im_size: tuple[int, int]) -> LeNet:
    """LeNet-5 as in the DC papers."""
    return LeNet(channels, num_classes, im_size)


@register("alexnet")
def alexnet(channels: int, num_classes: int, im_size: tuple[int, int]) -> AlexNet:
    """AlexNet as in the DC papers."""
    return AlexNet(channels, num_classes, im_size)


@register("vgg11")
def vgg11(channels: int, num_classes: int, im_size: tuple[int, int], *, norm: str = "instance") -> VGG11:
    """VGG11 with instance norm (norm='batch' for BatchNorm)."""
    return VGG11(channels, num_classes, im_size, norm=norm)


@register("vgg11_bn")
def vgg11_bn(channels: int, num_classes: int, im_size: tuple[int, int]) -> VGG11:
    """VGG11 with BatchNorm."""
    return VGG11(channels, num_classes, im_size, norm="batch")


@register("mlp")
def mlp(channels: int, num_classes: int, im_size: tuple[int, int]) -> MLP:
    """3-layer MLP with 128 hidden units."""
    return MLP(channels, num_classes, im_size)
