"""Networks: a registry of the architectures used in dataset distillation, plus a functional forward.

>>> from datadistill.nets import make_net, list_nets
>>> net = make_net("convnet", channels=3, num_classes=10, im_size=(32, 32), width=64, depth=3)
>>> net.embed_dim
1024

Every network offers `forward`, `embed` (penultimate features), `classifier` (the final Linear),
`embed_dim`, `feature_maps` (per convolutional block) and `has_spatial_features`; see `base.Net`.
"""
from __future__ import annotations

from . import classic, convnet, resnet  # noqa: F401  (importing registers the builders)
from .base import Net
from .classic import MLP, VGG11, AlexNet, LeNet
from .convnet import ConvNet
from .functional import ParamSlot, flat_params, functional_forward, param_layout, unflatten_params
from .registry import list_nets, make_net, register, sized_variants, variants_of
from .resnet import ResNet18

__all__ = [
    "make_net",
    "list_nets",
    "register",
    "sized_variants",
    "variants_of",
    "Net",
    "ConvNet",
    "LeNet",
    "AlexNet",
    "VGG11",
    "MLP",
    "ResNet18",
    "flat_params",
    "unflatten_params",
    "functional_forward",
    "param_layout",
    "ParamSlot",
]
