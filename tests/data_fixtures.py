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


# -- the large datasets' layouts (issue 19), a few images each ------------------------------------

def _rgb(label: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((size, size, 3), (37 * label) % 256, np.uint8)
    return np.clip(base.astype(np.int16) + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def write_tiny_imagenet(folder: Path, wnids: list[str] | None = None, train_per_class: int = 3,
                        val_per_class: int = 2, size: int = 64) -> Path:
    """<folder>/tiny-imagenet-200/ in the official layout (wnids.txt, words.txt, train/<wnid>/images,
    val/images + val_annotations.txt), JPEGs of class-coloured noise."""
    base = folder / "tiny-imagenet-200"
    wnids = wnids or ["n02124075", "n01443537", "n04067472"]  # deliberately not sorted
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tname of {w}, other\n" for w in wnids) + "n99999999\tunused\n")
    rows, k = [], 0
    for c, w in enumerate(sorted(wnids)):
        for i in range(train_per_class):
            write_image(base / "train" / w / "images" / f"{w}_{i}.JPEG", _rgb(c, size, 100 * c + i))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(val_per_class):
            write_image(base / "val" / "images" / f"val_{k}.JPEG", _rgb(c, size, 1000 + k))
            rows.append(f"val_{k}.JPEG\t{w}\t0\t0\t{size - 1}\t{size - 1}")
            k += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return base


def write_imagenet(folder: Path, wnids: list[str], with_images: list[str] | None = None, per_class: int = 2,
                   val_flat: bool = False, size: tuple[int, int] = (40, 30)) -> Path:
    """<folder>/ as an ILSVRC2012 tree: train/<wnid>/*.JPEG for every wnid (images only for
    `with_images`, default all), val/ as class folders or flat with the devkit's ground truth and a
    meta.mat (written with scipy)."""
    import scipy.io

    with_images = wnids if with_images is None else with_images
    order = sorted(wnids)
    truth, n = [], 0
    for w in order:
        (folder / "train" / w).mkdir(parents=True, exist_ok=True)
        if w not in with_images:
            continue
        c = order.index(w)
        for i in range(per_class):
            write_image(folder / "train" / w / f"{w}_{i}.JPEG", np.full((*size, 3), (37 * c) % 256, np.uint8))
        n += 1
        write_image(folder / "val" / (f"ILSVRC2012_val_{n:08d}.JPEG" if val_flat else f"{w}/v{n}.JPEG"),
                    np.full((*size, 3), (37 * c) % 256, np.uint8))
        truth.append(w)
    if val_flat:
        devkit = folder / "ILSVRC2012_devkit_t12" / "data"
        devkit.mkdir(parents=True, exist_ok=True)
        ids = {w: i + 1 for i, w in enumerate(reversed(order))}  # the devkit's IDs are not the sorted order
        (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in truth))
        synsets = np.zeros((len(order),), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
        for i, w in enumerate(order):
            synsets[i] = (ids[w], w)
        scipy.io.savemat(str(devkit / "meta.mat"), {"synsets": synsets})
    return folder


def write_downsampled(folder: Path, side: int = 32, per_batch: int = 4, val: int = 3, mean: bool = True,
                      seed: int = 0) -> Path:
    """<folder>/train_data_batch_{1..10}.npz and val_data.npz in Chrabaszcz et al.'s format: 'data'
    uint8 (N, 3*side*side) plane by plane, 'labels' 1..1000, 'mean' in the training batches."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 12):
        n = per_batch if i <= 10 else val
        labels = rng.integers(1, 1001, n)
        data = rng.integers(0, 256, (n, 3 * side * side), dtype=np.uint8)
        arrays = {"data": data, "labels": labels.tolist()}
        if i <= 10 and mean:
            arrays["mean"] = data.mean(0)
        np.savez(folder / (f"train_data_batch_{i}.npz" if i <= 10 else "val_data.npz"), **arrays)
    return folder


MHIST_COLUMNS = ("Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA (Out of 7)", "Partition")


def write_mhist(folder: Path, train: int = 6, test: int = 4, size: int = 224, columns=MHIST_COLUMNS) -> Path:
    """<folder>/images/*.png and annotations.csv in MHIST's layout; votes 0..7 cycle, label SSA when >= 4."""
    rows = []
    for i in range(train + test):
        votes = i % 8
        label = "SSA" if votes >= 4 else "HP"
        name = f"MHIST_{i:03d}.png"
        write_image(folder / "images" / name, _rgb(int(label == "SSA") * 3, size, i))
        rows.append({"Image Name": name, "Majority Vote Label": label,
                     "Number of Annotators who Selected SSA (Out of 7)": str(votes),
                     "Partition": "train" if i < train else "test"})
    with open(folder / "annotations.csv", "w", newline="") as f:
        import csv

        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return folder
