"""CIFAR-10 and CIFAR-100 in the original python-pickle format, read with a restricted unpickler.

Each batch file is a pickled dict with bytes keys: ``b"data"`` an (N, 3072) uint8 array,
channel-major (1024 red, 1024 green, 1024 blue values, rows top to bottom), and ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` (CIFAR-100). N is read from the file, never assumed.

Pickles can run arbitrary code, so :class:`RestrictedUnpickler` admits only the globals needed to
rebuild numpy arrays (see :data:`ALLOWED_GLOBALS`) and refuses everything else with DataError.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import DataError
from .download import Source
from .raw import RawSplits, check_labels
from .unit import DatasetInfo, register_dataset

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100_DIR = "cifar-100-python"
CIFAR100_TRAIN = "train"
CIFAR100_TEST = "test"
CIFAR100_META = "meta"


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: how Python 3 writes ``bytes`` at pickle protocol <= 2.

    Only ``str`` -> latin-1 bytes is admitted, which is all such pickles ever ask for.
    """
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(obj).__name__}, {encoding!r}")
    return obj.encode("latin-1", errors)


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The numpy array-reconstruction globals, under the module names old and new numpy write."""
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 has _core; do not touch the np.core shim
    reconstruct = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    frombuffer = getattr(core.numeric, "_frombuffer", None)
    table: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{mod}.multiarray", "scalar")] = scalar
        if frombuffer is not None:  # protocol 5 pickles of contiguous arrays
            table[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return table


def _empty_bytes(*args: object) -> bytes:
    """Stand-in for ``bytes``: protocol <= 2 pickles write ``b""`` (the data of an empty array) as
    ``bytes()``; nothing else is admitted."""
    if args:
        raise pickle.UnpicklingError("bytes() called with arguments")
    return b""


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    **_numpy_globals(),
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`; anything else -> DataError."""

    def __init__(self, file: Any, path: object) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 (pickle API)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refusing to load: the pickle asks for {module}.{name}, which is not a numpy "
                "array constructor (the file is not a CIFAR batch, or was tampered with)"
            ) from None


def load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"`` semantics)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 (untrusted file: any failure means "corrupt")
        raise DataError(f"{path}: not a readable pickle, corrupt or truncated ({type(e).__name__}: {e})") from e


def _get(d: Any, key: bytes, path: Path) -> Any:
    """``d[key]`` (bytes or str key), or DataError naming the file and the missing key."""
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    if key in d:
        return d[key]
    if key.decode() in d:
        return d[key.decode()]
    raise DataError(f"{path}: no {key!r} entry (keys: {sorted(map(repr, d))})")


def read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    d = load_pickle(path)
    data = _get(d, b"data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be an (N, 3072) uint8 array, got {desc}")
    labels = check_labels(_get(d, label_key, path), num_classes, path, count=data.shape[0])
    return data.reshape(-1, 3, 32, 32), labels


def _names(path: Path, key: bytes, n: int) -> tuple[str, ...]:
    """Class names stored under ``key`` of a meta pickle; exactly ``n`` of them."""
    raw = _get(load_pickle(path), key, path)
    try:
        names = tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw)
    except (TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: {key!r} is not a list of names ({e})") from e
    if len(names) != n:
        raise DataError(f"{path}: {key!r} holds {len(names)} names, expected {n}")
    return names


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(folder: Path) -> RawSplits:
    """``folder`` holds ``cifar-10-batches-py/``; class names from ``batches.meta`` if present."""
    base = Path(folder) / CIFAR10_DIR
    xtr, ytr = _concat([read_batch(base / f, b"labels", 10) for f in CIFAR10_TRAIN])
    xte, yte = read_batch(base / CIFAR10_TEST, b"labels", 10)
    meta = base / CIFAR10_META
    names = _names(meta, b"label_names", 10) if meta.is_file() else CIFAR10_CLASSES
    return RawSplits(xtr, ytr, xte, yte, names)


def load_cifar100(folder: Path) -> RawSplits:
    """``folder`` holds ``cifar-100-python/{train,test,meta}``; fine labels and fine label names."""
    base = Path(folder) / CIFAR100_DIR
    xtr, ytr = read_batch(base / CIFAR100_TRAIN, b"fine_labels", 100)
    xte, yte = read_batch(base / CIFAR100_TEST, b"fine_labels", 100)
    names = _names(base / CIFAR100_META, b"fine_label_names", 100)
    return RawSplits(xtr, ytr, xte, yte, names)


# -- the datasets in this format -------------------------------------------------------------------
register_dataset(DatasetInfo(
    "cifar10", "CIFAR-10 natural images, 50,000 train / 10,000 test, 3x32x32, 10 classes",
    3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
    tuple(f"{CIFAR10_DIR}/{f}" for f in (*CIFAR10_TRAIN, CIFAR10_TEST)), load_cifar10,
    Source("https://www.cs.toronto.edu/~kriz/", {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
           archive=True),
    aliases=("cifar-10",),
))
register_dataset(DatasetInfo(
    "cifar100", "CIFAR-100 natural images, 50,000 train / 10,000 test, 3x32x32, 100 classes",
    3, (32, 32), (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762),
    tuple(f"{CIFAR100_DIR}/{f}" for f in ("train", "test", "meta")), load_cifar100,
    Source("https://www.cs.toronto.edu/~kriz/", {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
           archive=True),
    aliases=("cifar-100",),
))
