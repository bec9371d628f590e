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
Guo et al., ICLR 2024; `datm.py`, `labels.py`): the labels are logits learned with the images by
SGD (`lr_y`, momentum `momentum_y`). The student trains on softmax(logits) with the soft
cross-entropy; the SyntheticSet stores softmax(logits) as its (N, K) label matrix, and
evaluation's `classification_loss` trains on it, which is the authors' ``SoftCrossEntropy`` on the
logits. The checkpoint keeps the logits themselves.

Two variants (``variant``, named in the run's config.yaml with the other method options):

- ``paper`` (default): the paper's description. Start epochs uniform in {0, ..., max_start_epoch
  - 1} as MTT, every update applied, the run's starting images (``--init``), and the soft labels
  initialized from one expert's logits (expert `label_expert` at epoch `label_epoch`, -1 = its
  last). DATM's options (min_start_epoch, current_max_start_epoch, expansion_end_epoch,
  sequential_generation, threshold, image_init, label_init) are not used.
- ``code``: the released code (``distill/PAD.py``, ``PAD_depth.py``), which runs DATM underneath:
  DATM's growing start-epoch range, its threshold skip, its starting images that the experts
  classify correctly and its labels averaged over the experts (each as DATM's option says), with
  PAD's parameter selection on top.

Not carried over from the authors' code: nothing of DATM's parts now; their experts' GSAM training
is `datadistill experts --optimizer gsam` (the experts folder, not this method).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import ConfigError
from ...nets import ParamSlot, param_layout
from ...synset import SyntheticSet
from ..registry import register_method
from .datm import DATM, DATMOptions
from .mtt import trajectory_loss

SELECTIONS = ("depth", "loss")
VARIANTS = ("paper", "code")


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
class PADOptions(DATMOptions):
    """DATM's options plus PAD's (defaults: alpha 0, no soft labels, the paper variant, i.e. plain
    MTT matching; the presets in presets/pad.yaml set the paper's values)."""

    alpha: float = 0.0  # fraction of the parameters left out of the matching loss
    selection: str = "depth"  # depth (the paper: shallow ones) | loss (the released code: smallest error)
    soft_labels: bool = False  # learn soft labels (logits) with the images
    require_curriculum: bool = True  # refuse experts trained without the data scheduler
    variant: str = "paper"  # paper: as the paper describes it | code: as the released code runs it (DATM's parts on)

    @classmethod
    def method_name(cls) -> str:
        return "pad"

    def datm_parts(self) -> bool:
        return self.variant == "code"

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"pad option variant must be {' or '.join(VARIANTS)}, got {self.variant!r}")
        super().validate()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha < 1:
            raise ConfigError(f"pad option alpha must be in [0, 1), got {self.alpha!r}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"pad option selection must be {' or '.join(SELECTIONS)}, got {self.selection!r}")
        if not isinstance(self.require_curriculum, bool):
            raise ConfigError(f"pad option require_curriculum must be true or false, got {self.require_curriculum!r}")


@register_method("pad")
class PAD(DATM):
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

    def init(self, syn: SyntheticSet) -> None:
        super().init(syn)
        o = self.opts
        self.meta["pad"] = {
            "variant": o.variant, "selection": o.selection, "alpha": o.alpha,
            "kept_parameters": int(self.num_params - int(o.alpha * self.num_params)), "parameters": self.num_params,
            "experts_curriculum": (self.curriculum or {}).get("kind", "none"),
        }
        if not self.datm_parts():
            self.meta.pop("datm", None)

    # -- the hook of TrajectoryMatching ------------------------------------------------
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
