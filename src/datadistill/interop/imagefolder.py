"""``imagefolder``: PNG / JPEG images, one sub-folder per class; ``grid``: one PNG, export only.

A class folder is matched to the dataset's classes by its name: the class name (case and
punctuation aside: ``airplane``, ``Airplane``), the class index (``3``, ``00003`` as DD-Ranking
writes random subsets), or ``<index>_<name>`` as `SyntheticSet.export_imagefolder` writes
(``003_cat``). Images must have the dataset's size; they are read as greyscale or RGB to match its
channels, and normalized with its mean/std ([0, 1] pixels, so neither ``--normalized`` nor
``--zca-from`` applies). Files are read in sorted order.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..data.base import DatasetSpec
from ..data.folder import _class_dirs, _header, _image_files, _read
from ..errors import FormatError
from ..fileio import check_out_dir, check_out_file, is_png
from ..synset import SyntheticSet, _safe_name
from .registry import Format, ImportOptions, register_format
from .space import PIXELS, into_set, resolve_space


def class_of(folder_name: str, spec: DatasetSpec) -> int | None:
    """The class index a folder name stands for, or None."""
    k = spec.num_classes
    key = _safe_name(folder_name).lower()
    names = [_safe_name(n).lower() for n in spec.class_names]
    if key in names:
        return names.index(key)
    if folder_name.isdigit():
        return int(folder_name) if int(folder_name) < k else None
    m = re.fullmatch(r"(\d+)_(.+)", folder_name)
    if m and int(m[1]) < k and _safe_name(m[2]).lower() == names[int(m[1])]:
        return int(m[1])
    return None


@register_format
class ImageFolder(Format):
    name = "imagefolder"
    description = "PNG/JPEG images, one folder per class (class name, index, or index_name)"
    source = "torchvision ImageFolder's layout; DD-Ranking ddranking/utils/data.py names class folders by index (%05d)"

    def read(self, path: Path, opts: ImportOptions) -> SyntheticSet:
        if not path.is_dir():
            raise FormatError(f"{path}: an imagefolder is a folder of class sub-folders")
        space = resolve_space(self.name, path, opts, PIXELS, "an image folder (PNG/JPEG pixels)")
        spec = opts.spec
        dirs = _class_dirs(path)
        classes = {d: class_of(d, spec) for d in dirs}
        unknown = [d for d, c in classes.items() if c is None]
        if unknown:
            raise FormatError(f"{path}: folder(s) {', '.join(unknown[:5])} match no class of {spec.name} "
                              f"(name them by class name, e.g. {spec.class_names[0]}, or index 0..{spec.num_classes - 1})")
        taken: dict[int, str] = {}
        for d, c in classes.items():
            if c in taken:
                raise FormatError(f"{path}: folders {taken[c]} and {d} are both class {c} ({spec.class_names[c]})")
            taken[c] = d
        paths, labels = [], []
        for d in sorted(dirs, key=lambda d: classes[d]):
            found = _image_files(path / d)
            paths += found
            labels += [classes[d]] * len(found)
        want_wh = (spec.im_size[1], spec.im_size[0])
        for p in paths:
            size = _header(p)[1]
            if size != want_wh:
                raise FormatError(f"{p}: image is {size[0]}x{size[1]} (W x H) but {spec.name} images are "
                                  f"{want_wh[0]}x{want_wh[1]}")
        px = np.stack([_read(p, spec.channels == 1, want_wh) for p in paths])
        images = torch.from_numpy(px).float().div_(255.0)
        images, _ = into_set(images, space, spec, None)
        meta = {"imported": {"format": self.name, "source": str(path), "images": space,
                             "folders": {str(c): d for c, d in sorted(taken.items())}}}
        return SyntheticSet(images, torch.tensor(labels, dtype=torch.long), spec, None, None, meta)

    def write(self, syn: SyntheticSet, dest: Path) -> str:
        out = syn.export_imagefolder(check_out_dir(dest, "the export folder"))
        return f"{len(syn)} images in {syn.spec.num_classes} class folders under {out}"


@register_format
class Grid(Format):
    name = "grid"
    description = "one PNG: a row per class (export only)"
    source = "datadistill (SyntheticSet.save_grid)"
    readable = False

    def write(self, syn: SyntheticSet, dest: Path) -> str:
        return str(syn.save_grid(check_out_file(dest, "the grid file", kind="a PNG image", replaces=is_png)))
