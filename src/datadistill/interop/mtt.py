"""``mtt``: the folder MTT's ``distill.py`` saves (GeorgeCazenavette/mtt-distillation).

Layout (``logged_files/<dataset>/<run>/``): ``images_best.pt`` (float (N, C, H, W), class-ordered,
ZCA-whitened when run with ``--zca`` - kornia ``ZCAWhitening(eps=0.1)`` of [0, 1] pixels - else
normalized with the dataset's mean/std), ``labels_best.pt`` (int64 (N,), ``[0]*ipc + [1]*ipc + ...``),
and ``images_<it>.pt`` / ``labels_<it>.pt`` at other iterations. MTT's own ``distill.py`` logs the
learned learning rate to wandb only; forks of it save ``syn_lr_best.pt`` (a 0-d tensor), read when
present (also ``lr_best.pt``). The files do not record the image space: give ``--normalized`` or
``--zca-from RUN_OR_SET``.

`TrajectoryFolder` is the layout MTT, DATM and PAD share (datm.py); FILE_OR_DIR is the folder (the
``best`` files) or one ``images_<it>.pt`` file (its ``labels_<it>.pt`` beside it).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import FormatError
from ..synset import SyntheticSet
from . import files
from .registry import Format, ImportOptions, register_format
from .space import Stats, cifar100_as_cifar10, folder_space, into_set, out_of_set, write_folder


class TrajectoryFolder(Format):
    subfolder: str | None = None  # where the code writes the files inside the run folder (DATM: Normal)
    lr_names: tuple[str, ...] = ()  # learned-lr file names, {tag} for best / the iteration
    soft: bool = False  # labels are (N, K) logits (DATM, PAD) rather than int64 classes (MTT)
    stats: Stats = cifar100_as_cifar10()

    def locate(self, path: Path) -> tuple[Path, str]:
        if path.is_file():
            m = re.fullmatch(r"images_(.+)\.pt", path.name)
            if not m:
                raise FormatError(f"{path}: a {self.name} file is named images_<best|iteration>.pt")
            return path.parent, m[1]
        if not path.is_dir():
            raise FormatError(f"{path}: no such file or folder")
        if self.subfolder and not (path / "images_best.pt").is_file() and (path / self.subfolder).is_dir():
            path = path / self.subfolder
        if not (path / "images_best.pt").is_file():
            raise FormatError(f"{path}: no images_best.pt (the {self.name} layout: images_best.pt, labels_best.pt)")
        return path, "best"

    def read(self, path: Path, opts: ImportOptions) -> SyntheticSet:
        folder, tag = self.locate(path)
        spec = opts.spec
        space, zca = folder_space(self.name, folder, opts)
        ipath, lpath = folder / f"images_{tag}.pt", folder / f"labels_{tag}.pt"
        images = files.images_tensor(files.load_pt(ipath), spec, ipath)
        raw = files.load_pt(lpath)
        if self.soft:
            labels = files.soft_labels_from_logits(raw, len(images), spec, lpath)
        else:
            labels = files.hard_labels(raw, len(images), spec, lpath)
        lr, lr_file = None, None
        for name in self.lr_names:
            p = folder / name.format(tag=tag)
            if p.is_file():
                lr, lr_file = files.learning_rate(files.load_pt(p), p), p.name
                break
        images, zca = into_set(images, space, spec, zca, self.stats)
        meta = {"imported": {"format": self.name, "source": str(ipath), "images": space, "lr_file": lr_file,
                             "layout": self.source}}
        return SyntheticSet(images, labels, spec, lr, zca, meta)

    def write(self, syn: SyntheticSet, dest: Path) -> str:
        if syn.soft and not self.soft:
            raise FormatError(f"{self.name} stores hard labels; this set has soft labels (export it as datm, pad or ddranking)")
        images, space = out_of_set(syn, keep_zca=True, stats=self.stats)
        if not self.soft:
            labels = syn.labels.detach().cpu().long()
        elif syn.soft:
            labels = files.logits_of(syn.labels)
        else:
            labels = files.logits_of(torch.nn.functional.one_hot(syn.labels.cpu().long(), syn.spec.num_classes).float())
        folder = dest / self.subfolder if self.subfolder else dest
        written = write_folder(folder, self.name, syn, space, {"images_best.pt": images, "labels_best.pt": labels},
                               self.lr_names[0].format(tag="best"))
        return f"{len(syn)} {space} images in {self.name} layout under {folder}: {', '.join(written)}"


@register_format
class MTT(TrajectoryFolder):
    name = "mtt"
    description = "MTT's images_best.pt, labels_best.pt (hard labels) and, where a fork saved it, syn_lr_best.pt"
    source = "GeorgeCazenavette/mtt-distillation distill.py (saving), utils.py get_dataset (normalization, ZCA)"
    lr_names = ("syn_lr_{tag}.pt", "lr_{tag}.pt", "synthetic_lr_{tag}.pt")


__all__ = ["MTT", "TrajectoryFolder"]
