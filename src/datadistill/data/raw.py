"""Raw splits as file readers return them (uint8 pixels, int64 labels) and the stratified split.

Every reader (``idx``, ``cifar``, ``svhn``, ``folder``, ``embedded``) returns a :class:`RawSplits`;
``registry`` then carves the validation split with :func:`stratified_split`, converts to float,
and normalizes. Keeping the pixels as uint8 until the end keeps indexing cheap.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .base import DataError


class RawSplits(NamedTuple):
    """uint8 images (N, C, H, W) with values 0..255, int64 labels (N,), and one name per class."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def check_labels(labels: object, num_classes: int, path: object, count: int | None = None) -> np.ndarray:
    """Return ``labels`` as an int64 array (N,).

    Raises DataError naming ``path`` when they are not 1-d integers in ``[0, num_classes)``, or,
    when ``count`` is given, when there are not exactly ``count`` of them.
    """
    try:
        arr = np.asarray(labels)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: labels are not an array of integers ({e})") from e
    if arr.ndim == 1 and arr.size == 0:  # an empty list unpickles as float64
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"{path}: labels must be a 1-d array of integers, got dtype {arr.dtype} shape {arr.shape}")
    if count is not None and arr.shape[0] != count:
        raise DataError(f"{path}: {count} images but {arr.shape[0]} labels")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
        raise DataError(f"{path}: labels out of range [0, {num_classes}) (min {int(arr.min())}, max {int(arr.max())})")
    return arr.astype(np.int64, copy=False)


def held_out_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` items :func:`stratified_split` holds out.

    ``round(fraction * n)`` (halves round up), at least 1 when the class has 2 or more items
    and ``fraction > 0``, and never the whole class (at least one item stays).
    """
    if n < 2 or fraction <= 0:
        return 0
    return int(min(n - 1, max(1, np.floor(fraction * n + 0.5))))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class: ``(keep, held)``, both sorted ascending (original order).

    Each class holds out :func:`held_out_count` of its items, drawn with
    ``numpy.random.default_rng(seed)``, classes visited in increasing label order. The same
    labels, fraction and seed always give the same split.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"split fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = held_out_count(idx.size, fraction)
        if k:
            held.append(rng.permutation(idx)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx.astype(np.int64, copy=False)
