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

DATM (`datm.py`) and PAD (`pad.py`) are this method with hooks overridden: `start_bounds` (DATM's
growing range of start epochs), `accept` (DATM's skipped update above a loss threshold),
`unroll_labels` and `optimizers` (learned soft labels, `labels.py`) and `match_loss` (PAD: the loss
on a subset of the parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ...augment import DSA, DSAParams
from ...errors import ConfigError, DistillError, DivergedError
from ...nets import functional_forward, make_net
from ...rng import make_generator
from ...synset import SyntheticSet
from ...train import classification_loss
from ..base import ImageDistiller, check_finite
from ..registry import register_method
from .memory import UnrollEstimate, available_bytes, choose_unroll, step_graph_bytes

UNROLL_MODES = ("plain", "checkpoint", "tesla")  # what `unroll` computes; all give the same gradient
UNROLL_OPTIONS = (*UNROLL_MODES, "auto")  # the option's values: auto picks one of the modes per run


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


def student_gradient(net: nn.Module, w: Tensor, x: Tensor, y: Tensor, params: DSAParams | None, dsa: DSA | None,
                     create_graph: bool) -> Tensor:
    """One student step's gradient d CE(net_w(dsa(x)), y) / dw (`w` requires grad)."""
    if dsa is not None and params is not None:
        x = dsa(x, params)
    loss = classification_loss(functional_forward(net, w, x), y)
    (g,) = torch.autograd.grad(loss, w, create_graph=create_graph)
    return g


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
        g = student_gradient(net, w, images[idx], labels[idx], params, dsa, create_graph)
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


class _TeslaUnroll(torch.autograd.Function):
    """The whole unroll with memory independent of its length (TESLA, Cui et al., ICML 2023).

    Forward: the `len(batches)` steps without any graph, keeping only the parameter vectors
    w_0 .. w_{N-1}. Backward: with lam = dL/dw_N (`grad_out`), for i = N-1 down to 0, recompute
    step i's gradient g_i = dCE_i/dw at w_i with its graph (one step at a time) and take one
    vector-Jacobian product of s_i = <g_i, lam> (lam fixed) w.r.t. w_i, the batch's images and
    labels; since w_{i+1} = w_i - lr g_i:

        dL/dX_b   += -lr * ds_i/dX_b      dL/dlr += -s_i      dL/dy_b += -lr * ds_i/dy_b
        lam       <- lam - lr * ds_i/dw_i  (= (I - lr H_i) lam, H_i the step's Hessian)

    and finally dL/dw_0 = lam. This is the reverse-mode gradient of the plain unroll, term for
    term: equal to it up to floating-point error."""

    @staticmethod
    def forward(ctx, w: Tensor, images: Tensor, lr: Tensor, labels: Tensor, net: nn.Module,  # type: ignore[override]
                batches: Sequence[Tensor], augs: Sequence[DSAParams | None], dsa: DSA | None) -> Tensor:
        ctx.net, ctx.batches, ctx.augs, ctx.dsa = net, list(batches), list(augs), dsa
        ctx.save_for_backward(images, lr, labels)
        trajectory: list[Tensor] = []
        w = w.detach()
        step_lr = lr.detach()
        with torch.enable_grad():
            for idx, params in zip(ctx.batches, ctx.augs):
                trajectory.append(w)
                w_in = w.requires_grad_(True)
                g = student_gradient(net, w_in, images[idx].detach(), labels[idx].detach(), params, dsa, False)
                w = (w_in - step_lr * g).detach()
        ctx.trajectory = trajectory
        return w

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        images, lr, labels = ctx.saved_tensors
        need_img, need_lr, need_y = ctx.needs_input_grad[1:4]
        step_lr = lr.detach()
        lam = grad_out.detach()
        g_img = torch.zeros_like(images) if need_img else None
        g_lr = torch.zeros_like(lr) if need_lr else None
        g_y = torch.zeros_like(labels) if need_y else None
        trajectory = ctx.trajectory
        for i in range(len(ctx.batches) - 1, -1, -1):
            idx = ctx.batches[i]
            with torch.enable_grad():
                w = trajectory[i].requires_grad_(True)
                x = images[idx].detach().requires_grad_(need_img)
                y = labels[idx].detach().requires_grad_(need_y)
                g = student_gradient(ctx.net, w, x, y, ctx.augs[i], ctx.dsa, True)
                s = torch.dot(g.reshape(-1), lam.reshape(-1))
                inputs = [w] + ([x] if need_img else []) + ([y] if need_y else [])
                grads = list(torch.autograd.grad(s, inputs, allow_unused=True))
            hv = grads.pop(0)
            if need_img:
                gx = grads.pop(0)
                if gx is not None:
                    g_img.index_add_(0, idx, gx, alpha=-float(step_lr))
            if need_y:
                gy = grads.pop(0)
                if gy is not None:
                    g_y.index_add_(0, idx, gy, alpha=-float(step_lr))
            if need_lr:
                g_lr -= s.detach()
            if hv is not None:
                lam = lam - step_lr * hv
            trajectory[i] = None  # this step's parameters are no longer needed
            del g, s, w, x, y, hv
        ctx.trajectory = None
        return (lam if ctx.needs_input_grad[0] else None), g_img, g_lr, g_y, None, None, None, None


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
    `segment` steps (0: round(sqrt(steps))) whose graphs are recomputed during the backward pass.
    mode "tesla": no graph kept across steps, the parameter vector of every step stored, each step
    recomputed once in the backward pass (`_TeslaUnroll`; memory flat in the number of steps)."""
    if mode == "plain":
        return student_unroll(net, start.detach().requires_grad_(True), images, labels, lr, batches, augs, dsa)
    if mode == "tesla":
        return _TeslaUnroll.apply(start.detach(), images, lr, labels, net, list(batches), list(augs), dsa)
    if mode != "checkpoint":
        hint = " (resolve auto with choose_unroll first)" if mode == "auto" else ""
        raise ConfigError(f"unknown unroll mode {mode!r}{hint}; choose {', '.join(UNROLL_MODES)}")
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
    unroll: str = "plain"  # plain | checkpoint | tesla (memory-bounded, same gradient) | auto (picked from memory)
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
        if self.unroll not in UNROLL_OPTIONS:
            raise ConfigError(f"mtt option unroll must be one of {', '.join(UNROLL_OPTIONS)}, got {self.unroll!r}")
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
        self.unroll_mode, self.unroll_note = o.unroll, ""
        if o.unroll == "auto":
            self.unroll_mode, self.unroll_note = choose_unroll(self.estimate_memory(),
                                                               available_bytes(self.device)[0])
            self.meta["unroll"] = self.unroll_mode

    def estimate_memory(self) -> UnrollEstimate:
        """The memory of one iteration's unroll in each mode (`memory.py`), from one probe step on
        the first `batch_syn` images at the first expert's start (its DSA values from a generator of
        its own: the run generator is not touched)."""
        idx = torch.arange(self.batch_syn, device=self.device)
        w = self.experts.params(0, 0, self.device)
        aug = (self.dsa.sample(len(idx), make_generator(self.cfg.seed, "unroll-probe"), siamese=False)
               if self.dsa is not None else None)
        step = step_graph_bytes(self.net, w, self.images[idx], self.labels[idx], aug, self.dsa)
        return UnrollEstimate(step, w.numel() * w.element_size(), self.opts.syn_steps, self.opts.segment)

    def memory_estimate(self) -> dict:
        est = self.estimate_memory()
        return {"iteration_mib": round(est.bytes(self.unroll_mode) / 2**20, 3), "unroll": self.unroll_mode,
                "unroll_mib": est.table(), "step_graph_mib": round(est.step_bytes / 2**20, 3),
                "how": "from one probe step's graph (methods/trajectory/memory.py)"}

    def setup_notes(self) -> list[str]:
        return [self.unroll_note] if self.unroll_note else []

    # -- one iteration ------------------------------------------------------------------
    def start_bounds(self, it: int) -> tuple[int, int]:
        """The start epochs iteration `it` draws from: uniform in {lo, ..., hi - 1} (MTT: 0 and
        max_start_epoch; DATM's growing range overrides it)."""
        return 0, self.opts.max_start_epoch

    def accept(self, loss: Tensor) -> bool:
        """Whether this iteration's update is applied (DATM's threshold skip overrides it)."""
        return True

    def plan(self, it: int) -> UnrollPlan:
        """Draw the expert, the start epoch, the minibatches and their DSA values from the run generator."""
        o = self.opts
        expert = int(torch.randint(self.experts.num_experts, (1,), generator=self.gen))
        lo, hi = self.start_bounds(it)
        start_epoch = int(torch.randint(lo, hi, (1,), generator=self.gen))
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
        p = self.plan(it)
        self.last = p
        start = self.experts.params(p.expert, p.start_epoch, self.device)
        target = self.experts.params(p.expert, p.start_epoch + self.opts.expert_epochs, self.device)
        end = unroll(self.net, start, self.images, self.unroll_labels(), self.syn_lr, p.batches, p.augs, self.dsa,
                     mode=self.unroll_mode, segment=self.opts.segment)
        return self.match_loss(end, start, target)

    def step(self, it: int) -> dict[str, float]:
        for opt in self.optimizers():
            opt.zero_grad(set_to_none=True)
        loss = self.loss(it)
        check_finite(loss, it, f"lower lr_img (now {self.cfg.lr_img}) or lr_lr (now {self.opts.lr_lr})")
        loss.backward()
        update = self.accept(loss)
        if update:
            for opt in self.optimizers():
                opt.step()
        lr = float(self.syn_lr.detach())
        if not (math.isfinite(lr) and lr > 0):
            raise DivergedError(
                f"the learned step size became {lr} at iteration {it}; lower lr_lr (now {self.opts.lr_lr})."
            )
        rec = {"loss": float(loss.detach()), "lr": lr, "expert": self.last.expert, "start_epoch": self.last.start_epoch}
        if not update:
            rec["skipped"] = 1
        return rec

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
