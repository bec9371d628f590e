"""RDED (Sun, Shi, Wang, Xu & Lin, "On the Diversity and Realism of Distilled Dataset: An
Efficient Dataset Distillation Paradigm", CVPR 2024, arXiv:2312.03526): real patches chosen by a
teacher, stitched.

Per class c, from a generator of (seed, c) alone:

1. draw `mipc` candidate training images of the class (all of them when it has fewer);
2. from each, `num_crop` random resized crops (square, area fraction in [`crop_scale_min`, 1]) of
   size (H / factor, W / factor);
3. score each crop by the teacher's cross-entropy on class c (its "realism": -log p_teacher(c)),
   the crop centred on a blank canvas of the image size, as the authors' code pads it;
4. keep each candidate's best (lowest-scoring) crop, then the ipc * factor^2 candidates whose best
   crops score lowest, in increasing order of score;
5. stitch: synthetic image t of the class is made of the kept patches t, t + ipc, ...,
   t + (factor^2 - 1) ipc in its factor x factor regions, row by row (`crops.region_boxes`).

`factor` 0 (the default) means the paper's choice: 2 for images of 64 px and more, 1 below (the
authors' scripts: factor 1 on CIFAR at 32 px, 2 on ImageNet-1K at 224 px). Relabelling is the
shared step (`relabel.py`); the set's metadata names the regions, so the stored labels are per
region. ``meta["patch_sources"]`` says, per synthetic image and region, which training image and
which crop box the patch came from.

One outer iteration handles `classes_per_step` classes (their classes are split over the
processes under torchrun, and the finished images gathered), so the run's checkpoints make it
resumable class by class; the run's iterations must be ceil(classes / classes_per_step) (or 0: the
starting set as it is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ... import dist
from ...errors import ConfigError
from ...rng import make_generator
from ...synset import SyntheticSet
from ..base import Distiller
from ..registry import register_method
from .crops import crop_resize, pad_to, random_resized_box, region_boxes, stitch


def auto_factor(im_size: tuple[int, int]) -> int:
    """The paper's factor: 2 for images of 64 px and more on their shorter side, 1 below."""
    return 2 if min(im_size) >= 64 else 1


def crop_scores(teacher: torch.nn.Module, crops: torch.Tensor, label: int, size: tuple[int, int],
                chunk: int = 256) -> torch.Tensor:
    """The teacher's cross-entropy on class `label` of each crop (M, C, h, w), centred on a blank
    canvas of `size`: -log softmax(teacher(pad(crop)))[label], one value per crop."""
    out = []
    with torch.no_grad():
        for part in crops.split(chunk):
            logits = teacher(pad_to(part, *size)).float()
            out.append(-F.log_softmax(logits, 1)[:, label])
    return torch.cat(out)


def select_patches(scores: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (num_crop, M) of M candidates' crops -> (best crop of each kept candidate, kept
    candidates): each candidate's lowest-scoring crop, then the `keep` candidates whose best crop
    scores lowest, in increasing order of that score (ties: the lower index)."""
    best_score, best_crop = scores.min(0)
    order = torch.sort(best_score, stable=True).indices[:keep]
    return best_crop[order], order


@dataclass
class RDEDOptions:
    factor: int = 0  # regions per side of a stitched image; 0: 2 at 64 px and more, 1 below (the paper)
    num_crop: int = 5  # random crops scored per candidate image
    mipc: int = 300  # candidate images per class
    crop_scale_min: float = 0.08  # smallest crop area fraction (torchvision's default, as the authors' code)
    classes_per_step: int = 1  # classes per outer iteration (the unit of checkpointing)
    chunk: int = 256  # crops per teacher forward (speed and memory only)


@register_method("rded")
class RDED(Distiller):
    """Select and stitch realistic real patches per class (see the module doc)."""

    Options = RDEDOptions
    requires = ("teacher",)
    learns_images = False

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        if o.factor < 0 or o.num_crop < 1 or o.mipc < 1 or o.classes_per_step < 1 or o.chunk < 1 \
                or not 0 < o.crop_scale_min <= 1:
            raise ConfigError("rded needs factor >= 0 (0: automatic), num_crop, mipc, classes_per_step and chunk "
                              ">= 1, and crop_scale_min in (0, 1]")
        if cfg.zca:
            raise ConfigError("rded selects normalized real patches for its teacher; drop --zca")
        self.factor = o.factor or auto_factor(self.spec.im_size)
        k = self.spec.num_classes
        steps = math.ceil(k / o.classes_per_step)
        if cfg.iterations not in (0, steps):  # 0: the starting set, nothing made
            raise ConfigError(f"rded makes {o.classes_per_step} class(es) per iteration: {k} classes need "
                              f"--iterations {steps}, got {cfg.iterations}")
        need = cfg.ipc * self.factor ** 2
        if o.mipc < need:
            raise ConfigError(f"rded keeps ipc x factor^2 = {need} patches per class from mipc = {o.mipc} candidates; "
                              f"use --opt mipc={need} or more")
        counts = self.train.class_counts()
        if min(counts) < need:
            c = counts.index(min(counts))
            raise ConfigError(f"rded needs ipc x factor^2 = {need} candidate images per class, class {c} "
                              f"({self.spec.class_names[c]!r}) has {counts[c]}; lower --ipc or --opt factor")
        h, w = self.spec.im_size
        if min(h // self.factor, w // self.factor) < 1:
            raise ConfigError(f"factor {self.factor} leaves no pixels per region of a {h}x{w} image")
        self.teacher = self.artifacts["teacher"].network(device)
        self.boxes = region_boxes(h, w, self.factor)

    def init(self, syn: SyntheticSet) -> None:
        self.meta = {k: v for k, v in syn.meta.items() if k != "init"}
        self.images = syn.images.detach().clone().cpu()
        self.labels = syn.hard_labels.detach().clone().cpu()
        self.scores = torch.full((len(self.labels),), float("nan"))
        self.sources: list[Any] = [None] * len(self.labels)

    def synthesize_class(self, c: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        """(the class's ipc stitched images, their patches' scores (ipc, factor^2), their sources)."""
        o, f, ipc = self.opts, self.factor, self.cfg.ipc
        h, w = self.spec.im_size
        size = (h // f, w // f)
        g = make_generator(self.cfg.seed, "rded", c)
        pool = self.train.indices_per_class[c]
        cand = pool[torch.randperm(pool.numel(), generator=g)[: o.mipc].to(pool.device)]
        images = self.train.images[cand.to(self.train.images.device)]
        boxes = [[random_resized_box(h, w, g, (o.crop_scale_min, 1.0), (1.0, 1.0)) for _ in range(len(cand))]
                 for _ in range(o.num_crop)]
        crops = torch.stack([torch.cat([crop_resize(images[i:i + 1], boxes[m][i], size) for i in range(len(cand))])
                             for m in range(o.num_crop)])  # (num_crop, M, C, h/f, w/f)
        m_, n_ = crops.shape[:2]
        scores = crop_scores(self.teacher, crops.reshape(m_ * n_, *crops.shape[2:]), c, (h, w), o.chunk)
        scores = scores.reshape(m_, n_).cpu()
        best_crop, kept = select_patches(scores, ipc * f * f)
        patches = crops[best_crop.to(crops.device), kept.to(crops.device)]  # (ipc f^2, C, h/f, w/f), by score
        stitched = stitch(patches.reshape(f * f, ipc, *patches.shape[1:]), h, w, f)
        kept_scores = scores[best_crop, kept].reshape(f * f, ipc).T
        sources = [[[int(cand[kept[k * ipc + t]]), *boxes[int(best_crop[k * ipc + t])][int(kept[k * ipc + t])]]
                    for k in range(f * f)] for t in range(ipc)]
        return stitched.cpu(), kept_scores, sources

    def step(self, it: int) -> dict[str, float]:
        o = self.opts
        k = self.spec.num_classes
        classes = list(range(it * o.classes_per_step, min(k, (it + 1) * o.classes_per_step)))
        mine = {c: self.synthesize_class(c) for c in dist.shard(classes)}
        for part in dist.all_gather_objects(mine):
            mine.update(part)
        total = []
        for c in classes:
            stitched, scores, sources = mine[c]
            slots = torch.nonzero(self.labels == c).flatten()
            self.images[slots] = stitched
            self.scores[slots] = scores.mean(1)
            for s, src in zip(slots.tolist(), sources):
                self.sources[s] = src
            total.append(float(scores.mean()))
        return {"loss": sum(total) / len(total)}

    def synthetic_set(self) -> SyntheticSet:
        meta = {**self.meta, "regions": [list(b) for b in self.boxes], "rded_factor": self.factor,
                "patch_sources": list(self.sources), "patch_score_mean": self.scores.tolist()}
        return SyntheticSet(self.images.clone(), self.labels.clone(), self.spec, meta=meta)

    def state_dict(self) -> dict[str, Any]:
        done = torch.tensor([s is not None for s in self.sources])
        f2 = self.factor ** 2
        src = torch.tensor([s if s is not None else [[-1, 0, 0, 0, 0]] * f2 for s in self.sources], dtype=torch.long)
        return {**super().state_dict(), "images": self.images.clone(), "scores": self.scores.clone(),
                "done": done, "sources": src}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.images = state["images"].clone()
        self.scores = state["scores"].clone()
        self.sources = [s.tolist() if d else None for s, d in zip(state["sources"], state["done"].tolist())]
