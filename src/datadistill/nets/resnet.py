"""ResNet-18 for small images, as in the DC papers: a 3x3 stem without pooling, four stages of two
basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global average pooling, linear.

Instance norm (GroupNorm with one group per channel) by default, BatchNorm for `resnet18_bn`.
`feature_maps` returns the output of each of the four stages; `embed_dim` = 512. Global average
pooling makes any input size work (28x28 ends on a 4x4 map, 32x32 too, as in the reference).

`stem`: ``small`` (the 3x3 stem above, the DC / MTT code's at 32 to 128 pixels), ``imagenet``
(torchvision's: 7x7 stride-2 convolution, norm, ReLU, 3x3 stride-2 max pooling, for 224x224
ImageNet-1K), or ``auto`` (default): imagenet at 224 pixels and more, small below.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .base import Net, norm_layer
from .registry import check_choice, register

_NORMS = ("instance", "batch")
_ALIASES = {"instancenorm": "instance", "batchnorm": "batch"}
_STEMS = ("auto", "small", "imagenet")
IMAGENET_STEM_FROM = 224  # stem "auto": torchvision's ImageNet stem from this side on


class BasicBlock(nn.Module):
    """conv3x3 -> norm -> relu -> conv3x3 -> norm, plus a (projected) shortcut, -> relu."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm2 = norm_layer(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), norm_layer(norm, out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(Net):
    """ResNet-18 (see module docstring)."""

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], *, norm: str = "instance",
                 stem: str = "auto") -> None:
        super().__init__(channels, num_classes, im_size)
        self.norm = check_choice("norm", norm, _NORMS, _ALIASES)
        stem = stem_for(stem, im_size)
        self.stem_kind = stem
        if stem == "small":
            self.stem = nn.Sequential(
                nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False),
                norm_layer(self.norm, 64),
                nn.ReLU(),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
                norm_layer(self.norm, 64),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        stages = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_ch, out_ch, stride, self.norm), BasicBlock(out_ch, out_ch, 1, self.norm)))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.embed_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def embed(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def embed_from_maps(self, maps: list[Tensor]) -> Tensor:
        return F.adaptive_avg_pool2d(maps[-1], 1).flatten(1)


def stem_for(stem: str, im_size: tuple[int, int]) -> str:
    """The stem built at `im_size`: "auto" is torchvision's ImageNet stem from IMAGENET_STEM_FROM
    pixels on and the small 3x3 stem below."""
    stem = check_choice("stem", stem, _STEMS)
    if stem == "auto":
        return "imagenet" if min(im_size) >= IMAGENET_STEM_FROM else "small"
    return stem


def _sized(im_size: tuple[int, int], variants: dict) -> dict:
    return {**variants, "stem": stem_for(variants.get("stem", "auto"), im_size)}


@register("resnet18", sized=_sized)
def resnet18(channels: int, num_classes: int, im_size: tuple[int, int], *, norm: str = "instance",
             stem: str = "auto") -> ResNet18:
    """ResNet-18 with instance norm (norm='batch' for BatchNorm); stem auto/small/imagenet."""
    return ResNet18(channels, num_classes, im_size, norm=norm, stem=stem)


@register("resnet18_bn", sized=_sized)
def resnet18_bn(channels: int, num_classes: int, im_size: tuple[int, int], *, stem: str = "auto") -> ResNet18:
    """ResNet-18 with BatchNorm."""
    return ResNet18(channels, num_classes, im_size, norm="batch", stem=stem)
