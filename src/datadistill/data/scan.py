"""What a dataset too large to decode in one go is, before it is decoded: its splits as lists of
parts (a chunk of image files, one ``.npz`` batch, an array already in memory), each part decoded
on its own (in a DataLoader worker when the store is built, `store.py`), with the labels of every
image known up front and the source files whose size and time stamp fingerprint the cache.

A reader of this kind (`DatasetInfo.scan`) returns a :class:`Scan`; the readers of small datasets
return `RawSplits` (`raw.py`), which :func:`scan_of_raw` wraps as a one-part scan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import DataError
from .raw import RawSplits

IMAGE_FILES_PER_PART = 256  # images decoded by one worker task


class Part:
    """One unit of decoding work: `count` images as uint8 (count, C, H, W) from `load()`.
    Subclasses must be picklable (they travel to DataLoader workers)."""

    count: int

    def load(self) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class ArrayPart(Part):
    """Images already decoded (the readers of small datasets)."""

    images: np.ndarray

    @property
    def count(self) -> int:  # type: ignore[override]
        return int(self.images.shape[0])

    def load(self) -> np.ndarray:
        return self.images


@dataclass
class ImageFilesPart(Part):
    """Image files (PNG / JPEG) decoded with Pillow to RGB, resized so that the shorter side is
    ``size`` and center-cropped to ``size`` x ``size`` (``crop``), or resized to ``size`` x
    ``size`` directly (``crop=False``); ``size=None`` keeps the file's size (all files must
    share it)."""

    files: list[Path]
    size: int | None
    crop: bool = True

    @property
    def count(self) -> int:  # type: ignore[override]
        return len(self.files)

    def load(self) -> np.ndarray:
        return np.stack([decode_image(f, self.size, self.crop) for f in self.files]) if self.files else \
            np.zeros((0, 3, self.size or 1, self.size or 1), np.uint8)


def decode_image(path: Path, size: int | None, crop: bool = True) -> np.ndarray:
    """One image file as uint8 (3, H, W): RGB; see :class:`ImageFilesPart` for the resizing.
    DataError naming the file when it is not a readable image (truncated JPEG included)."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # decodes the whole file: a truncated one fails here
            if size is not None:
                w, h = im.size
                if crop:
                    scale = size / min(w, h)
                    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                    if (nw, nh) != (w, h):
                        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
                    left, top = (nw - size) // 2, (nh - size) // 2
                    im = im.crop((left, top, left + size, top + size))
                elif (w, h) != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 (untrusted file)
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e}); replace or remove the file") from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def image_parts(files: Sequence[Path], size: int | None, crop: bool = True,
                per_part: int = IMAGE_FILES_PER_PART) -> list[Part]:
    """`files` in chunks of `per_part`, in order."""
    files = list(files)
    return [ImageFilesPart(files[i : i + per_part], size, crop) for i in range(0, len(files), per_part)]


@dataclass
class SplitScan:
    """One split: its parts in order, the label of every image, and per-image extras (e.g. MHIST's
    annotator agreement) as arrays of the same length."""

    parts: list[Part]
    labels: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = sum(p.count for p in self.parts)
        if n != self.labels.shape[0]:
            raise DataError(f"internal: a split has {n} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Scan:
    """What a streaming reader returns: both splits, the class names, the image shape (C, H, W)
    and the source files (their sizes and time stamps fingerprint the cache)."""

    train: SplitScan
    test: SplitScan
    class_names: tuple[str, ...]
    shape: tuple[int, int, int]
    sources: list[Path]


def scan_of_raw(raw: RawSplits, sources: list[Path]) -> Scan:
    """A `RawSplits` as a scan of two one-part splits."""
    return Scan(
        SplitScan([ArrayPart(raw.train_images)], raw.train_labels),
        SplitScan([ArrayPart(raw.test_images)], raw.test_labels),
        tuple(raw.class_names), tuple(int(v) for v in raw.train_images.shape[1:]), sources,  # type: ignore[arg-type]
    )
