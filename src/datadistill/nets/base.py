"""What every datadistill network offers, and the small building blocks they share.

A `Net` is an `nn.Module` with:

- `forward(x) -> logits` (N, num_classes), equal to `classifier(embed(x))`;
- `embed(x) -> (N, embed_dim)`: the penultimate features, i.e. the input of `classifier`;
- `classifier`: the final `nn.Linear`;
- `feature_maps(x) -> list[Tensor]`: the output of every convolutional block, in order
  (used by attention matching); `has_spatial_features` says whether there are any.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from .registry import check_choice

NORMS = ("instance", "batch", "layer", "group", "none")
NORM_ALIASES = {
    "instancenorm": "instance",
    "batchnorm": "batch",
    "layernorm": "layer",
    "groupnorm": "group",
    "nonorm": "none",
}
ACTS = ("relu", "sigmoid", "leakyrelu")
POOLS = ("avg", "max", "none")
POOL_ALIASES = {"avgpooling": "avg", "maxpooling": "max", "nopooling": "none"}


class Net(nn.Module):
    """Base class: subclasses set `classifier`, `embed_dim` and implement `embed`."""

    classifier: nn.Linear
    embed_dim: int
    has_spatial_features: bool = True

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]) -> None:
        super().__init__()
        self.channels = channels
        self.num_classes = num_classes
        self.im_size = tuple(im_size)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes)."""
        return self.classifier(self.embed(x))

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features (N, embed_dim): the input of `classifier`."""
        raise NotImplementedError

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The output of every convolutional block, in order (each (N, C, H, W))."""
        raise NotImplementedError

    def embed_from_maps(self, maps: list[Tensor]) -> Tensor:
        """The embedding, computed from `feature_maps` output (the last block's map)."""
        raise NotImplementedError

    def maps_and_embed(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """`feature_maps(x)` and `embed(x)` from a single forward pass."""
        maps = self.feature_maps(x)
        return maps, self.embed_from_maps(maps)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error when `x` is not (N, channels, H, W) with the built size."""
        if x.dim() != 4 or x.shape[1] != self.channels or tuple(x.shape[2:]) != self.im_size:
            raise ValueError(
                f"{type(self).__name__} was built for inputs (N, {self.channels}, "
                f"{self.im_size[0]}, {self.im_size[1]}); got {tuple(x.shape)}"
            )


class BlockNet(Net):
    """A stack of convolutional `blocks`, then flatten -> `head` -> `classifier`."""

    blocks: nn.ModuleList
    head: nn.Module

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def embed(self, x: Tensor) -> Tensor:
        self.check_input(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))

    def embed_from_maps(self, maps: list[Tensor]) -> Tensor:
        return self.head(maps[-1].flatten(1))


def norm_layer(norm: str, channels: int) -> nn.Module:
    """instance = GroupNorm(C, C), layer = GroupNorm(1, C), group = GroupNorm(4, C), batch = BatchNorm2d."""
    norm = check_choice("norm", norm, NORMS, NORM_ALIASES)
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "group":
        if channels % 4:
            raise ConfigError(f"norm 'group' uses 4 groups and needs a width divisible by 4, got {channels}")
        return nn.GroupNorm(4, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def act_layer(act: str) -> nn.Module:
    """relu, sigmoid or leakyrelu (slope 0.01); never in-place (safe for functional calls)."""
    act = check_choice("act", act, ACTS)
    if act == "relu":
        return nn.ReLU()
    if act == "sigmoid":
        return nn.Sigmoid()
    return nn.LeakyReLU(negative_slope=0.01)


def pool_layer(pool: str) -> nn.Module:
    """2x2 average or max pooling with stride 2, or identity for 'none'."""
    pool = check_choice("pool", pool, POOLS, POOL_ALIASES)
    if pool == "avg":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pool == "max":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return nn.Identity()


def first_pad_extra(im_size: tuple[int, int]) -> int:
    """2 for 28x28 inputs (so they behave as 32x32, as the reference nets do), else 0."""
    return 2 if tuple(im_size) == (28, 28) else 0


def conv_out(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    """Spatial size after a convolution."""
    return (size + 2 * padding - kernel) // stride + 1


def require_size(net: str, shape: tuple[int, int], im_size: tuple[int, int]) -> None:
    """Raise a ConfigError when the feature map of `net` vanished for `im_size`."""
    if min(shape) < 1:
        raise ConfigError(
            f"{net} cannot take {im_size[0]}x{im_size[1]} inputs: the feature map shrinks to "
            f"{shape[0]}x{shape[1]}; use a larger image size"
        )
