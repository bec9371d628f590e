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
from .scan import Scan

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
    # required files, relative to <root>/<name>/ (a trailing / names a folder; empty: ships with a package)
    files: tuple[str, ...]
    reader: Callable[[Path], RawSplits] | None  # small datasets: the whole dataset as uint8 in memory
    source: Source | None = None  # where the files are published (None: no public download)
    aliases: tuple[str, ...] = ()  # other names it is known by (lower case)
    # large datasets, instead of `reader`: scan(folder, size) lists the images as parts decoded into
    # the out-of-core store (scan.py); `size` is the requested side (None: the dataset's own)
    scan: Callable[[Path, int | None], Scan] | None = None
    layout: str = ""  # how the files are laid out, for the error that says where to put them
    sizes: tuple[int, ...] = ()  # the sides --image-size may take (empty: any)
    folder: str = ""  # the folder under the data root, when not the name (the ImageNet subsets: imagenet)

    @property
    def folder_name(self) -> str:
        return self.folder or self.name

    @property
    def embedded(self) -> bool:
        return not self.files

    @property
    def computed_stats(self) -> bool:
        """True when the normalization is the training split's own statistics (empty `mean`)."""
        return not self.mean


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make `info` known by its name and aliases (and its source to the downloader)."""
    DATASETS[info.name] = info
    for alias in info.aliases:
        ALIASES[alias] = info.name
    if info.source is not None:
        download.SOURCES[info.name] = info.source
    return info
