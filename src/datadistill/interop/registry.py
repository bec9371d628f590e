"""The list of published-set formats: each a `Format` subclass registered by `@register_format`.

A format reads the files another code base saves into a `SyntheticSet` (`read`) and writes a set
back in that layout (`write`). `ImportOptions` carries what the files may not record: the dataset
(its spec: shape, classes, normalization), how the images are stored when the files do not say
(`--normalized`, `--unnormalized`, `--zca-from`), and which experiment of a multi-experiment file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..data.base import DatasetSpec
from ..errors import ConfigError, FormatError
from ..synset import SyntheticSet


@dataclass
class ImportOptions:
    spec: DatasetSpec
    normalized: bool | None = None  # True: --normalized, False: --unnormalized, None: neither given
    zca: dict[str, torch.Tensor] | None = None  # --zca-from: the whitening the images were stored under
    exp: int | None = None  # --exp: the experiment of a file holding several (vico)


class Format:
    """One published layout. Subclasses set the class attributes and implement read and/or write."""

    name: ClassVar[str]
    description: ClassVar[str]
    source: ClassVar[str]  # where the layout comes from: repository and file
    readable: ClassVar[bool] = True
    experiments: ClassVar[bool] = False  # one file holds several sets (--exp picks one)
    writable: ClassVar[bool] = True

    def read(self, path: Path, opts: ImportOptions) -> SyntheticSet:
        raise FormatError(f"format {self.name} can be exported but not imported")

    def write(self, syn: SyntheticSet, dest: Path) -> str:
        """Write `syn` under `dest`; return one line saying what was written."""
        raise FormatError(f"format {self.name} can be imported but not exported")


FORMATS: dict[str, Format] = {}


def register_format(cls: type[Format]) -> type[Format]:
    FORMATS[cls.name] = cls()
    return cls


def get_format(name: str, *, writing: bool = False) -> Format:
    usable = [n for n, f in FORMATS.items() if (f.writable if writing else f.readable)]
    if name not in usable:
        raise ConfigError(f"unknown {'export' if writing else 'import'} format {name!r}; one of {', '.join(usable)}")
    return FORMATS[name]


def import_formats() -> list[str]:
    return [n for n, f in FORMATS.items() if f.readable]


def export_formats() -> list[str]:
    return [n for n, f in FORMATS.items() if f.writable]
