"""The Distiller interface every method implements, and the shared pieces of image-learning methods.

The runner owns the loop: it builds a Distiller, calls `init(syn)` once with the starting set,
then `step(it)` per outer iteration, and `state_dict()` / `load_state_dict()` to checkpoint and
resume. A method owns only its loss and its update.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ..augment import DSA, strategy_for
from ..config import DistillConfig
from ..data import DatasetSplits, ImageData
from ..errors import ConfigError, DistillError
from ..nets import make_net
from ..rng import make_generator
from ..synset import SyntheticSet


@dataclasses.dataclass
class NoOptions:
    pass


def parse_options(klass: type, values: dict[str, Any]) -> Any:
    """Build a method's options dataclass from `method_args`, refusing unknown keys."""
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown method option(s) {unknown}; this method takes {sorted(known) or 'none'}")
    return klass(**values)


def initial_synset(train: ImageData, ipc: int, init: str, generator: torch.Generator) -> SyntheticSet:
    """`ipc` images per class: random real training images (init='real') or N(0, 1) noise in
    normalized space (init='noise'). Labels are hard and ordered by class."""
    spec = train.spec
    counts = train.class_counts()
    smallest = min(counts)
    if init == "real" and ipc > smallest:
        c = counts.index(smallest)
        raise ConfigError(
            f"IPC {ipc} is larger than class {c} ({spec.class_names[c]!r}), which has {smallest} training "
            f"images; use --ipc {smallest} or less (or --init noise)"
        )
    labels = torch.arange(spec.num_classes).repeat_interleave(ipc)
    if init == "real":
        images = torch.cat([train.class_batch(c, ipc, generator).cpu() for c in range(spec.num_classes)])
    elif init == "noise":
        images = torch.randn((labels.numel(), spec.channels, *spec.im_size), generator=generator)
    else:
        raise ConfigError(f"unknown init {init!r}; choose 'real' or 'noise'")
    return SyntheticSet(images.float(), labels, spec, meta={"init": init})


class Distiller(ABC):
    """One distillation method. Subclasses set `name`, optionally `Options` (a dataclass of the
    method's own settings, filled from `cfg.method_args`), and implement `init` and `step`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    learns_images: ClassVar[bool] = True

    def __init__(self, cfg: DistillConfig, data: DatasetSplits, device: torch.device):
        self.cfg = cfg
        self.spec = data.spec
        self.device = device
        self.opts = parse_options(self.Options, dict(cfg.method_args))
        self.train = data.train.to(device)
        self.gen = make_generator(cfg.seed, "distill", cfg.method)
        strategy = strategy_for(self.spec.name, cfg.dsa_strategy) if cfg.dsa_strategy not in ("", "none") else "none"
        self.dsa = DSA(strategy) if strategy != "none" else None

    # -- the interface --------------------------------------------------------------
    @abstractmethod
    def init(self, syn: SyntheticSet) -> None:
        """Take the starting set."""

    @abstractmethod
    def step(self, it: int) -> dict[str, float]:
        """One outer iteration; returns at least {"loss": float}."""

    @abstractmethod
    def synthetic_set(self) -> SyntheticSet:
        """The current set (detached copy)."""

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])

    # -- helpers for subclasses -------------------------------------------------------
    def fresh_net(self, frozen: bool = False) -> nn.Module:
        """A randomly initialized network of the configured architecture, drawn from the run's generator."""
        net = make_net(
            self.cfg.model, self.spec.channels, self.spec.num_classes, self.spec.im_size,
            generator=self.gen, **self.cfg.model_args,
        ).to(self.device)
        net.train()
        if frozen:
            net.requires_grad_(False)
        return net


class ImageDistiller(Distiller):
    """A method that learns the synthetic pixels by SGD on a loss: DM, DC, DSA, DataDAM, MTT, PAD."""

    def init(self, syn: SyntheticSet) -> None:
        self.meta = dict(syn.meta)
        self.images = syn.images.detach().clone().to(self.device).requires_grad_(True)
        self.labels = syn.labels.detach().clone().to(self.device)
        hard = syn.hard_labels.to(self.device)
        self.class_index = [torch.nonzero(hard == c).flatten() for c in range(self.spec.num_classes)]
        self.opt_img = torch.optim.SGD([self.images], lr=self.cfg.lr_img, momentum=self.cfg.momentum_img)

    @abstractmethod
    def loss(self, it: int) -> torch.Tensor:
        """The matching loss of one outer iteration, differentiable w.r.t. self.images."""

    def step(self, it: int) -> dict[str, float]:
        self.opt_img.zero_grad(set_to_none=True)
        loss = self.loss(it)
        check_finite(loss, it, f"lower lr_img (now {self.cfg.lr_img})")
        loss.backward()
        self.opt_img.step()
        return {"loss": float(loss.detach())}

    def synthetic_set(self) -> SyntheticSet:
        return SyntheticSet(self.images.detach().clone(), self.labels.detach().clone(), self.spec, meta=dict(self.meta))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "images": self.images.detach().cpu().clone(),
            "opt_img": self.opt_img.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        self.opt_img.load_state_dict(state["opt_img"])

    def class_images(self, c: int) -> torch.Tensor:
        return self.images[self.class_index[c]]

    def class_batches(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per class: `batch_real` real images and the class's synthetic images, with ONE DSA draw
        per class applied to both sides (siamese) when DSA is on. Returns (reals, syns) by class."""
        reals, syns = [], []
        for c in range(self.spec.num_classes):
            xr = self.train.class_batch(c, self.cfg.batch_real, self.gen)
            xs = self.class_images(c)
            if self.dsa is not None:
                params = self.dsa.sample(1, self.gen, siamese=True)
                xr, xs = self.dsa(xr, params), self.dsa(xs, params)
            reals.append(xr)
            syns.append(xs)
        return reals, syns


def chunked_no_grad(fn, x: torch.Tensor, chunk: int = 64):
    """fn(x) without autograd, computed `chunk` images at a time and concatenated along dim 0.

    For large real batches whose activations do not fit in the CPU caches this is 2-3x faster
    than one big forward, and exact for networks whose normalization is per sample (instance,
    layer, group norm, or none). `fn` may return a tensor or a list/tuple of tensors."""
    with torch.no_grad():
        outs = [fn(part) for part in x.split(chunk)]
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    return type(first)(torch.cat([o[i] for o in outs]) for i in range(len(first)))


def uses_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def check_finite(loss: torch.Tensor, it: int, advice: str) -> None:
    v = float(loss.detach())
    if not math.isfinite(v):
        raise DistillError(f"the loss became {v} at iteration {it}; {advice}. The last checkpoint is kept.")
