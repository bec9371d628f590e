"""Downsampled ImageNet (Chrabaszcz, Loshchilov and Hutter 2017, "A Downsampled Variant of ImageNet
as an Alternative to the CIFAR datasets"): ``imagenet32`` and ``imagenet64``, the official ``.npz``
batches read into the out-of-core store (`store.py`).

Layout (``<root>/imagenet32/``, likewise ``imagenet64``; the zips of image-net.org extracted so that
the ``.npz`` files lie in that folder)::

    train_data_batch_1.npz ... train_data_batch_10.npz
    val_data.npz                      the validation split, used as the test split
    map_clsloc.txt                    optional: "<wnid> <label> <name>" per line, the class names

Each batch holds ``data``, uint8 (N, 3 * S * S) with the red plane, then green, then blue (rows
top to bottom), and ``labels``, N integers in 1..1000 (1-based, the devkit's ILSVRC2012_ID order,
not the sorted wnids); the training batches also hold ``mean``, the mean image, which datadistill
does not use (it normalizes per channel). One batch is one part of the store's build.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DataError
from .imagenet import IMAGENET_MEAN, IMAGENET_STD, NUM_IMAGENET_CLASSES
from .scan import Part, Scan, SplitScan
from .unit import DatasetInfo, register_dataset

TRAIN_BATCHES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
VAL_FILE = "val_data.npz"
CLASS_MAP = "map_clsloc.txt"


def _open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 (untrusted file)
        raise DataError(f"{path}: not a readable .npz batch ({type(e).__name__}: {e}); download it again") from e


def _member(npz, key: str, path: Path) -> np.ndarray:
    if key not in npz.files:
        raise DataError(f"{path}: no {key!r} array (it holds {', '.join(npz.files) or 'nothing'}); a downsampled "
                        "ImageNet batch holds 'data' and 'labels' (and 'mean' in the training batches)")
    try:
        return npz[key]
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: the {key!r} array is corrupt ({type(e).__name__}: {e})") from e


def read_labels(path: Path) -> np.ndarray:
    """The 0-based labels of one batch (the file's are 1-based)."""
    with _open(path) as npz:
        raw = np.asarray(_member(npz, "labels", path))
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be a 1-d array of integers, got {raw.dtype} {raw.shape}")
    if raw.size and (int(raw.min()) < 1 or int(raw.max()) > NUM_IMAGENET_CLASSES):
        raise DataError(f"{path}: labels must be 1..{NUM_IMAGENET_CLASSES} (1-based), got {int(raw.min())}.."
                        f"{int(raw.max())}")
    return raw.astype(np.int64) - 1


@dataclass
class NpzBatch(Part):
    """One ``.npz`` batch of side `side`, `count` images."""

    path: Path
    side: int
    count: int

    def load(self) -> np.ndarray:
        with _open(self.path) as npz:
            data = _member(npz, "data", self.path)
        d = 3 * self.side * self.side
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape != (self.count, d):
            raise DataError(f"{self.path}: 'data' must be uint8 ({self.count}, {d}) for {self.side}x{self.side} "
                            f"images, got {data.dtype} {data.shape}")
        return data.reshape(self.count, 3, self.side, self.side)


def _class_names(folder: Path) -> tuple[str, ...]:
    names = [f"class_{i:04d}" for i in range(1, NUM_IMAGENET_CLASSES + 1)]
    path = folder / CLASS_MAP
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            cols = line.split()
            if len(cols) >= 3 and cols[1].isdigit() and 1 <= int(cols[1]) <= NUM_IMAGENET_CLASSES:
                names[int(cols[1]) - 1] = cols[2]
    return tuple(names)


def scanner(side: int):
    def scan(folder: Path, size: int | None = None) -> Scan:
        folder = Path(folder)
        train = [folder / f for f in TRAIN_BATCHES]
        missing = [p.name for p in train if not p.is_file()]
        if missing:
            raise DataError(f"{folder}: missing {', '.join(missing)}; extract Imagenet{side}_train*.zip there so "
                            "that train_data_batch_1.npz ... train_data_batch_10.npz lie in that folder")

        def split(paths: list[Path]) -> SplitScan:
            labels = [read_labels(p) for p in paths]
            return SplitScan([NpzBatch(p, side, len(y)) for p, y in zip(paths, labels)], np.concatenate(labels))

        sources = [*train, folder / VAL_FILE] + ([folder / CLASS_MAP] if (folder / CLASS_MAP).is_file() else [])
        return Scan(split(train), split([folder / VAL_FILE]), _class_names(folder), (3, side, side), sources)

    return scan


for _side in (32, 64):
    register_dataset(DatasetInfo(
        f"imagenet{_side}", f"Downsampled ImageNet {_side}x{_side} (Chrabaszcz et al. 2017), 1,281,167 train / "
        f"50,000 val (used as test), 1000 classes, .npz batches",
        3, (_side, _side), IMAGENET_MEAN, IMAGENET_STD, (TRAIN_BATCHES[0], VAL_FILE), None,
        aliases=(f"imagenet-{_side}", f"downsampled-imagenet{_side}"), scan=scanner(_side),
        layout=f"<root>/imagenet{_side}/train_data_batch_1.npz ... train_data_batch_10.npz and val_data.npz "
               f"(Imagenet{_side}_train*.zip and Imagenet{_side}_val.zip of image-net.org, registration needed)",
    ))
