"""PAD (Li et al., "Prioritize Alignment in Dataset Distillation", 2024, arXiv:2408.03360; code:
github.com/NUS-HPC-AI-Lab/PAD): trajectory matching (MTT, `trajectory.py`) that filters
misaligned information in both of its stages.

1. Information extraction: the experts learn under a data scheduler ordered by EL2N difficulty
   (`datadistill experts --curriculum el2n`; `difficulty.py`, `experts.py`). This method expects
   such experts and says so otherwise (``require_curriculum=false`` matches plain experts: PAD
   without its scheduler).
2. Information embedding: the matching loss uses only part of the parameter vector. The paper's
   rule (``selection="depth"``, default) discards the shallow fraction `alpha` of the parameters
   in network depth order, i.e. the first floor(alpha * P) entries of the flat vector
   (`nets.param_layout`: module order is depth order), counted in parameters, not whole layers, as
   the authors' ``PAD_depth.py`` does (``loss_indices[int(depth_ratio * P):]``). The released code's
   other rule (``selection="loss"``, ``PAD.py``) discards, per iteration, the floor(alpha * P)
   entries with the smallest squared error (student end - target)^2. Either way both sums of

       ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

   run over the kept entries only (`trajectory_loss(..., keep=mask)`).

Soft labels (``soft_labels=true``), as in the trajectory-matching line PAD builds on (DATM,
Guo et al., ICLR 2024): the labels are logits, initialized from one expert's outputs on the
starting images (expert `label_expert` at epoch `label_epoch`, -1 = its last), and learned with
the images by SGD (`lr_y`, momentum `momentum_y`). The student trains on softmax(logits) with the
soft cross-entropy; the SyntheticSet stores softmax(logits) as its (N, K) label matrix, and
evaluation's `classification_loss` trains on it, which is the authors' ``SoftCrossEntropy`` on the
logits. The checkpoint keeps the logits themselves.

Not carried over from the authors' code (DATM's parts, not PAD's): the skipped update when the
loss exceeds a threshold, the growing start-epoch range ("sequential generation"), initializing
from correctly classified real images with labels averaged over experts, and sharpness-aware
(GSAM) expert training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import ConfigError
from ...nets import ParamSlot, functional_forward, param_layout
from ...synset import SyntheticSet
from ..registry import register_method
from .mtt import MTTOptions, TrajectoryMatching, trajectory_loss

SELECTIONS = ("depth", "loss")


# ------------------------------------------------------------------------------ pure functions
def depth_keep_mask(num_params: int, alpha: float, device: str | torch.device = "cpu") -> Tensor:
    """Boolean mask over the flat parameter vector: False for the first floor(alpha * P) (shallow)
    entries, True for the rest (the deep ones)."""
    cut = int(alpha * num_params)
    keep = torch.ones(num_params, dtype=torch.bool, device=device)
    keep[:cut] = False
    return keep


def loss_keep_mask(student_end: Tensor, target: Tensor, alpha: float) -> Tensor:
    """Boolean mask: False for the floor(alpha * P) entries with the smallest squared error
    (student_end - target)^2 (ties: the lower index goes first), True for the rest."""
    err = (student_end.detach() - target.detach()).square()
    drop = int(alpha * err.numel())
    keep = torch.ones_like(err, dtype=torch.bool)
    keep[torch.sort(err, stable=True).indices[:drop]] = False
    return keep


def kept_per_tensor(layout: list[ParamSlot], keep: Tensor) -> list[tuple[str, int, int]]:
    """(parameter name, entries kept, entries) for each parameter tensor of the flat layout."""
    return [(s.name, int(keep[s.offset : s.offset + s.numel].sum()), s.numel) for s in layout]


# ------------------------------------------------------------------------------ the method
@dataclass
class PADOptions(MTTOptions):
    """MTT's options plus PAD's (defaults: alpha 0 and no soft labels, i.e. plain MTT matching;
    the presets in presets/pad.yaml set the paper's values)."""

    alpha: float = 0.0  # fraction of the parameters left out of the matching loss
    selection: str = "depth"  # depth (the paper: shallow ones) | loss (the released code: smallest error)
    soft_labels: bool = False  # learn soft labels (logits) with the images
    lr_y: float = 2.0  # SGD learning rate of the label logits (the authors' lr_y)
    momentum_y: float = 0.9  # SGD momentum of the label logits (the authors' Momentum_y)
    label_expert: int = 0  # which expert initializes the label logits
    label_epoch: int = -1  # at which epoch of it (-1: its last)
    require_curriculum: bool = True  # refuse experts trained without the data scheduler

    def validate(self) -> None:
        super().validate()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha < 1:
            raise ConfigError(f"pad option alpha must be in [0, 1), got {self.alpha!r}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"pad option selection must be {' or '.join(SELECTIONS)}, got {self.selection!r}")
        for name in ("soft_labels", "require_curriculum"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"pad option {name} must be true or false, got {getattr(self, name)!r}")
        if not self.lr_y >= 0:
            raise ConfigError(f"pad option lr_y must be >= 0, got {self.lr_y}")
        if not 0 <= self.momentum_y < 1:
            raise ConfigError(f"pad option momentum_y must be in [0, 1), got {self.momentum_y}")


@register_method("pad")
class PAD(TrajectoryMatching):
    Options = PADOptions

    @classmethod
    def make_hint(cls, kind, cfg):
        """PAD's experts learn under its data scheduler."""
        return super().make_hint(kind, cfg).replace(" --out", " --curriculum el2n --out")

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        cur = self.experts.manifest.get("curriculum")
        if cur is None and o.require_curriculum:
            raise ConfigError(
                f"pad expects experts trained with its data scheduler, but those in {cfg.experts} were trained on "
                f"the whole training split every epoch. Train them with `datadistill experts --dataset {cfg.dataset} "
                f"--curriculum el2n --out NEW_DIR{' --zca' if cfg.zca else ''}`, or pass --opt require_curriculum=false "
                "to match them anyway (PAD without its data scheduler)"
            )
        self.curriculum = cur
        self.layout = param_layout(self.net)
        self.num_params = sum(s.numel for s in self.layout)
        self.depth_keep = (depth_keep_mask(self.num_params, o.alpha, device)
                           if o.selection == "depth" and o.alpha > 0 else None)
        self.label_epoch = o.label_epoch if o.label_epoch >= 0 else self.experts.epochs + 1 + o.label_epoch
        if o.soft_labels:
            if not 0 <= o.label_expert < self.experts.num_experts:
                raise ConfigError(f"pad option label_expert is {o.label_expert}; the experts in {cfg.experts} are "
                                  f"0..{self.experts.num_experts - 1}")
            if not 0 <= self.label_epoch <= self.experts.epochs:
                raise ConfigError(f"pad option label_epoch is {o.label_epoch}; the experts have epochs "
                                  f"0..{self.experts.epochs} (-1: the last)")

    def init(self, syn: SyntheticSet) -> None:
        super().init(syn)
        o = self.opts
        self.meta["pad"] = {
            "selection": o.selection, "alpha": o.alpha,
            "kept_parameters": int(self.num_params - int(o.alpha * self.num_params)), "parameters": self.num_params,
            "experts_curriculum": (self.curriculum or {}).get("kind", "none"),
        }
        self.label_logits = None
        if o.soft_labels:
            self.label_logits = self.expert_logits(self.images.detach()).requires_grad_(True)
            self.opt_y = torch.optim.SGD([self.label_logits], lr=o.lr_y, momentum=o.momentum_y)
            self.meta["soft_labels"] = (f"softmax of logits learned with the images, initialized from expert "
                                        f"{o.label_expert} at epoch {self.label_epoch}")

    @torch.no_grad()
    def expert_logits(self, images: Tensor, chunk: int = 500) -> Tensor:
        """The label-initializing expert's logits on `images` (network in eval mode)."""
        w = self.experts.params(self.opts.label_expert, self.label_epoch, self.device)
        self.net.eval()
        try:
            out = torch.cat([functional_forward(self.net, w, images[s : s + chunk]) for s in range(0, len(images), chunk)])
        finally:
            self.net.train()
        return out.detach().float().clone()

    # -- the hooks of TrajectoryMatching -------------------------------------------------
    def unroll_labels(self) -> Tensor:
        return torch.softmax(self.label_logits, dim=1) if self.label_logits is not None else self.labels

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return super().optimizers() + ([self.opt_y] if self.label_logits is not None else [])

    def keep_mask(self, end: Tensor, target: Tensor) -> Tensor | None:
        """The entries the loss uses this iteration (None: all of them)."""
        o = self.opts
        if o.alpha == 0:
            return None
        if o.selection == "depth":
            return self.depth_keep
        return loss_keep_mask(end, target, o.alpha)

    def match_loss(self, end: Tensor, start: Tensor, target: Tensor) -> Tensor:
        return trajectory_loss(end, start, target, self.keep_mask(end, target))

    # -- set and state ------------------------------------------------------------------
    def synthetic_set(self) -> SyntheticSet:
        syn = super().synthetic_set()
        if self.label_logits is not None:
            syn.labels = torch.softmax(self.label_logits.detach(), dim=1).clone()
        return syn

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.label_logits is not None:
            state.update(label_logits=self.label_logits.detach().cpu().clone(), opt_y=self.opt_y.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.label_logits is not None:
            with torch.no_grad():
                self.label_logits.copy_(state["label_logits"].to(self.device))
            self.opt_y.load_state_dict(state["opt_y"])
