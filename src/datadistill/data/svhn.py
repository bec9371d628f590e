"""SVHN (cropped digits): ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5, scipy.io.loadmat).

``X`` is (32, 32, 3, N) uint8 (height, width, channel, index), ``y`` is (N, 1) with the digit,
except that digit 0 is stored as 10.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError
from .download import Source
from .raw import RawSplits, check_labels
from .unit import DatasetInfo, register_dataset

TRAIN_FILE = "train_32x32.mat"
TEST_FILE = "test_32x32.mat"
FILES = (TRAIN_FILE, TEST_FILE)
CLASS_NAMES = tuple(str(d) for d in range(10))


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN .mat file -> images (N, 3, 32, 32) uint8 and labels (N,) int64 (10 -> 0)."""
    import scipy.io  # noqa: PLC0415 (scipy is slow to import; only SVHN needs it)

    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as e:  # noqa: BLE001 (untrusted file: any failure means "corrupt")
        raise DataError(f"{path}: not a readable MATLAB file, corrupt or truncated ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: expected variables 'X' and 'y', found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: 'X' must be a (32, 32, 3, N) uint8 array, got {x.dtype} {x.shape}")
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{path}: 'y' holds non-integer labels")
        y = y.astype(np.int64)
    labels = check_labels(y, 11, path, count=x.shape[3])  # 0..10 accepted, 10 means digit 0
    labels = np.where(labels == 10, 0, labels)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def load_svhn(folder: Path) -> RawSplits:
    """Read ``train_32x32.mat`` and ``test_32x32.mat`` from ``folder``."""
    folder = Path(folder)
    xtr, ytr = read_mat(folder / TRAIN_FILE)
    xte, yte = read_mat(folder / TEST_FILE)
    return RawSplits(xtr, ytr, xte, yte, CLASS_NAMES)


# -- the dataset in this format ---------------------------------------------------------------------
register_dataset(DatasetInfo(
    "svhn", "SVHN street-view house numbers, 73,257 train / 26,032 test, 3x32x32, 10 classes",
    3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), FILES, load_svhn,
    Source("http://ufldl.stanford.edu/housenumbers/", {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    }),
))
