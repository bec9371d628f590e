"""Trajectory matching (MTT; Cazenavette et al., "Dataset Distillation by Matching Training
Trajectories", CVPR 2022).

Each iteration picks an expert and a start epoch t (both from the run's generator), starts a
student at the expert's parameters theta*_t, trains it for `syn_steps` SGD steps on minibatches
of the synthetic set (each minibatch with its own per-sample DSA draw) with a learnable step size
alpha, and measures how far it ended from where the expert was M = `expert_epochs` epochs later:

    loss = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

The student is a function of one flat parameter vector (`nets.functional_forward`), so the whole
unroll is differentiable with respect to the images and alpha. Images (lr_img) and alpha (lr_lr)
are updated by SGD with momentum 0.5; alpha starts at `lr_teacher` and is stored with the set
(`SyntheticSet.lr`), which evaluation then trains with.

Memory: `unroll="plain"` keeps the graph of every step (memory grows with syn_steps);
`unroll="checkpoint"` keeps only the parameter vector at segment boundaries and recomputes one
segment at a time in the backward pass (same gradient up to floating-point error; one extra
forward of the unroll). Every random draw of the unroll (minibatches, DSA values) is made before
it from the run generator, so the recomputation sees the same ones.

Where the authors' code and paper differ, this follows the code (github.com/GeorgeCazenavette/
mtt-distillation, distill.py): the start epoch is uniform in {0, ..., max_start_epoch - 1}
(``np.random.randint(0, max_start_epoch)``; the paper's Algorithm 1 writes t <= T+), and the
minibatches are consecutive chunks of a random permutation of the set, a new permutation when one
is used up. One difference: the expert is drawn uniformly at random each iteration (the code
walks through a shuffled list of experts).

PAD (`pad.py`) is this method with three hooks overridden: `unroll_labels` (learned soft labels),
`optimizers` (their optimizer too) and `match_loss` (the loss on a subset of the parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ...augment import DSA, DSAParams
from ...errors import ConfigError, DistillError
from ...nets import functional_forward, make_net
from ...rng import make_generator
from ...synset import SyntheticSet
from ...train import classification_loss
from ..base import ImageDistiller, check_finite
from ..registry import register_method

UNROLL_MODES = ("plain", "checkpoint")


# ------------------------------------------------------------------------------ pure functions
def trajectory_loss(student_end: Tensor, start: Tensor, target: Tensor, keep: Tensor | None = None) -> Tensor:
    """||student_end - target||^2 / ||start - target||^2 (the expert's own progress normalizes).

    `keep` (a boolean mask over the flat parameter vector, PAD's parameter selection): both sums run
    over the kept entries only."""
    diff_end, diff_start = student_end - target, start - target
    if keep is not None:
        diff_end, diff_start = diff_end[keep], diff_start[keep]
    denom = diff_start.square().sum()
    if not float(denom) > 0:
        raise DistillError("the expert did not move between the start and target epochs (distance 0)"
                           + (" on the kept parameters" if keep is not None else ""))
    return diff_end.square().sum() / denom


def student_unroll(
    net: nn.Module,
    start: Tensor,
    images: Tensor,
    labels: Tensor,
    lr: Tensor,
    batches: Sequence[Tensor],
    augs: Sequence[DSAParams | None],
    dsa: DSA | None,
    create_graph: bool = True,
) -> Tensor:
    """`len(batches)` SGD steps of the student from `start` (a flat parameter vector that
    requires grad): w <- w - lr * d CE(net_w(dsa(images[b])), labels[b]) / dw.

    With `create_graph` the result is differentiable with respect to `start`, `images` and `lr`
    (the whole unroll's graph is kept); without it only the values are computed, one step's graph
    at a time."""
    w = start
    for idx, params in zip(batches, augs):
        x = images[idx]
        if dsa is not None and params is not None:
            x = dsa(x, params)
        loss = classification_loss(functional_forward(net, w, x), labels[idx])
        (g,) = torch.autograd.grad(loss, w, create_graph=create_graph)
        w = w - lr * g
        if not create_graph:
            w = w.detach().requires_grad_(True)
    return w


class _CheckpointedSegment(torch.autograd.Function):
    """A segment of the unroll whose graph is not kept: recomputed in the backward pass.

    Differentiable with respect to the start `w`, the images, the step size and the labels (soft
    labels that are learned, PAD; integer labels get no gradient)."""

    @staticmethod
    def forward(ctx, w: Tensor, images: Tensor, lr: Tensor, labels: Tensor, run: Callable) -> Tensor:  # type: ignore[override]
        ctx.run = run
        ctx.save_for_backward(w, images, lr, labels)
        with torch.enable_grad():
            out = run(w.detach().requires_grad_(True), images.detach(), lr.detach(), labels.detach(), False)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        saved = ctx.saved_tensors
        need = (True, *ctx.needs_input_grad[1:4])  # the inner steps differentiate w.r.t. w in any case
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip(saved, need)]
            out = ctx.run(*leaves, True)
            inputs = [t for t, n in zip(leaves, need) if n]
            grads = iter(torch.autograd.grad(out, inputs, grad_out, allow_unused=True))
            gw, gi, gl, gy = (next(grads) if n else None for n in need)
        return (gw if ctx.needs_input_grad[0] else None), gi, gl, gy, None


def unroll(
    net: nn.Module,
    start: Tensor,
    images: Tensor,
    labels: Tensor,
    lr: Tensor,
    batches: Sequence[Tensor],
    augs: Sequence[DSAParams | None],
    dsa: DSA | None,
    mode: str = "plain",
    segment: int = 0,
) -> Tensor:
    """The student's final parameters, differentiable w.r.t. `images`, `lr` and (float, soft)
    `labels`.

    mode "plain": `student_unroll` with the whole graph kept. mode "checkpoint": segments of
    `segment` steps (0: round(sqrt(steps))) whose graphs are recomputed during the backward pass."""
    if mode == "plain":
        return student_unroll(net, start.detach().requires_grad_(True), images, labels, lr, batches, augs, dsa)
    if mode != "checkpoint":
        raise ConfigError(f"unknown unroll mode {mode!r}; choose {' or '.join(UNROLL_MODES)}")
    k = segment or max(1, round(math.sqrt(len(batches))))
    w = start.detach()
    for s in range(0, len(batches), k):
        seg_b, seg_a = list(batches[s : s + k]), list(augs[s : s + k])

        def run(w_in, im, step_lr, lab, create_graph, seg_b=seg_b, seg_a=seg_a):
            return student_unroll(net, w_in, im, lab, step_lr, seg_b, seg_a, dsa, create_graph=create_graph)

        w = _CheckpointedSegment.apply(w, images, lr, labels, run)
    return w


# ------------------------------------------------------------------------------ the method
@dataclass
class MTTOptions:
    """MTT's own settings (defaults: the authors' distill.py argument defaults)."""

    syn_steps: int = 20  # student steps per iteration (N)
    expert_epochs: int = 3  # M: the target is the expert M epochs after the start
    max_start_epoch: int = 25  # start epoch uniform in {0, ..., max_start_epoch - 1}
    lr_lr: float = 1e-5  # learning rate of the learnable step size
    lr_teacher: float = 0.01  # initial value of the learnable step size
    momentum_lr: float = 0.5  # SGD momentum of the step size (the code's 0.5)
    batch_syn: int | None = None  # synthetic images per student step; None: all of them
    unroll: str = "plain"  # plain | checkpoint (memory-bounded, same gradient)
    segment: int = 0  # checkpoint mode: steps per recomputed segment; 0: round(sqrt(syn_steps))

    def validate(self) -> None:
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"mtt option {name} must be a positive integer, got {v!r}")
        if not self.lr_teacher > 0:
            raise ConfigError(f"mtt option lr_teacher must be > 0, got {self.lr_teacher}")
        if not self.lr_lr >= 0:
            raise ConfigError(f"mtt option lr_lr must be >= 0, got {self.lr_lr}")
        if self.batch_syn is not None and (not isinstance(self.batch_syn, int) or self.batch_syn < 1):
            raise ConfigError(f"mtt option batch_syn must be a positive integer or null (all), got {self.batch_syn!r}")
        if self.unroll not in UNROLL_MODES:
            raise ConfigError(f"mtt option unroll must be {' or '.join(UNROLL_MODES)}, got {self.unroll!r}")
        if isinstance(self.segment, bool) or not isinstance(self.segment, int) or self.segment < 0:
            raise ConfigError(f"mtt option segment must be an integer >= 0, got {self.segment!r}")


@dataclass
class UnrollPlan:
    """The random draws of one iteration, all made before the unroll."""

    expert: int
    start_epoch: int
    batches: list[Tensor]
    augs: list[DSAParams | None]


@register_method("mtt")
class TrajectoryMatching(ImageDistiller):
    Options = MTTOptions
    requires = ("experts",)

    @classmethod
    def data_zca(cls, cfg, data, artifacts):
        """With ZCA, the experts' own whitening (a run that matches them must see their data)."""
        return artifacts["experts"].zca if cfg.zca else None

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        o.validate()
        self.experts = self.artifacts["experts"]
        last_start = o.max_start_epoch - 1
        if last_start + o.expert_epochs > self.experts.epochs:
            raise ConfigError(
                f"max_start_epoch {o.max_start_epoch} and expert_epochs {o.expert_epochs} need experts of at least "
                f"{last_start + o.expert_epochs} epochs; those in {cfg.experts} have {self.experts.epochs}. Lower "
                "them (--opt max_start_epoch=N) or train longer experts"
            )
        # The student network only supplies the architecture: its parameters come from the experts.
        self.net = make_net(cfg.model, self.spec.channels, self.spec.num_classes, self.spec.im_size,
                            generator=make_generator(cfg.seed, "mtt-student"), **cfg.model_args).to(device)
        self.net.train().requires_grad_(False)
        self.last: UnrollPlan | None = None

    def init(self, syn: SyntheticSet) -> None:
        super().init(syn)
        o = self.opts
        self.syn_lr = torch.tensor(float(o.lr_teacher), device=self.device, requires_grad=True)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=o.lr_lr, momentum=o.momentum_lr)
        self.batch_syn = min(o.batch_syn or len(self.images), len(self.images))

    # -- one iteration ------------------------------------------------------------------
    def plan(self) -> UnrollPlan:
        """Draw the expert, the start epoch, the minibatches and their DSA values from the run generator."""
        o = self.opts
        expert = int(torch.randint(self.experts.num_experts, (1,), generator=self.gen))
        start_epoch = int(torch.randint(o.max_start_epoch, (1,), generator=self.gen))
        n = len(self.images)
        chunks: list[Tensor] = []
        batches: list[Tensor] = []
        augs: list[DSAParams | None] = []
        for _ in range(o.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(n, generator=self.gen).split(self.batch_syn))
            idx = chunks.pop(0)
            batches.append(idx.to(self.device))
            augs.append(self.dsa.sample(len(idx), self.gen, siamese=False) if self.dsa is not None else None)
        return UnrollPlan(expert, start_epoch, batches, augs)

    def unroll_labels(self) -> Tensor:
        """The labels the student trains on (hard here; PAD's learned soft labels override it)."""
        return self.labels

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """What one iteration updates: the images and the step size."""
        return [self.opt_img, self.opt_lr]

    def match_loss(self, end: Tensor, start: Tensor, target: Tensor) -> Tensor:
        """The matching loss of the student's end point (PAD overrides it with its parameter selection)."""
        return trajectory_loss(end, start, target)

    def loss(self, it: int) -> Tensor:
        p = self.plan()
        self.last = p
        start = self.experts.params(p.expert, p.start_epoch, self.device)
        target = self.experts.params(p.expert, p.start_epoch + self.opts.expert_epochs, self.device)
        end = unroll(self.net, start, self.images, self.unroll_labels(), self.syn_lr, p.batches, p.augs, self.dsa,
                     mode=self.opts.unroll, segment=self.opts.segment)
        return self.match_loss(end, start, target)

    def step(self, it: int) -> dict[str, float]:
        for opt in self.optimizers():
            opt.zero_grad(set_to_none=True)
        loss = self.loss(it)
        check_finite(loss, it, f"lower lr_img (now {self.cfg.lr_img}) or lr_lr (now {self.opts.lr_lr})")
        loss.backward()
        for opt in self.optimizers():
            opt.step()
        lr = float(self.syn_lr.detach())
        if not (math.isfinite(lr) and lr > 0):
            raise DistillError(
                f"the learned step size became {lr} at iteration {it}; lower lr_lr (now {self.opts.lr_lr}). "
                "The last checkpoint is kept."
            )
        return {"loss": float(loss.detach()), "lr": lr, "expert": self.last.expert, "start_epoch": self.last.start_epoch}

    # -- set and state ------------------------------------------------------------------
    def synthetic_set(self) -> SyntheticSet:
        syn = super().synthetic_set()
        syn.lr = float(self.syn_lr.detach())
        return syn

    def state_dict(self) -> dict:
        return {**super().state_dict(), "syn_lr": self.syn_lr.detach().cpu().clone(), "opt_lr": self.opt_lr.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"].to(self.device))
        self.opt_lr.load_state_dict(state["opt_lr"])
