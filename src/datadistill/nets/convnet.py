"""ConvNet: the standard backbone of the dataset-distillation literature (DC, DSA, DM, MTT, ...).

`depth` blocks of conv3x3(width) -> norm -> act -> pool, then flatten -> linear classifier.
Defaults: width 128, instance norm (GroupNorm with one group per channel), ReLU, 2x2 average
pooling, and the depth from the resolution (`depth_for_size`), as the papers size it: 3 at 32x32
(and 28x28, which behaves as 32x32: the first convolution pads 3 instead of 1), 4 at 64x64
(Tiny-ImageNet: DM, MTT), 5 at 128x128 (the ImageNet subsets: MTT) and 224x224, unless `depth`
is given.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..errors import ConfigError
from .base import (
    ACTS,
    NORM_ALIASES,
    NORMS,
    POOL_ALIASES,
    POOLS,
    BlockNet,
    act_layer,
    conv_out,
    first_pad_extra,
    norm_layer,
    pool_layer,
    require_size,
)
from .registry import check_choice, positive_int, register

MAX_DEPTH = 6


def depth_for_size(im_size: tuple[int, int]) -> int:
    """The ConvNet depth for an input size: ``floor(log2(side)) - 2`` of the smaller side, at
    least 3 (sides up to 32 and 28x28 inputs: 3; 64: 4; 128 and 224: 5), at most MAX_DEPTH."""
    side = max(32, min(int(v) for v in im_size))
    return min(MAX_DEPTH, max(3, side.bit_length() - 1 - 2))


def depth_at(depth: int | None, im_size: tuple[int, int]) -> int:
    """The depth a ConvNet is built with: `depth` if given, else `depth_for_size(im_size)`."""
    return depth_for_size(im_size) if depth is None else depth


class ConvNet(BlockNet):
    """`depth` x [conv3x3 -> norm -> act -> pool] -> flatten -> Linear.

    `embed_dim = width * (H / 2**depth) * (W / 2**depth)` with pooling (H, W = 32 for 28x28
    inputs), `width * H * W` without. `feature_maps` returns each block's output (after pooling).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        im_size: tuple[int, int],
        *,
        width: int = 128,
        depth: int | None = None,
        norm: str = "instance",
        act: str = "relu",
        pool: str = "avg",
    ) -> None:
        super().__init__(channels, num_classes, im_size)
        width = positive_int("width", width)
        depth = positive_int("depth", depth_at(depth, im_size))
        if depth > MAX_DEPTH:
            raise ConfigError(f"invalid depth {depth}; valid choices: 1 to {MAX_DEPTH}")
        self.width, self.depth = width, depth
        self.norm = check_choice("norm", norm, NORMS, NORM_ALIASES)
        self.act = check_choice("act", act, ACTS)
        self.pool = check_choice("pool", pool, POOLS, POOL_ALIASES)

        h, w = im_size
        blocks = []
        in_ch = channels
        for d in range(depth):
            pad = 1 + (first_pad_extra(im_size) if d == 0 else 0)
            h, w = conv_out(h, 3, pad), conv_out(w, 3, pad)
            layers = OrderedDict(
                conv=nn.Conv2d(in_ch, width, kernel_size=3, padding=pad),
                norm=norm_layer(self.norm, width),
                act=act_layer(self.act),
                pool=pool_layer(self.pool),
            )
            if self.pool != "none":
                h, w = h // 2, w // 2
            require_size(f"convnet of depth {depth}", (h, w), im_size)
            blocks.append(nn.Sequential(layers))
            in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.feature_shape = (width, h, w)
        self.embed_dim = width * h * w
        self.head = nn.Identity()  # the embedding is the flattened last block
        self.classifier = nn.Linear(self.embed_dim, num_classes)


def _sized(im_size: tuple[int, int], variants: dict) -> dict:
    return {**variants, "depth": depth_at(variants.get("depth"), im_size)}


@register("convnet", sized=_sized)
def convnet(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    width: int = 128,
    depth: int | None = None,
    norm: str = "instance",
    act: str = "relu",
    pool: str = "avg",
) -> ConvNet:
    """ConvNet; norm in none/batch/layer/instance/group, act in relu/sigmoid/leakyrelu, pool in avg/max/none;
    depth None: from the image size (`depth_for_size`)."""
    return ConvNet(channels, num_classes, im_size, width=width, depth=depth, norm=norm, act=act, pool=pool)


@register("convnet_bn", sized=_sized)
def convnet_bn(
    channels: int,
    num_classes: int,
    im_size: tuple[int, int],
    *,
    width: int = 128,
    depth: int | None = None,
    norm: str = "batch",
    act: str = "relu",
    pool: str = "avg",
) -> ConvNet:
    """ConvNet with BatchNorm by default (other variants accepted as for `convnet`)."""
    return ConvNet(channels, num_classes, im_size, width=width, depth=depth, norm=norm, act=act, pool=pool)
