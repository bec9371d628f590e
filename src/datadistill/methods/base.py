"""The Distiller interface every method implements, and the shared pieces of image-learning methods.

The run (`run/setup.py`, `run/loop.py`) owns the loop: it builds a Distiller, calls `init(syn)`
once with the starting set, then `step(it)` per outer iteration, and `state_dict()` /
`load_state_dict()` to checkpoint and resume. A method owns only its loss and its update, and
declares what it needs besides the data: `requires` names the artifacts (`artifacts.py`; e.g.
MTT's expert trajectories), which the setup opens, checks and passes in; `data_zca` is the hook
for the method's own view of the data (the ZCA whitening it distils under).

Randomness of the image-learning methods (DM, DC, DSA, DataDAM) is keyed so that it does not
depend on how the classes are split over processes (see `dist` and docs/distributed.md):

- `begin_iteration(it)` reseeds the run generator `self.gen` from (seed, method, it). Everything
  every process does alike draws from it, in the same order on every process: the network
  initialization, DC/DSA's batch-norm statistics batch and inner-loop training.
- `class_batches(classes)` draws ONE key from `self.gen` per call (on every process, whatever its
  classes) and gives class c its own generator derived from (key, c) for its real batch and its DSA
  draw. So class c's draws are the same whichever process handles it and whatever the others do.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn

from .. import dist
from ..augment import DSA, strategy_for
from ..config import DistillConfig
from ..data import DatasetSplits, ImageData
from ..data.zca import fit_zca
from ..errors import ConfigError, DivergedError
from ..typed import build
from ..nets import make_net
from ..numerics import autocast, check_precision
from ..rng import derive_seed, make_generator
from ..synset import SyntheticSet


@dataclasses.dataclass
class NoOptions:
    pass


def parse_options(klass: type, values: dict[str, Any]) -> Any:
    """Build a method's options dataclass from `method_args`: unknown keys refused, every value
    converted to its field's type (``"1e-5"`` to 1e-05 for a float) or refused (typed.py)."""
    return build(klass, values, "method option", "method option ")


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


def refuse_precision(method_cls: type, precision: str) -> None:
    """ConfigError when `method_cls` cannot distil at `precision` (see `Distiller.supports_bf16`)."""
    if precision == "fp32" or method_cls.supports_bf16:
        return
    from .registry import available_methods, get_method

    able = [m for m in available_methods() if get_method(m).supports_bf16]
    raise ConfigError(
        f"precision {precision} is available for the distillation of {', '.join(able)} only (losses that are plain "
        f"forward passes, or whose first-order parts alone run in it), not {method_cls.name}, whose loss "
        f"differentiates through its gradients; use precision fp32 for the distillation (the evaluation's "
        f"precision is a separate setting)"
    )


class Distiller(ABC):
    """One distillation method. Subclasses set `name`, optionally `Options` (a dataclass of the
    method's own settings, filled from `cfg.method_args`), and implement `init` and `step`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    learns_images: ClassVar[bool] = True
    # cfg.precision "bf16" allowed: True, the loss is plain forward passes (autocast around `loss`,
    # the backward outside it); "first-order", only the method's first-order parts run in bf16 (DC,
    # DSA: the real-batch gradients and the inner loop) while the second-order matching stays fp32;
    # False: methods that differentiate through gradients everywhere (MTT, PAD)
    supports_bf16: ClassVar[bool | str] = False
    # the artifact kinds the method needs (artifacts.py), resolved by the run setup from cfg.artifacts
    requires: ClassVar[tuple[str, ...]] = ()
    # artifact kinds the method uses when given but does not need (the coresets' teacher)
    accepts: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def make_hint(cls, kind: str, cfg: DistillConfig) -> str:
        """The command that makes the artifact `kind` this method needs (for error messages)."""
        from ..artifacts import get_artifact

        return get_artifact(kind).make_hint(cfg)

    @classmethod
    def data_zca(cls, cfg: DistillConfig, data: DatasetSplits, artifacts: dict) -> dict[str, torch.Tensor] | None:
        """The ZCA whitening to distil under (None: none): fitted on the training split when
        `cfg.zca`. A method whose artifacts fix it (MTT: the experts' own) overrides this."""
        return fit_zca(data.train) if cfg.zca else None

    def __init__(self, cfg: DistillConfig, data: DatasetSplits, device: torch.device, artifacts: dict | None = None):
        check_precision(cfg.precision, device)
        refuse_precision(type(self), cfg.precision)
        self.cfg = cfg
        self.spec = data.spec
        self.device = device
        self.opts = parse_options(self.Options, dict(cfg.method_args))
        if artifacts is None:  # built directly (not by run.setup.prepare): resolve them here
            from ..artifacts import resolve_artifacts

            artifacts = resolve_artifacts(type(self), cfg, data.spec)
        self.artifacts = artifacts
        self.train = data.train.to(device)
        self.gen = make_generator(cfg.seed, "distill", cfg.method)
        strategy = (strategy_for(self.spec.name, cfg.dsa_strategy, cfg.dsa_digit_rule)
                    if cfg.dsa_strategy not in ("", "none") else "none")
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

    def memory_estimate(self) -> dict[str, Any] | None:
        """What one iteration is estimated to need in memory beyond the setup, for `distill
        --dry-run`: {"iteration_mib": ..., ...}; None: no estimate (the dry run then measures one
        iteration)."""
        return None

    def setup_notes(self) -> list[str]:
        """Lines the run logs once the method is set up (e.g. a choice it made from the device)."""
        return []

    # -- helpers for subclasses -------------------------------------------------------
    def begin_iteration(self, it: int) -> None:
        """Reseed the run generator for outer iteration `it`: its draws depend only on (seed,
        method, it), so a resumed or multi-process run makes the same ones."""
        self.gen.manual_seed(derive_seed(self.cfg.seed, "distill", self.cfg.method, "iteration", it))

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

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """Parts of the last `loss` to log besides it (summed over processes like the loss)."""
        return {}

    def step(self, it: int) -> dict[str, float]:
        """One outer iteration: this process's share of the loss, its gradient summed over all
        processes, one SGD step of the images (the same on every process)."""
        self.begin_iteration(it)
        self.opt_img.zero_grad(set_to_none=True)
        with autocast(self.device, self.cfg.precision):  # forward only; the backward runs outside
            loss = self.loss(it)
            terms = self.loss_terms()
        values = self.backward_and_reduce(loss, *terms.values())
        check_finite(values[0], it, f"lower lr_img (now {self.cfg.lr_img})")
        self.opt_img.step()
        return {"loss": values[0], **dict(zip(terms, values[1:]))}

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

    def class_batches(self, classes: Sequence[int] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per class of `classes` (None: all): `batch_real` real images and the class's synthetic
        images, with ONE DSA draw per class applied to both sides (siamese) when DSA is on.
        Returns (reals, syns) in the order of `classes`.

        One key is drawn from `self.gen` whatever `classes` is (empty included); class c's real
        batch and DSA draw come from a generator derived from (key, c) alone."""
        reals, syns = [], []
        for xr, xs in self.each_class_batch(classes):
            reals.append(xr)
            syns.append(xs)
        return reals, syns

    def each_class_batch(self, classes: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`class_batches`, one class at a time: the key is drawn now, each class's (real, synthetic)
        pair when it is asked for, so that a caller that finishes with one class before the next
        holds one class's batches (and graph) at a time. The same tensors as `class_batches`."""
        key = int(torch.randint(0, 2**62, (1,), generator=self.gen))

        def pairs():
            for c in range(self.spec.num_classes) if classes is None else classes:
                g = make_generator(key, "class", c)
                xr = self.train.class_batch(c, self.cfg.batch_real, g)
                xs = self.class_images(c)
                if self.dsa is not None:
                    params = self.dsa.sample(1, g, siamese=True)
                    xr, xs = self.dsa(xr, params), self.dsa(xs, params)
                yield xr, xs

        return pairs()

    # -- splitting the classes over processes ------------------------------------------------
    def loss_classes(self, separable: bool = True) -> list[int]:
        """The classes whose loss terms this process computes. `separable`: the loss is a sum of
        per-class terms that need nothing of the other classes; then each process takes its
        round-robin share (`dist.shard`). Otherwise process 0 takes them all and the others none
        (their zero gradient is added in the reduction)."""
        every = list(range(self.spec.num_classes))
        if separable:
            return dist.shard(every)
        return every if dist.is_main() else []

    def backward_and_reduce(self, loss: torch.Tensor, *values: torch.Tensor) -> list[float]:
        """Backpropagate this process's share of the loss into `self.images.grad`, then sum the
        gradient and the values [loss, *values] over all processes (one all-reduce). Afterwards
        every process holds the gradient of the whole loss. Returns the summed values."""
        if loss.requires_grad:
            loss.backward(inputs=[self.images])
        if self.images.grad is None:  # a process without loss terms this time
            self.images.grad = torch.zeros_like(self.images)
        grad = self.images.grad
        scalars = torch.stack([v.detach().reshape(()).to(grad.device, grad.dtype) for v in (loss, *values)])
        if dist.active():
            packed = dist.all_reduce_sum_(torch.cat([grad.reshape(-1), scalars]))
            grad.copy_(packed[: grad.numel()].view_as(grad))
            scalars = packed[grad.numel():]
        return [float(v) for v in scalars.tolist()]

    def no_loss(self) -> torch.Tensor:
        """The loss of a process that has no classes this time: zero, not connected to the images."""
        return self.images.new_zeros(())


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


def check_finite(loss: torch.Tensor | float, it: int, advice: str) -> None:
    v = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(v):
        raise DivergedError(f"the loss became {v} at iteration {it}; {advice}.")
