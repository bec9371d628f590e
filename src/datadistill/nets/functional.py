"""A network as a function of ONE flat parameter vector (for trajectory matching: MTT, PAD).

The flat layout is the concatenation of `net.named_parameters()` in order, each flattened;
`param_layout` says where each parameter lives, so callers can select or mask layers by depth.
Buffers (BatchNorm running statistics) are not part of the vector: they are taken from the module.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call


class ParamSlot(NamedTuple):
    """Where one parameter lives in the flat vector: `flat[offset:offset + numel].view(shape)`."""

    name: str
    shape: tuple[int, ...]
    numel: int
    offset: int


def param_layout(net: nn.Module) -> list[ParamSlot]:
    """One `(name, shape, numel, offset)` per parameter, in `named_parameters()` (= depth) order."""
    layout = []
    offset = 0
    for name, p in net.named_parameters():
        layout.append(ParamSlot(name, tuple(p.shape), p.numel(), offset))
        offset += p.numel()
    return layout


def flat_params(net: nn.Module) -> Tensor:
    """All parameters concatenated into one new 1-D tensor, detached from the module.

    Same device and dtype as the parameters. Call `.requires_grad_()` on it to differentiate
    `functional_forward` with respect to it.
    """
    params = [p.detach().reshape(-1) for p in net.parameters()]
    if not params:
        raise ValueError(f"{type(net).__name__} has no parameters")
    return torch.cat(params)


def unflatten_params(net: nn.Module, flat: Tensor) -> dict[str, Tensor]:
    """`{name: view of flat}` for every parameter of `net`; differentiable with respect to `flat`."""
    layout = param_layout(net)
    total = sum(s.numel for s in layout)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(
            f"flat parameter vector has shape {tuple(flat.shape)}; {type(net).__name__} needs a 1-D tensor of {total}"
        )
    return {s.name: flat[s.offset : s.offset + s.numel].view(s.shape) for s in layout}


def functional_forward(net: nn.Module, flat: Tensor, x: Tensor) -> Tensor:
    """`net(x)` computed with the parameters in `flat` (buffers from `net`), via `torch.func.functional_call`.

    In training mode BatchNorm updates the module's running statistics, exactly as `net(x)` would.
    """
    return functional_call(net, unflatten_params(net, flat), (x,))
