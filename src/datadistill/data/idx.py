"""MNIST and Fashion-MNIST: the four original ``*-ubyte.gz`` files in IDX format.

IDX: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Images are magic 0x00000803 (N, rows, cols),
labels 0x00000801 (N,).
"""
from __future__ import annotations

import gzip
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from .base import DataError
from .download import Source
from .raw import RawSplits, check_labels
from .unit import DatasetInfo, register_dataset

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_gzip(path: Path) -> bytes:
    """The decompressed content of a gzip file, or DataError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if raw[:2] != b"\x1f\x8b":
        raise DataError(f"{path}: not a gzip file (bad header); delete it and download it again")
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e}); delete it and download it again") from e


def parse_idx(data: bytes, magic: int, path: Path) -> np.ndarray:
    """Parse IDX bytes with the expected ``magic`` into a uint8 array, checking the declared sizes."""
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX file ({len(data)} bytes)")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{path}: bad IDX magic number 0x{got:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_pair(images_path: Path, labels_path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, rows, cols) uint8 and labels (N,) int64 from one images/labels file pair."""
    images = parse_idx(read_gzip(images_path), IMAGES_MAGIC, images_path)
    labels = parse_idx(read_gzip(labels_path), LABELS_MAGIC, labels_path)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels but {images_path.name} holds {images.shape[0]} images"
        )
    labels = check_labels(labels, num_classes, labels_path)
    return images[:, None, :, :], labels


def load_idx_folder(folder: Path, class_names: tuple[str, ...], im_size: tuple[int, int] = (28, 28)) -> RawSplits:
    """Read the four IDX files of ``folder`` (MNIST layout), checking the image size."""
    folder = Path(folder)
    xtr, ytr = read_idx_pair(folder / TRAIN_IMAGES, folder / TRAIN_LABELS, len(class_names))
    xte, yte = read_idx_pair(folder / TEST_IMAGES, folder / TEST_LABELS, len(class_names))
    for x, name in ((xtr, TRAIN_IMAGES), (xte, TEST_IMAGES)):
        if tuple(x.shape[2:]) != tuple(im_size):
            raise DataError(f"{folder / name}: images are {x.shape[2]}x{x.shape[3]}, expected {im_size[0]}x{im_size[1]}")
    return RawSplits(xtr, ytr, xte, yte, tuple(class_names))


# -- the datasets in this format -------------------------------------------------------------------
DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

register_dataset(DatasetInfo(
    "mnist", "MNIST handwritten digits, 60,000 train / 10,000 test, 1x28x28, 10 classes",
    1, (28, 28), MNIST_MEAN, MNIST_STD, FILES, partial(load_idx_folder, class_names=DIGITS),
    Source("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
))
register_dataset(DatasetInfo(
    "fashion_mnist", "Fashion-MNIST clothing, 60,000 train / 10,000 test, 1x28x28, 10 classes",
    1, (28, 28), (0.2861,), (0.3530,), FILES, partial(load_idx_folder, class_names=FASHION_CLASSES),
    Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    aliases=("fashion-mnist", "fashionmnist"),
))
