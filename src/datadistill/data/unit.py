"""A dataset is one unit: its name, what it is, its shape, classes and normalization, the files it
needs, where they are published (URLs and checksums) and the reader that turns them into uint8
splits, in one `DatasetInfo`, defined next to its reader (idx.py: MNIST, Fashion-MNIST;
cifar.py: CIFAR-10/100; svhn.py: SVHN; embedded.py: mnist-5k) and registered by importing that
module (`register_dataset`). `registry.py` looks datasets up by name and loads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import download
from .download import Source
from .raw import RawSplits

DATASETS: dict[str, "DatasetInfo"] = {}
ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: how to describe, find, fetch, read and normalize it."""

    name: str
    description: str
    channels: int
    im_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: tuple[str, ...]  # required files, relative to <root>/<name>/ (empty: ships with a package)
    reader: Callable[[Path], RawSplits]
    source: Source | None = None  # where the files are published (None: no public download)
    aliases: tuple[str, ...] = ()  # other names it is known by (lower case)

    @property
    def embedded(self) -> bool:
        return not self.files


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make `info` known by its name and aliases (and its source to the downloader)."""
    DATASETS[info.name] = info
    for alias in info.aliases:
        ALIASES[alias] = info.name
    if info.source is not None:
        download.SOURCES[info.name] = info.source
    return info
