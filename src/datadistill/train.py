"""The one training loop: train a network on a set of images, and measure accuracy.

Everything that trains a classifier (evaluation, validation during distillation, baselines,
coreset embeddings, experts' epochs, architecture search, continual learning) calls `train_model`.

`train_models` trains N networks of one architecture *together*, through the same loop: their
parameters are stacked (`torch.func.stack_module_state`) and one vectorized forward/backward
(`torch.func.vmap` over `functional_call`) serves all N per step, so the per-step work is a few
large kernels instead of N times many small ones. Each network keeps the randomness it has when
trained alone by `train_model` (its own generator draws its shuffling and its augmentation, in the
same order), and SGD is elementwise, so network r ends where `train_model(nets[r], ...,
generator=generators[r])` ends, up to floating-point rounding (the batched kernels sum in another
order).

`compile=True` (a switch, off by default) runs each step's forward and loss through
`torch.compile` (Inductor): fused element-wise kernels and, on a GPU, fewer launches. It changes
rounding and costs a compilation on the first step (and on a new minibatch shape): on the 2-core
CPU steps were 1.28x faster once compiled after up to 18 s of compiling (docs/speed.md), which
pays for long trainings only, so it stays off unless asked for.
`channels_last=True` (likewise a switch, off) trains a network alone with its convolution weights
and inputs in the channels-last memory layout (other convolution kernels, so other rounding): GPUs'
tensor-core convolutions prefer it; it was slower on that CPU. Stacked training takes 5-d inputs,
which have no channels-last layout, so it trains networks one at a time.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from .errors import ConfigError, DistillError
from .gsam import GSAM, GSAMSettings
from .numerics import autocast, check_precision

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainResult:
    seconds: float
    epochs: int
    steps: int
    final_loss: float


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard labels (N,) or soft label distributions (N, K)."""
    if labels.ndim == 2:
        return F.cross_entropy(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


LOSSES = ("ce", "kl", "soft_ce", "mse_gt")
TEMPERATURE_LOSSES = ("kl", "soft_ce")  # the losses `temperature` applies to (soft_label_loss)
MIXES = ("none", "cutmix", "mixup")
OPTIMIZERS = ("sgd", "adamw", "gsam")
SCHEDULES = ("step", "cosine")


def soft_label_loss(logits: Tensor, target_logits: Tensor, hard: Tensor, loss: str, temperature: float = 1.0,
                    mse_weight: float = 1.0, ce_weight: float = 0.0) -> Tensor:
    """The soft-label losses of the field's evaluation protocols, against target logits (a teacher's,
    or the log of stored label distributions), averaged over the batch:

    - ``kl``: T^2 * KL(softmax(t / T) || softmax(s / T)) (knowledge distillation; the T^2 keeps the
      gradient's scale, Hinton et al. 2015);
    - ``soft_ce``: -sum softmax(t / T) * log_softmax(s / T);
    - ``mse_gt``: mse_weight * mean (s - t)^2 + ce_weight * CE(s, hard) (DD-Ranking's MSE-GT loss:
      the student's logits regressed on the teacher's, plus cross-entropy with the ground truth);
    - ``ce``: cross-entropy with softmax(t) as the target distribution.
    """
    s, t = logits.float(), target_logits.float()
    if loss == "kl":
        return F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1), reduction="batchmean",
                        log_target=True) * temperature ** 2
    if loss == "soft_ce":
        return -(F.softmax(t / temperature, 1) * F.log_softmax(s / temperature, 1)).sum(1).mean()
    if loss == "mse_gt":
        out = mse_weight * F.mse_loss(s, t)
        return out + ce_weight * F.cross_entropy(s, hard) if ce_weight else out
    if loss == "ce":
        return F.cross_entropy(s, F.softmax(t, 1))
    raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


@dataclass
class Objective:
    """What a minibatch is trained towards, when it is not plain cross-entropy with the set's labels
    (`classification_loss`): soft-label losses against targets, from a teacher that labels every
    augmented (and mixed) batch, or from the set's own label distributions; cutmix or mixup of the
    batch. Every random draw comes from the network's generator."""

    loss: str = "ce"  # LOSSES
    temperature: float = 1.0
    teacher: nn.Module | None = None  # relabels each batch after augmentation and mixing
    mix: str = "none"  # MIXES
    mix_beta: float = 1.0  # Beta(b, b) of the mixing ratio (cutmix's box area, mixup's weight)
    mse_weight: float = 1.0
    ce_weight: float = 0.0
    num_classes: int = 0

    def targets(self, x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(the batch after mixing, target logits, hard labels) for one network's batch."""
        hard = y.argmax(1) if y.ndim == 2 else y
        dist = y.to(torch.float32) if y.ndim == 2 else F.one_hot(y, self.num_classes).to(torch.float32)
        if self.mix != "none" and x.shape[0] > 1:
            x, dist = mix_batch(x, dist, self.mix, self.mix_beta, g)
        if self.teacher is not None:
            with torch.no_grad():
                t = self.teacher(x).float()
        else:
            t = dist.clamp_min(1e-12).log()
        return x, t, hard

    def __call__(self, logits: Tensor, target: Tensor, hard: Tensor) -> Tensor:
        return soft_label_loss(logits, target, hard, self.loss, self.temperature, self.mse_weight, self.ce_weight)


def mix_batch(x: Tensor, dist: Tensor, mix: str, beta: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Cutmix (Yun et al. 2019) or mixup (Zhang et al. 2018) of a batch with a permutation of itself:
    ratio lam ~ Beta(beta, beta); mixup: lam x + (1 - lam) x[perm]; cutmix: a box of area (1 - lam)
    of the image pasted from x[perm], lam then the kept area's share. Label distributions are mixed
    with the same weights."""
    n = x.shape[0]
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    lam = float(np.random.default_rng(seed).beta(beta, beta))
    perm = torch.randperm(n, generator=g).to(x.device)
    if mix == "mixup":
        return lam * x + (1 - lam) * x[perm], lam * dist + (1 - lam) * dist[perm]
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = (int(v) for v in torch.randint(0, 2**31 - 1, (2,), generator=g))
    cy, cx = cy % h, cx % w
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, kept * dist + (1 - kept) * dist[perm]


def train_model(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_at: tuple[float, ...] = (0.5,),
    aug: Augment | None = None,
    progress: bool = False,
    desc: str = "train",
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    channels_last: bool = False,
    objective: Objective | None = None,
    optimizer: str = "sgd",
    schedule: str = "step",
    resume: dict | None = None,
    on_epoch_state: Callable[[dict], None] | None = None,
    gsam: GSAMSettings | None = None,
) -> TrainResult:
    """SGD with momentum; lr x0.1 at each fraction of `decay_at` of the epochs (the papers' protocol:
    half the epochs). Images and labels must already be on the network's device. Shuffling and
    augmentation draw only from `generator`. `precision` "bf16": forward passes under bf16 autocast
    (numerics.py). `compile`, `channels_last`: see the module's doc. `objective`: soft-label
    training (teacher relabelling, KL / soft cross-entropy / MSE, cutmix / mixup; `Objective`).
    `optimizer` "adamw": AdamW (lr, weight decay; momentum unused) instead of SGD; "gsam": GSAM
    around that SGD (`gsam.py`; its settings `gsam`, default DATM's), two passes per step; `schedule`
    "cosine": lr * (1 + cos(pi * epoch / epochs)) / 2 per epoch instead of the steps at `decay_at`.
    `on_epoch_state(state)` receives after every epoch what `resume=state` needs to continue from
    there as if never stopped: the epochs done, the optimizer's state and the generator's state."""
    (res,) = _train(
        _OneNet(net, compile, channels_last, objective), images, labels, [generator], epochs=epochs, lr=lr,
        batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, decay_at=decay_at, aug=aug,
        progress=progress, desc=desc, on_epoch_end=on_epoch_end, precision=precision, objective=objective,
        optimizer=optimizer, schedule=schedule, resume=resume, on_epoch_state=on_epoch_state, gsam=gsam,
    )
    return res


def train_models(
    nets: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    generators: Sequence[torch.Generator],
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_at: tuple[float, ...] = (0.5,),
    aug: Augment | None = None,
    progress: bool = False,
    desc: str = "train",
    precision: str = "fp32",
    compile: bool = False,
    optimizer: str = "sgd",
    schedule: str = "step",
) -> list[TrainResult]:
    """Train `nets` (same architecture, e.g. N fresh initializations) together; `nets[r]` draws its
    shuffling and augmentation from `generators[r]` exactly as `train_model(nets[r], ...,
    generator=generators[r])` would, so each ends where it would alone, up to floating-point
    rounding. Every other argument is as for `train_model`, shared by all. The trained parameters
    are written back into `nets`. Each result's `seconds` is the shared wall time divided by N.

    Raises ConfigError when the networks cannot be stacked (see `batching_blocker`)."""
    nets = list(nets)
    if len(nets) != len(generators):
        raise ConfigError(f"train_models got {len(nets)} networks but {len(generators)} generators; give one each")
    if not nets:
        return []
    reason = batching_blocker(nets)
    if reason is not None:
        raise ConfigError(f"these networks cannot be trained together: {reason}; train them one at a time with train_model")
    return _train(
        _StackedNets(nets, compile), images, labels, list(generators), epochs=epochs, lr=lr, batch_size=batch_size,
        momentum=momentum, weight_decay=weight_decay, decay_at=decay_at, aug=aug, progress=progress,
        desc=desc, on_epoch_end=None, precision=precision, optimizer=optimizer, schedule=schedule,
    )


def batching_blocker(nets: Sequence[nn.Module]) -> str | None:
    """Why `nets` cannot be trained together by `train_models`, or None when they can.

    Stacking needs networks of one structure whose training changes nothing but their parameters:
    buffers updated in place during training (batch norm's running statistics) are not stacked."""
    first = nets[0]
    buffers = [name for name, _ in first.named_buffers()]
    if buffers:
        kinds = sorted({type(m).__name__ for m in first.modules() if any(True for _ in m.buffers(recurse=False))})
        return (f"{type(first).__name__} keeps buffers updated in place during training ({', '.join(kinds)}: "
                f"e.g. {buffers[0]})")
    shapes = [(n, tuple(p.shape), p.dtype, p.device) for n, p in first.named_parameters()]
    for net in nets[1:]:
        if type(net) is not type(first) or [(n, tuple(p.shape), p.dtype, p.device) for n, p in net.named_parameters()] != shapes:
            return "the networks differ in architecture, parameter shapes, dtype or device"
        if any(True for _ in net.buffers()):
            return f"{type(net).__name__} keeps buffers updated in place during training"
    if not all(p.requires_grad for p in first.parameters()):
        return "some parameters are frozen (requires_grad=False)"
    return None


class _OneNet:
    """One module trained in place: the loop's N = 1 case, exactly the module's own forward
    (channels_last: in that memory layout while it trains, given back in the default one)."""

    def __init__(self, net: nn.Module, compile: bool = False, channels_last: bool = False,
                 objective: Objective | None = None) -> None:
        self.net = net
        self.params = list(net.parameters())
        self.channels_last = channels_last
        if objective is None:
            self._loss = _maybe_compile(lambda x, y: classification_loss(net(x), y), compile)
        else:  # y is (target logits, hard labels)
            self._loss = _maybe_compile(lambda x, y: objective(net(x), *y), compile)

    def start(self) -> None:
        self.net.train()
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)  # in place: the optimizer keeps its tensors

    def losses(self, xs: list[Tensor], ys: list[Tensor]) -> Tensor:
        x = xs[0].contiguous(memory_format=torch.channels_last) if self.channels_last else xs[0]
        return self._loss(x, ys[0]).reshape(1)

    def finish(self) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.contiguous_format)


class _StackedNets:
    """N modules of one architecture as stacked parameters (leading dim N), trained with one
    vectorized call per step; `finish` copies the trained values back into the modules."""

    def __init__(self, nets: list[nn.Module], compile: bool = False) -> None:
        self.nets = nets
        params, _ = stack_module_state(nets)  # leaves with requires_grad, shape (N, ...)
        self.stacked = params
        self.params = list(params.values())
        base = copy.deepcopy(nets[0]).to("meta")  # the architecture only; parameters come from `stacked`
        base.train()

        def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return classification_loss(functional_call(base, p, (x,)), y)

        self._losses = _maybe_compile(vmap(loss_one), compile)

    def start(self) -> None:
        for net in self.nets:
            net.train()

    def losses(self, xs: list[Tensor], ys: list[Tensor]) -> Tensor:
        return self._losses(self.stacked, torch.stack(xs), torch.stack(ys))

    def finish(self) -> None:
        with torch.no_grad():
            for r, net in enumerate(self.nets):
                for name, p in net.named_parameters():
                    p.copy_(self.stacked[name][r])


def _maybe_compile(fn: Callable, compile: bool) -> Callable:
    """`fn` itself, or `torch.compile(fn)` when asked; a compiler that fails on the first call is
    reported as a ConfigError that says how to do without it."""
    if not compile:
        return fn
    compiled = torch.compile(fn)

    def call(*args):
        try:
            return compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            cause = getattr(e, "inner_exception", None) or e  # the compiler's own error, not dynamo's wrapper
            first = (str(cause).strip().splitlines() or [""])[0]
            raise ConfigError(f"torch.compile failed ({type(cause).__name__}: {first}); train without compile "
                              "(drop --compile / compile: true)") from e

    return call


def _train(
    model: _OneNet | _StackedNets,
    images: Tensor,
    labels: Tensor,
    generators: list[torch.Generator],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    decay_at: tuple[float, ...],
    aug: Augment | None,
    progress: bool,
    desc: str,
    on_epoch_end: Callable[[int, nn.Module], None] | None,
    precision: str = "fp32",
    objective: Objective | None = None,
    optimizer: str = "sgd",
    schedule: str = "step",
    resume: dict | None = None,
    on_epoch_state: Callable[[dict], None] | None = None,
    gsam: GSAMSettings | None = None,
) -> list[TrainResult]:
    """The loop. Network r's minibatches are drawn from `generators[r]` (a permutation per epoch,
    then one augmentation draw per minibatch); the summed per-network losses are minimized by one
    SGD over all parameters, which updates each network exactly as its own SGD would (the update
    is elementwise and network r's loss depends on its parameters alone)."""
    n = images.shape[0]
    if n == 0:
        raise DistillError("cannot train on an empty set of images")
    check_precision(precision, images.device)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "gsam":
        opt = GSAM(model.params, lr=lr, momentum=momentum, weight_decay=weight_decay, settings=gsam,
                   module=getattr(model, "net", None))
    else:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    milestones = {max(1, int(round(epochs * f))) for f in decay_at if 0 < f < 1} if schedule == "step" else set()
    first = 0
    if resume is not None:  # one network (train_model): its optimizer and generator where they were
        first = int(resume["epoch"])
        opt.load_state_dict(resume["optimizer"])
        generators[0].set_state(resume["generator"])
    model.start()
    t0 = time.perf_counter()
    steps = 0
    final = [math.nan] * len(generators)
    for ep in tqdm(range(first, epochs), desc=desc, disable=not progress, leave=False, unit="ep",
                   initial=first, total=epochs):
        if ep in milestones:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * ep / epochs))
        perms = [torch.randperm(n, generator=g).to(images.device) for g in generators]
        for start in range(0, n, batch_size):
            xs, ys = [], []
            for perm, g in zip(perms, generators):
                idx = perm[start : start + batch_size]
                x, y = images[idx], labels[idx]
                if aug is not None:
                    x = aug(x, g)
                if objective is not None:
                    x, target, hard = objective.targets(x, y, g)
                    y = (target, hard)
                xs.append(x)
                ys.append(y)
            if isinstance(opt, GSAM):
                def closure(xs=xs, ys=ys):
                    opt.zero_grad(set_to_none=True)
                    with autocast(images.device, precision):
                        out = model.losses(xs, ys)
                    out.sum().backward()
                    return out

                losses = opt.step(closure)
            else:
                with autocast(images.device, precision):
                    losses = model.losses(xs, ys)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
            steps += 1
        final = losses.detach().cpu().tolist()
        for r, loss_val in enumerate(final):
            if not math.isfinite(loss_val):
                which = f" (network {r + 1} of {len(final)})" if len(final) > 1 else ""
                raise DistillError(
                    f"training loss became {loss_val} at epoch {ep + 1}{which}; lower the learning rate (now {lr})"
                )
        if on_epoch_end is not None:
            on_epoch_end(ep, model.net)
        if on_epoch_state is not None:
            on_epoch_state({"epoch": ep + 1, "optimizer": opt.state_dict(), "generator": generators[0].get_state()})
    model.finish()
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    seconds = (time.perf_counter() - t0) / len(generators)
    return [TrainResult(seconds, epochs, steps, loss_val) for loss_val in final]


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             precision: str = "fp32") -> float:
    """Top-1 accuracy in percent, network in eval mode (forward under autocast for bf16)."""
    check_precision(precision, images.device)
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        with autocast(images.device, precision):
            out = net(images[start : start + batch_size])
        correct += int((out.argmax(1) == labels[start : start + batch_size]).sum())
    net.train(was_training)
    return 100.0 * correct / max(1, images.shape[0])
