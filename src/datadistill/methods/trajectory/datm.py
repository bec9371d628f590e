"""DATM: difficulty-aligned trajectory matching (Guo, Wang, Chen, Zhang, Yu, Zhang, You, "Towards
Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching", ICLR 2024; code
github.com/GzyAftermath/DATM, the same ``distill/DATM.py`` in github.com/NUS-HPC-AI-Lab/PAD).

MTT (`mtt.py`: the same unroll, loss and learned step size) with four changes:

1. The start epoch of iteration `it` is uniform in {T-, ..., U(it) - 1}, where the upper bound
   grows from `current_max_start_epoch` to `max_start_epoch` over the first
   `expansion_end_epoch` iterations ("sequential generation"; the easy, early part of the
   trajectories first):

       U(it) = min(T_cur + floor((T_max - T_cur) * it / expansion_end_epoch), T_max)

   with T- = `min_start_epoch` (`start_epoch_range`). ``sequential_generation=false``: U = T_max;
   a T_cur above T_max is taken as T_max (the range is fixed; the log says so).
   `it` counts from 0, as the code's loop.
2. Learned soft labels (`labels.py`): logits learned with the images (SGD lr_y, momentum_y),
   initialized, per image, as the mean logits of the experts that classify it correctly
   (``label_init="average"``) or from one expert (``"expert"``).
3. The starting images are real images the experts classify correctly (``image_init="correct"``;
   `labels.select_correct`, including its rule for a class with too few such images), or the
   run's own starting set (``"run"``: ``--init real`` or ``noise``).
4. An iteration whose matching loss exceeds `threshold` updates nothing (images, step size and
   labels keep their values and their optimizers' momentum); ``threshold=null`` turns it off.
   The gradient is computed first, as in the code, and the record says ``skipped: 1``.

Where the paper and the code differ this follows the code. Differences from the code: the
selection's fill rule and the mean over all experts for an image none classifies correctly
(the code loops for ever or divides by zero there); the expert is drawn uniformly each
iteration (the code walks through a shuffled list, as MTT's); the selection's random order comes
from the run's seed (``make_generator(seed, "datm-init")``). Its experts are trained with GSAM
(`datadistill experts --optimizer gsam`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import ConfigError
from ...rng import make_generator
from ...synset import SyntheticSet
from ..registry import register_method
from .labels import IMAGE_INITS, LABEL_INITS, LearnedLabels, averaged_correct_logits, expert_logits, select_correct
from .mtt import MTTOptions, TrajectoryMatching


# ------------------------------------------------------------------------------ pure functions
def start_epoch_range(it: int, min_start: int, current_max: int, max_start: int, expansion_end: int,
                      sequential: bool = True) -> tuple[int, int]:
    """(lo, hi): iteration `it` draws its start epoch uniformly from {lo, ..., hi - 1} (see the
    module doc; integer arithmetic, so the floor is exact)."""
    if not sequential:
        return min_start, max_start
    current_max = min(current_max, max_start)  # above the top: the range is fixed from the start
    hi = current_max + (max_start - current_max) * it // expansion_end
    return min_start, min(hi, max_start)


# ------------------------------------------------------------------------------ the method
@dataclass
class DATMOptions(MTTOptions):
    """MTT's options plus DATM's (defaults: the authors' utils/cfg.py)."""

    min_start_epoch: int = 0  # T-: the lowest start epoch
    current_max_start_epoch: int = 20  # the upper bound at iteration 0 (sequential generation)
    expansion_end_epoch: int = 3000  # the iteration at which the upper bound reaches max_start_epoch
    sequential_generation: bool = True  # grow the upper bound (false: always max_start_epoch)
    threshold: float | None = 1.0  # skip the update when the loss exceeds it (null: never)
    soft_labels: bool = True  # learn soft labels (logits) with the images
    image_init: str = "correct"  # correct: real images the experts classify correctly | run: the run's --init
    label_init: str = "average"  # average: mean logits of the experts right on each image | expert: one expert
    lr_y: float = 2.0  # SGD learning rate of the label logits (the authors' lr_y)
    momentum_y: float = 0.9  # SGD momentum of the label logits (the authors' Momentum_y)
    label_expert: int = 0  # label_init=expert: which expert
    label_epoch: int = -1  # the experts' epoch that selects images and initializes labels (-1: the last)

    def validate(self) -> None:
        super().validate()
        m = self.method_name()
        for name in ("soft_labels", "sequential_generation"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{m} option {name} must be true or false, got {getattr(self, name)!r}")
        if not self.lr_y >= 0:
            raise ConfigError(f"{m} option lr_y must be >= 0, got {self.lr_y}")
        if not 0 <= self.momentum_y < 1:
            raise ConfigError(f"{m} option momentum_y must be in [0, 1), got {self.momentum_y}")
        for name in ("min_start_epoch", "current_max_start_epoch", "expansion_end_epoch", "label_expert"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{m} option {name} must be an integer >= 0, got {v!r}")
        if self.datm_parts():
            self.validate_datm_parts()

    def datm_parts(self) -> bool:
        """Whether DATM's own parts are used (PAD: only in its code variant)."""
        return True

    def validate_datm_parts(self) -> None:
        m = self.method_name()
        if self.min_start_epoch >= self.max_start_epoch:
            raise ConfigError(f"{m} option min_start_epoch ({self.min_start_epoch}) must be below "
                              f"max_start_epoch ({self.max_start_epoch})")
        if self.sequential_generation:
            if not self.min_start_epoch < self.current_max_start_epoch:
                raise ConfigError(
                    f"{m} option current_max_start_epoch ({self.current_max_start_epoch}) must lie above "
                    f"min_start_epoch ({self.min_start_epoch}); set it (--opt current_max_start_epoch=N) or pass "
                    "--opt sequential_generation=false")
            if self.expansion_end_epoch < 1:
                raise ConfigError(f"{m} option expansion_end_epoch must be >= 1, got {self.expansion_end_epoch}")
        if self.threshold is not None and not self.threshold > 0:
            raise ConfigError(f"{m} option threshold must be > 0 or null (no skip), got {self.threshold}")
        if self.image_init not in IMAGE_INITS:
            raise ConfigError(f"{m} option image_init must be {' or '.join(IMAGE_INITS)}, got {self.image_init!r}")
        if self.label_init not in LABEL_INITS:
            raise ConfigError(f"{m} option label_init must be {' or '.join(LABEL_INITS)}, got {self.label_init!r}")

    @classmethod
    def method_name(cls) -> str:
        return "datm"


@register_method("datm")
class DATM(TrajectoryMatching):
    Options = DATMOptions

    def datm_parts(self) -> bool:
        """Whether DATM's own parts (range, skip, selection, averaged labels) are on (the options say)."""
        return self.opts.datm_parts()

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        self.label_epoch = o.label_epoch if o.label_epoch >= 0 else self.experts.epochs + 1 + o.label_epoch
        if not 0 <= self.label_epoch <= self.experts.epochs:
            raise ConfigError(f"{cfg.method} option label_epoch is {o.label_epoch}; the experts have epochs "
                              f"0..{self.experts.epochs} (-1: the last)")
        if o.soft_labels and self.label_init == "expert" and not 0 <= o.label_expert < self.experts.num_experts:
            raise ConfigError(f"{cfg.method} option label_expert is {o.label_expert}; the experts in {cfg.experts} "
                              f"are 0..{self.experts.num_experts - 1}")

    # -- DATM's parts, as the mode asks ----------------------------------------------------
    @property
    def image_init(self) -> str:
        return self.opts.image_init if self.datm_parts() else "run"

    @property
    def label_init(self) -> str:
        return self.opts.label_init if self.datm_parts() else "expert"

    def start_bounds(self, it: int) -> tuple[int, int]:
        o = self.opts
        if not self.datm_parts():
            return super().start_bounds(it)
        return start_epoch_range(it, o.min_start_epoch, o.current_max_start_epoch, o.max_start_epoch,
                                 o.expansion_end_epoch, o.sequential_generation)

    def accept(self, loss: Tensor) -> bool:
        t = self.opts.threshold
        return not (self.datm_parts() and t is not None and float(loss.detach()) > t)

    # -- the starting set ------------------------------------------------------------------
    def expert_predict(self, e: int, x: Tensor) -> Tensor:
        return expert_logits(self.net, self.experts.params(e, self.label_epoch, self.device), x).argmax(dim=1)

    def select_images(self) -> list[int]:
        """Replace the starting images with real ones the experts classify correctly
        (`labels.select_correct`); returns the number filled per class by its fill rule."""
        ipc = min(len(ix) for ix in self.class_index)
        g = make_generator(self.cfg.seed, "datm-init")
        pools, candidates = [], []
        for c in range(self.spec.num_classes):
            idx = self.train.indices_per_class[c]
            idx = idx[torch.randperm(idx.numel(), generator=g).to(idx.device)]
            pools.append(idx)
            candidates.append(self.train.images[idx.to(self.train.images.device)])
        chosen, filled = select_correct(self.expert_predict, candidates, ipc, self.experts.num_experts)
        with torch.no_grad():
            for c, pos in enumerate(chosen):
                self.images[self.class_index[c][: len(pos)]] = candidates[c][pos.to(candidates[c].device)].to(self.device)
        return filled

    def initial_logits(self) -> Tensor:
        images = self.images.detach()
        if self.label_init == "expert":
            return expert_logits(self.net, self.experts.params(self.opts.label_expert, self.label_epoch, self.device), images)
        stack = torch.stack([expert_logits(self.net, self.experts.params(e, self.label_epoch, self.device), images)
                             for e in range(self.experts.num_experts)])
        return averaged_correct_logits(stack, self.labels.to(stack.device).long())

    def init(self, syn: SyntheticSet) -> None:
        super().init(syn)
        o = self.opts
        self.init_notes: list[str] = []
        info: dict = {"image_init": self.image_init, "label_init": self.label_init if o.soft_labels else "hard",
                      "label_epoch": self.label_epoch}
        if self.datm_parts() and o.sequential_generation and o.current_max_start_epoch > o.max_start_epoch:
            self.init_notes.append(f"current_max_start_epoch {o.current_max_start_epoch} is above max_start_epoch "
                                   f"{o.max_start_epoch}: the start epochs stay in {o.min_start_epoch}.."
                                   f"{o.max_start_epoch - 1} throughout")
        if self.image_init == "correct":
            filled = self.select_images()
            info["filled_per_class"] = filled
            self.meta["init"] = "real, classified correctly by the experts"
            if any(filled):
                self.init_notes.append(f"{sum(filled)} starting image(s) of class(es) "
                                  f"{[c for c, n in enumerate(filled) if n]} are ones no expert classifies correctly "
                                  "(too few correct ones; see methods/trajectory/labels.py)")
        self.soft: LearnedLabels | None = None
        if o.soft_labels:
            logits = self.initial_logits()
            self.soft = LearnedLabels(logits.to(self.device), o.lr_y, o.momentum_y)
            info["initial_label_accuracy"] = float((logits.argmax(1).cpu() == syn.hard_labels.cpu()).float().mean())
            how = (f"expert {o.label_expert}" if self.label_init == "expert"
                   else "the mean of the experts that classify each image correctly")
            self.meta["soft_labels"] = (f"softmax of logits learned with the images, initialized from {how} at "
                                        f"epoch {self.label_epoch}")
        if self.datm_parts():
            info.update(start_epochs={"min": o.min_start_epoch, "current_max": o.current_max_start_epoch,
                                      "max": o.max_start_epoch, "expansion_end": o.expansion_end_epoch,
                                      "sequential": o.sequential_generation},
                        threshold=o.threshold)
        self.meta["datm"] = info

    def setup_notes(self) -> list[str]:
        return super().setup_notes() + getattr(self, "init_notes", [])

    @property
    def label_logits(self) -> Tensor | None:
        """The learned label logits (None: hard labels)."""
        return self.soft.logits if self.soft is not None else None

    # -- the hooks of TrajectoryMatching ---------------------------------------------------
    def unroll_labels(self) -> Tensor:
        return self.soft.probabilities() if self.soft is not None else self.labels

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return super().optimizers() + ([self.soft.opt] if self.soft is not None else [])

    def step(self, it: int) -> dict[str, float]:
        rec = super().step(it)
        rec["start_upper"] = self.start_bounds(it)[1]
        return rec

    # -- set and state ---------------------------------------------------------------------
    def synthetic_set(self) -> SyntheticSet:
        syn = super().synthetic_set()
        if self.soft is not None:
            syn.labels = self.soft.detached()
        return syn

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.soft is not None:
            state.update(self.soft.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.soft is not None:
            self.soft.load_state_dict(state)
