"""``ddranking``: the tensors a user hands DD-Ranking's evaluators (NUS-HPC-AI-Lab/DD-Ranking,
``ddranking/metrics/soft_label.py`` and ``hard_label.py``, ``compute_metrics(image_tensor,
soft_labels, syn_lr)``; file names from its README quick start).

Layout: a folder with ``images.pt`` (float (N, C, H, W) in class order: DD-Ranking builds the hard
labels as ``[0]*ipc + [1]*ipc + ...`` itself), optionally ``labels.pt`` (float (N, K) soft labels as
teacher logits: its losses take their softmax) and ``lr.pt`` (a number or 0-d tensor). Images are
normalized with the dataset's mean/std (CIFAR-100 with CIFAR-10's, ``ddranking/utils/data.py``) or
ZCA-whitened when its config sets ``use_zca``: the files do not say which, so give ``--normalized``
or ``--zca-from RUN_OR_SET`` (an export records it in its ``datadistill.json``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FormatError
from ..synset import SyntheticSet
from . import files
from .registry import Format, ImportOptions, register_format
from .space import cifar100_as_cifar10, folder_space, into_set, out_of_set, write_folder

IMAGES, LABELS, LR = "images.pt", "labels.pt", "lr.pt"


@register_format
class DDRanking(Format):
    name = "ddranking"
    description = "DD-Ranking's inputs: images.pt in class order, optional labels.pt (soft-label logits), lr.pt"
    source = "NUS-HPC-AI-Lab/DD-Ranking README (quick start), ddranking/metrics/soft_label.py compute_metrics"
    stats = cifar100_as_cifar10()

    def read(self, path: Path, opts: ImportOptions) -> SyntheticSet:
        folder = path.parent if path.is_file() and path.name == IMAGES else path
        if not (folder / IMAGES).is_file():
            raise FormatError(f"{path}: no {IMAGES} (the ddranking layout: a folder with {IMAGES}, optional {LABELS}, {LR})")
        spec = opts.spec
        space, zca = folder_space(self.name, folder, opts)
        images = files.images_tensor(files.load_pt(folder / IMAGES), spec, folder / IMAGES)
        if (folder / LABELS).is_file():
            labels = files.soft_labels_from_logits(files.load_pt(folder / LABELS), len(images), spec, folder / LABELS)
        else:
            labels = files.class_ordered_labels(len(images), spec, folder / IMAGES)
        lr = files.learning_rate(files.load_pt(folder / LR), folder / LR) if (folder / LR).is_file() else None
        images, zca = into_set(images, space, spec, zca, self.stats)
        meta = {"imported": {"format": self.name, "source": str(folder), "images": space, "layout": self.source}}
        return SyntheticSet(images, labels, spec, lr, zca, meta)

    def write(self, syn: SyntheticSet, dest: Path) -> str:
        hard = syn.hard_labels.cpu()
        counts = torch.bincount(hard, minlength=syn.spec.num_classes)
        if not bool((counts == counts[0]).all()):
            raise FormatError(f"DD-Ranking takes the same number of images of every class in class order; this set "
                              f"has {int(counts.min())}..{int(counts.max())} per class")
        order = torch.argsort(hard, stable=True)
        images, space = out_of_set(syn, keep_zca=True, stats=self.stats)
        tensors = {IMAGES: images[order]}
        if syn.soft:
            tensors[LABELS] = files.logits_of(syn.labels.cpu()[order])
        written = write_folder(dest, self.name, syn, space, tensors, LR)
        return f"{len(syn)} {space} images in class order ({int(counts[0])} per class) under {dest}: {', '.join(written)}"
