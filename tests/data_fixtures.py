"""Writers of tiny dataset files in the exact real formats, and a local HTTP server, for test_data.py.

Every writer produces files the real loaders read unchanged: gzip'd IDX (MNIST), pickled dicts with
bytes keys (CIFAR), MATLAB v5 (SVHN), PNG/JPEG folders. Pixel (0, 0) of every image (every channel
for the colour formats, with a per-channel offset) encodes its label, so tests can check that
images and labels stay aligned through the split and that normalization is exact.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import pickle
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CHANNEL_OFFSET = (0, 1, 2)


def marker(label: int | np.ndarray, channel: int = 0) -> int | np.ndarray:
    """The value of pixel (0, 0) of an image of ``label`` in ``channel``."""
    return label * 2 + 5 + CHANNEL_OFFSET[channel]


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def class_labels(counts: list[int]) -> np.ndarray:
    """Labels with ``counts[c]`` items of class c, interleaved in a fixed shuffled order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(123).permutation(labels).astype(np.uint8)


def images_for(labels: np.ndarray, channels: int, size: int = 28) -> np.ndarray:
    """uint8 (N, C, size, size): random pixels, pixel (0, 0) = :func:`marker` of the label."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(len(labels), channels, size, size), dtype=np.uint8)
    for c in range(channels):
        x[:, c, 0, 0] = marker(labels.astype(np.int64), c)
    return x


# -- MNIST / Fashion-MNIST ------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array (magic 0x0000080<ndim> unless given)."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=1))
    return path


def write_mnist(folder: Path, train_counts: list[int] | None = None, test_counts: list[int] | None = None,
                size: int = 28) -> dict[str, np.ndarray]:
    """The four IDX gz files of a tiny MNIST in ``folder``; returns the arrays written."""
    out = {}
    for split, counts in (("train", train_counts or [4] * 10), ("test", test_counts or [2] * 10)):
        labels = class_labels(counts)
        images = images_for(labels, 1, size)[:, 0]
        write_gz(folder / IDX_NAMES[f"{split}_images"], idx_bytes(images))
        write_gz(folder / IDX_NAMES[f"{split}_labels"], idx_bytes(labels))
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


# -- CIFAR ---------------------------------------------------------------------------------------

def write_pickle(path: Path, obj: object, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def cifar_batch(labels: np.ndarray, label_key: bytes = b"labels") -> dict:
    """A CIFAR batch dict: bytes keys, (N, 3072) uint8 channel-major data, labels as a list."""
    data = images_for(labels, 3, 32).reshape(len(labels), 3072)
    d = {b"batch_label": b"testing batch", label_key: [int(v) for v in labels], b"data": data,
         b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    if label_key == b"fine_labels":
        d[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return d


def write_cifar10(folder: Path, per_batch: int = 2, test_per_class: int = 1, protocol: int = 2,
                  meta: bool = True) -> Path:
    """``folder/cifar-10-batches-py/``: 5 data batches of ``per_batch`` images per class, test, meta."""
    base = folder / "cifar-10-batches-py"
    for i in range(1, 6):
        write_pickle(base / f"data_batch_{i}", cifar_batch(class_labels([per_batch] * 10)), protocol)
    write_pickle(base / "test_batch", cifar_batch(class_labels([test_per_class] * 10)), protocol)
    if meta:
        names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        write_pickle(base / "batches.meta", {b"num_cases_per_batch": 10000, b"label_names": names,
                                             b"num_vis": 3072}, protocol)
    return base


def write_cifar100(folder: Path, protocol: int = 2) -> Path:
    """``folder/cifar-100-python/{train,test,meta}``: 2 train / 1 test image per fine class."""
    base = folder / "cifar-100-python"
    labels_tr = class_labels([2] * 100)
    labels_te = class_labels([1] * 100)
    write_pickle(base / "train", cifar_batch(labels_tr, b"fine_labels"), protocol)
    write_pickle(base / "test", cifar_batch(labels_te, b"fine_labels"), protocol)
    write_pickle(base / "meta", {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
                                 b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, protocol)
    return base


class Evil:
    """Unpickling this runs ``touch <path>``: what the restricted unpickler must refuse."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import os  # noqa: PLC0415

        return (os.system, (f"touch {self.path}",))


# -- SVHN ----------------------------------------------------------------------------------------

def write_svhn_mat(path: Path, labels: np.ndarray) -> np.ndarray:
    """A .mat with X (32, 32, 3, N) uint8 and y (N, 1) where digit 0 is stored as 10; returns X."""
    import scipy.io  # noqa: PLC0415

    x = images_for(labels, 3, 32).transpose(2, 3, 1, 0).copy()  # (N,C,H,W) -> (H,W,C,N)
    y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": y})
    return x


# -- ImageFolder ---------------------------------------------------------------------------------

def write_image(path: Path, array: np.ndarray) -> Path:
    """Save (H, W) or (H, W, 3) uint8 as PNG/JPEG (format from the extension)."""
    from PIL import Image  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") \
        else Image.fromarray(array).save(path)
    return path


# -- HTTP ----------------------------------------------------------------------------------------

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (ephemeral port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def unused_url() -> str:
    """A 127.0.0.1 URL on a port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
