"""Published synthetic sets in and out: the files MTT, the DC/DSA/DM code (VICO), DATM, PAD and
DD-Ranking save, and image folders, read into a `SyntheticSet` and written back.

>>> syn = read_set("logged_files/CIFAR10/run", "mtt", "cifar10", zca_from="runs/mtt-cifar10")
>>> write_set(syn, "out/", "ddranking")

One module per format (``mtt``, ``datm`` (datm, pad), ``vico``, ``ddranking``, ``imagefolder``
(imagefolder, grid)), each registered by ``@register_format``; ``space`` decides how the images are
stored (normalized, pixels, ZCA) and converts; ``files`` reads ``.pt`` files with
``torch.load(weights_only=True)`` only and checks what they hold. docs/interop.md lists each
layout with the repository and file it comes from.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..synset import SyntheticSet
from . import datm, ddranking, imagefolder, mtt, vico  # noqa: F401  (importing a format registers it)
from .registry import FORMATS, Format, ImportOptions, export_formats, get_format, import_formats, register_format
from .space import load_zca_from


def read_set(source: str | os.PathLike, fmt: str, dataset: str, *, data_root: str | None = None,
             normalized: bool | None = None, zca_from: str | None = None, exp: int | None = None,
             progress: bool = True) -> SyntheticSet:
    """Read a set saved in format `fmt`, for `dataset` (its spec from `data.load_dataset`).

    normalized: True if the images are normalized with the dataset's mean/std, False if [0, 1]
    pixels, None if the files say (or cannot be either); zca_from: a run folder, set or folder with
    zca.safetensors whose whitening the images are in; exp: the experiment of a vico file."""
    from ..data import load_dataset

    f = get_format(fmt)
    if exp is not None and not f.experiments:
        raise ConfigError(f"--exp picks an experiment of a file that holds several ({', '.join(n for n, g in FORMATS.items() if g.experiments)}); "
                          f"{fmt} files hold one set: drop --exp")
    spec = load_dataset(dataset, data_root, progress=progress).spec
    zca = load_zca_from(zca_from, spec) if zca_from is not None else None
    opts = ImportOptions(spec, normalized=normalized, zca=zca, exp=exp)
    syn = f.read(Path(source), opts)
    if zca_from is not None:
        syn.meta["imported"]["zca_from"] = str(zca_from)
    return syn


def write_set(syn: SyntheticSet, dest: str | os.PathLike, fmt: str) -> str:
    """Write `syn` to `dest` in format `fmt`; one line saying what was written."""
    return get_format(fmt, writing=True).write(syn, Path(dest))


__all__ = ["FORMATS", "Format", "ImportOptions", "export_formats", "get_format", "import_formats", "read_set",
           "register_format", "write_set"]
