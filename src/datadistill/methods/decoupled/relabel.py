"""Relabelling: the teacher's soft labels for a set, the one step SRe2L, RDED and the coresets
given a teacher (``--method random --teacher DIR``, the control) share.

The run calls it on the method's set whenever it saves one (`run.loop`), when a teacher artifact
was given, in one of two modes (``cfg.relabel``):

- ``stored``: the teacher's class distributions (softmax of its logits, temperature 1: a soft-label
  loss at temperature T recovers logits / T from their log) are saved with the set. Per image; or,
  for a set whose metadata names regions (RDED's stitched images, ``meta["regions"]``), per region:
  each region is shown to the teacher alone, centred on a blank canvas, and ``region_labels`` (N,
  R, K) holds the R distributions while ``labels`` holds their mixture weighted by the regions'
  areas.
- ``teacher``: the hard labels are kept and the set records that its labels are the teacher's, made
  on the fly: `evaluate` with ``labels auto`` then labels every augmented batch with that teacher
  (the evaluation issue's relabel mode; what SRe2L's and RDED's own evaluations do).

Either way the set's metadata ``labels`` says which, which teacher (folder and fingerprint), and
(stored) the class each image was made for, which hard-label evaluation uses (the teacher's
distribution may put another class first), and what the stored labels cost in bytes (float32;
ImageNet-1K at IPC 50 with 1,000 classes: 200 MB per image-level copy, times R per region; the
papers' FKD files store one copy per crop and epoch, which is what reaches 100+ GB).
"""
from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError
from ...synset import SyntheticSet
from .crops import Box, regions_padded

MODES = ("stored", "teacher")


def teacher_probs(teacher: torch.nn.Module, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """softmax(teacher(x)) of every image (N, K), `chunk` images per forward, without autograd."""
    with torch.no_grad():
        return torch.cat([torch.softmax(teacher(part).float(), 1) for part in images.split(chunk)])


def region_probs(teacher: torch.nn.Module, images: torch.Tensor, boxes: list[Box], chunk: int = 256) -> torch.Tensor:
    """(N, R, K): the teacher's distribution for each region of each image, shown alone and centred."""
    return torch.stack([teacher_probs(teacher, x, chunk) for x in regions_padded(images, boxes)], 1)


def relabel(syn: SyntheticSet, teacher: torch.nn.Module | None, mode: str = "stored", *,
            about: dict[str, Any] | None = None, chunk: int = 256,
            previous: SyntheticSet | None = None) -> SyntheticSet:
    """`syn` with the teacher's labels (`mode`, see the module doc; mode "teacher" needs no network);
    `about` (the teacher's folder and fingerprint) is recorded in ``meta["labels"]``. Images are
    untouched. `previous`: an earlier result of the same relabelling, whose labels are kept for
    the images that have not changed since (RDED's checkpoints add one class at a time)."""
    if mode not in MODES:
        raise ConfigError(f"unknown relabel mode {mode!r}; choose 'stored' or 'teacher'")
    if syn.zca is not None:
        raise ConfigError("the set is ZCA-whitened and the teacher sees normalized images; distil without --zca to "
                          "relabel with a teacher")
    hard = syn.hard_labels
    meta = dict(syn.meta)
    record: dict[str, Any] = {"source": "teacher", "mode": mode, **(about or {})}
    boxes = [tuple(int(v) for v in b) for b in meta.get("regions") or []]
    if mode == "teacher":
        record.update(granularity="batch", stored_bytes=0)
        meta["labels"] = record
        return SyntheticSet(syn.images, hard.clone(), syn.spec, syn.lr, syn.zca, meta)
    if teacher is None:
        raise ConfigError("stored soft labels need the teacher network")
    device = next(teacher.parameters()).device
    per_region = len(boxes) > 1
    images = syn.images.detach().cpu()
    kept = _kept_rows(previous, images, per_region)
    per = (kept if kept is not None else torch.empty(len(syn), len(boxes) if per_region else 1, syn.spec.num_classes))
    todo = (torch.arange(len(syn)) if kept is None
            else torch.nonzero(~(previous.images.cpu() == images).flatten(1).all(1)).flatten())
    if todo.numel():
        x = images[todo].to(device)
        fresh = region_probs(teacher, x, boxes, chunk) if per_region else teacher_probs(teacher, x, chunk)[:, None]
        per[todo] = fresh.cpu()
    if per_region:
        areas = torch.tensor([float(b[2] * b[3]) for b in boxes])
        labels = (per * (areas / areas.sum())[None, :, None]).sum(1)
        record.update(granularity="region", regions=len(boxes))
    else:
        labels = per[:, 0]
        record.update(granularity="image")
    regions = per if per_region else None
    record["stored_bytes"] = 4 * (labels.numel() + (regions.numel() if regions is not None else 0))
    record["classes"] = hard.cpu().tolist()  # what each image was made for (evaluate's labels hard)
    record["teacher_agreement"] = float((labels.argmax(1) == hard.cpu()).float().mean())
    meta["labels"] = record
    return SyntheticSet(syn.images, labels, syn.spec, syn.lr, syn.zca, meta, regions)


def _kept_rows(previous: SyntheticSet | None, images: torch.Tensor, per_region: bool) -> torch.Tensor | None:
    """The per-row label tensor (N, R, K) of `previous` to start from, a copy; None when it does
    not fit (no previous result, other images' shape, or other granularity)."""
    if previous is None or not previous.soft or tuple(previous.images.shape) != tuple(images.shape):
        return None
    if per_region:
        return None if previous.region_labels is None else previous.region_labels.detach().cpu().clone()
    return None if previous.region_labels is not None else previous.labels.detach().cpu()[:, None].clone()


class Relabeller:
    """The relabelling of one run: its teacher network (loaded once) and its mode."""

    def __init__(self, artifact, mode: str, device: torch.device):
        if mode not in MODES:
            raise ConfigError(f"unknown relabel mode {mode!r}; choose 'stored' or 'teacher'")
        self.mode = mode
        self.about = {"teacher": str(artifact.directory), "teacher_fingerprint": artifact.fingerprint}
        self.net = artifact.network(device) if mode == "stored" else None
        self.last: SyntheticSet | None = None

    @classmethod
    def for_run(cls, cfg, artifacts: dict, device: torch.device) -> "Relabeller | None":
        """The run's relabelling: None when it was given no teacher."""
        art = artifacts.get("teacher")
        if art is None:
            return None
        if cfg.zca:
            raise ConfigError("a teacher relabels normalized images, not ZCA-whitened ones; drop --zca (or --teacher)")
        return cls(art, cfg.relabel, device)

    def __call__(self, syn: SyntheticSet) -> SyntheticSet:
        """`syn` relabelled; the teacher sees only the images that changed since the last call."""
        self.last = relabel(syn, self.net, self.mode, about=self.about, previous=self.last)
        return self.last
