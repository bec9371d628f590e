"""GSAM: surrogate-gap guided sharpness-aware minimization (Zhuang, Gong, Yuan, Cui, Adam, Dvornek,
Tatikonda, Duncan, Liu, "Surrogate Gap Minimization Improves Sharpness-Aware Training", ICLR 2022;
code github.com/juntang-zhuang/GSAM), the optimizer DATM's experts are trained with (FTD, Du et
al., CVPR 2023; DATM's ``buffer/buffer_FTD.py``: rho 2.0 constant, alpha 0.4, adaptive).

One step on a minibatch, with g the gradient at the weights w:

    e     = rho * g / ||g||                    (adaptive: e = rho * w^2 g / ||w g||, elementwise
                                                products, the norm over all parameters)
    g_p   = the gradient at w + e              (the same minibatch and augmentation; batch-norm
                                                running statistics are not updated by this pass)
    d     = g_p - alpha * (g - (<g, g_p> / ||g_p||^2) g_p)   (the part of g orthogonal to g_p
                                                is descended, scaled by alpha)
    w    <- the base SGD's step from w with gradient d (its lr, momentum and weight decay)

A small eps (1e-12) guards each division, as in the authors' code. The loss reported is the one
at w (the first pass).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

EPS = 1e-12


@dataclass
class GSAMSettings:
    rho: float = 2.0  # the perturbation's radius (DATM: rho_max = rho_min = 2.0)
    alpha: float = 0.4  # weight of the orthogonal descent (DATM: 0.4)
    adaptive: bool = True  # scale the perturbation by w^2 (ASAM's adaptive radius; DATM: True)


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module | None):
    """Batch-norm layers of `module` keep their running statistics unchanged inside (momentum 0)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if module is not None else []
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, v in zip(bns, saved):
            m.momentum = v


class GSAM:
    """GSAM around an SGD base optimizer. `step(closure)`: `closure()` zeroes the gradients,
    computes the loss of the current minibatch, backpropagates it and returns it; it is called
    twice (at w and at w + e). `param_groups`, `state_dict` and `load_state_dict` are the base
    SGD's, so learning-rate schedules and resuming work as for SGD."""

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 settings: GSAMSettings | None = None, module: nn.Module | None = None):
        self.params = [p for p in params]
        self.base = torch.optim.SGD(self.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.settings = settings or GSAMSettings()
        self.module = module

    @property
    def param_groups(self):
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)

    @staticmethod
    def _norm(tensors: list[Tensor]) -> Tensor:
        return torch.stack([t.norm() for t in tensors]).norm()

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        s = self.settings
        loss = closure()
        ps = [p for p in self.params if p.grad is not None]
        with torch.no_grad():
            g = [p.grad.detach().clone() for p in ps]
            scaled = [p.abs() * gi for p, gi in zip(ps, g)] if s.adaptive else g
            scale = s.rho / (self._norm(scaled) + EPS)
            e = [gi * scale.to(gi) * (p.square() if s.adaptive else 1.0) for p, gi in zip(ps, g)]
            for p, ei in zip(ps, e):
                p.add_(ei)
        with frozen_running_stats(self.module):
            closure()
        with torch.no_grad():
            gp = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            inner = sum((gi * gpi).sum() for gi, gpi in zip(g, gp))
            n_new, n_old = self._norm(gp), self._norm(g)
            cosine = inner / (n_new * n_old + EPS)
            for p, gi, gpi, ei in zip(ps, g, gp, e):
                vertical = gi - cosine.to(gi) * n_old.to(gi) * gpi / (n_new.to(gi) + EPS)
                p.grad = gpi - s.alpha * vertical
                p.sub_(ei)
        self.base.step()
        return loss
