"""The out-of-core image store: each split packed once into a uint8 array file, read a batch at a
time, so that memory is bounded by the batch sizes and not by the dataset.

Layout of one cache entry, ``<cache>/<name>-<H>x<W>/`` (``<cache>`` is ``<data-root>/<name>/.cache``
unless ``--cache DIR`` says otherwise)::

    manifest.json        format version, fingerprint of the sources, shapes, class names, statistics
    train.npy  test.npy  uint8 (N, C, H, W), plain .npy (numpy.load(..., mmap_mode="r") opens them)
    train_labels.npy     int64 (N,), and test_labels.npy
    train_by_class.npy   the row indices sorted by class (stable), train_class_offsets.npy its
                         (num_classes + 1) offsets: class c is rows by_class[off[c]:off[c+1]]
    train_<extra>.npy    per-image extras of the reader (MHIST: agreement), and test_<extra>.npy

Building: the parts of each split (`scan.py`) are decoded by torch DataLoader workers (in order)
and appended to the array files with plain writes; the entry is written into a temporary folder
beside it and renamed into place once complete, so a reader never sees a half-written entry (a
build killed half-way leaves only a temporary folder, removed by the next build). The fingerprint
covers every source file's path, size and modification time, the image size and the format
version: when any changes, the entry is rebuilt.

Reading: `StoredImages` reads rows with ``os.pread`` rather than through a memory map, because
the pages of a memory map count as resident memory of the process once touched; the page cache
serves repeated reads all the same. Each batch is converted on the way out, with exactly the
in-memory path's operations (``/255``, resize, ``(x - mean) / std``, then ZCA where used), so
both paths give the same numbers.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataError
from .scan import Part, Scan

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
STATS_CHUNK = 1024  # images per step of the statistics' accumulation


# -- fingerprint and location ------------------------------------------------------------------------
def fingerprint(scan_sources: list[Path], settings: dict) -> str:
    """sha256 of every source file's path, size and mtime (ns), the `settings` and the format."""
    h = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True).encode())
    for p in sorted(str(s) for s in scan_sources):
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"{p}: cannot read the file ({e})") from e
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_dir(cache: Path, name: str, shape: tuple[int, int, int]) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return Path(cache) / f"{safe}-{shape[1]}x{shape[2]}"


# -- building ---------------------------------------------------------------------------------------
class _Parts(torch.utils.data.Dataset):
    def __init__(self, parts: list[Part]):
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.parts[i].load()


def _keep(x):  # DataLoader's per-item conversion: leave the numpy arrays as they are
    return x


def default_workers() -> int:
    """``$DATADISTILL_WORKERS`` if set, else up to 8 decoding processes (one per CPU core)."""
    env = os.environ.get("DATADISTILL_WORKERS", "").strip()
    if env:
        return max(0, int(env))
    return min(8, os.cpu_count() or 1)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _write_split(split, shape, path: Path, workers: int, bar) -> tuple[np.ndarray, np.ndarray]:
    """Decode the parts of `split` in order into `path`; returns per-channel sums and sums of
    squares of the 0..255 pixel values (exact integers) for the statistics."""
    n = len(split)
    c = shape[0]
    sums, squares = np.zeros(c, dtype=np.uint64), np.zeros(c, dtype=np.uint64)
    workers = workers if len(split.parts) > 1 else 0
    loader = torch.utils.data.DataLoader(_Parts(split.parts), batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_keep)
    written = 0
    with open(path, "wb") as f:
        f.write(_npy_header((n, *shape)))
        for part, arr in zip(split.parts, loader):
            arr = np.asarray(arr)
            if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(shape) or arr.shape[0] != part.count:
                raise DataError(
                    f"a part of the dataset decoded to {arr.dtype} {tuple(arr.shape)}, expected "
                    f"({part.count}, {', '.join(map(str, shape))}) uint8; its files are not what the dataset "
                    "says they are"
                )
            f.write(np.ascontiguousarray(arr).tobytes())
            for start in range(0, arr.shape[0], STATS_CHUNK):  # a few MB at a time, whatever the part's size
                v = arr[start : start + STATS_CHUNK].reshape(-1, c, int(np.prod(shape[1:]))).astype(np.uint32)
                sums += v.sum((0, 2), dtype=np.uint64)
                squares += np.square(v).sum((0, 2), dtype=np.uint64)
            written += arr.shape[0]
            bar.update(arr.shape[0])
        f.flush()
        os.fsync(f.fileno())
    if written != n:
        raise DataError(f"{path}: wrote {written} images, expected {n}")
    return sums, squares


def build(scan: Scan, dest: Path, fp: str, *, name: str, workers: int | None = None,
          progress: bool = True) -> Path:
    """Pack `scan` into the entry `dest` (see the module docstring); returns `dest`."""
    from tqdm.auto import tqdm

    import sys

    dest = Path(dest)
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    for old in dest.parent.glob(f".tmp-{dest.name}-*"):  # left by a build that was killed
        if not _alive(old.name):
            shutil.rmtree(old, ignore_errors=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    workers = default_workers() if workers is None else workers
    t0 = time.perf_counter()
    try:
        stats = {}
        total = len(scan.train) + len(scan.test)
        with tqdm(total=total, desc=f"caching {name} ({dest})", unit="img", disable=not progress, file=sys.stderr,
                  leave=False) as bar:
            for s in SPLITS:
                split = getattr(scan, s)
                stats[s] = _write_split(split, scan.shape, tmp / f"{s}.npy", workers, bar)
                np.save(tmp / f"{s}_labels.npy", split.labels)
                for key, values in split.extra.items():
                    np.save(tmp / f"{s}_{key}.npy", np.asarray(values))
        labels = scan.train.labels
        order = np.argsort(labels, kind="stable")
        offsets = np.searchsorted(labels[order], np.arange(len(scan.class_names) + 1), side="left")
        np.save(tmp / "train_by_class.npy", order.astype(np.int64))
        np.save(tmp / "train_class_offsets.npy", offsets.astype(np.int64))
        n_pix = max(1, len(scan.train) * scan.shape[1] * scan.shape[2])
        mean = stats["train"][0].astype(np.float64) / (255.0 * n_pix)
        std = np.sqrt(np.maximum(stats["train"][1].astype(np.float64) / (255.0**2 * n_pix) - mean**2, 0.0))
        manifest = {
            "format": "datadistill-image-store", "format_version": FORMAT_VERSION, "fingerprint": fp,
            "name": name, "shape": list(scan.shape), "class_names": list(scan.class_names),
            "counts": {s: len(getattr(scan, s)) for s in SPLITS},
            "extra": sorted(scan.train.extra), "train_mean": mean.tolist(),
            "train_std": [float(v) if v > 1e-8 else 1.0 for v in std],
            "sources": len(scan.sources), "build_seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _put_in_place(tmp, dest, fp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # a failed first build leaves no empty cache folders behind (deepest first)
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return dest


def _alive(tmp_name: str) -> bool:
    """Whether the build that owns the temporary folder `tmp_name` (".tmp-<entry>-<pid>-<hex>")
    still runs on this machine (several processes of one torchrun launch may build at once)."""
    parts = tmp_name.rsplit("-", 2)
    try:
        pid = int(parts[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _put_in_place(tmp: Path, dest: Path, fp: str) -> None:
    """Rename the finished `tmp` to `dest`. A stale entry there is moved aside first and deleted
    after; when another process (torchrun) put the same entry in place first, ours is dropped."""
    trash = None
    if dest.exists():
        trash = dest.parent / f".tmp-{dest.name}-{os.getpid()}-old{uuid.uuid4().hex[:6]}"
        try:
            os.rename(dest, trash)
        except OSError:
            trash = None
    try:
        os.rename(tmp, dest)
    except OSError:
        theirs = read_manifest(dest)
        if theirs is None or theirs.get("fingerprint") != fp:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


# -- opening ----------------------------------------------------------------------------------------
def read_manifest(entry: Path) -> dict | None:
    """The entry's manifest, or None when there is no complete entry at `entry`."""
    try:
        return json.loads((Path(entry) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Store:
    """An opened cache entry."""

    path: Path
    manifest: dict

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["class_names"])

    def array_file(self, split: str) -> Path:
        return self.path / f"{split}.npy"

    def labels(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}_labels.npy")

    def extra(self, split: str) -> dict[str, np.ndarray]:
        return {k: np.load(self.path / f"{split}_{k}.npy") for k in self.manifest.get("extra", [])}

    def load_array(self, split: str) -> np.ndarray:
        """The whole split as uint8 in memory (the in-memory path)."""
        return np.load(self.array_file(split))


def open_or_build(scan_fn, cache: Path, name: str, settings: dict, *, workers: int | None = None,
                  progress: bool = True) -> Store:
    """The entry for this dataset under `cache`, built (or rebuilt) when missing or stale.
    `scan_fn()` gives the `Scan` (listing the files is needed for the fingerprint in any case)."""
    scan = scan_fn()
    fp = fingerprint(scan.sources, {**settings, "shape": list(scan.shape)})
    dest = entry_dir(cache, name, scan.shape)
    manifest = read_manifest(dest)
    if manifest is None or manifest.get("fingerprint") != fp or manifest.get("format_version") != FORMAT_VERSION:
        try:
            build(scan, dest, fp, name=name, workers=workers, progress=progress)
        except OSError as e:
            raise DataError(f"{name}: cannot write the image cache under {cache} ({e}); free disk space or "
                            "point --cache at a writable folder") from e
        manifest = read_manifest(dest)
        if manifest is None:
            raise DataError(f"{dest}: the image cache was not written completely; remove the folder and rerun")
    return Store(dest, manifest)


# -- reading a batch at a time ----------------------------------------------------------------------
READ_THREADS = 16  # reads in flight for a batch of scattered rows (I/O, not compute: they hardly use a CPU)
PARALLEL_READS_FROM = 32  # separate reads in one batch from which they go to the thread pool
_POOL = None


def _reader_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="datadistill-store")
    return _POOL


class StoredImages:
    """A split's images on disk that behave, for what the toolkit does with them, like the float32
    tensor of the in-memory path: ``len``, ``shape``, ``ndim``, ``device``, ``dtype``, indexing by
    an int, a slice or an index tensor (read and converted then), ``to(device)``, ``split(n)``
    (chunks in order), ``detach()`` (the rows as a tensor: only for small views).

    `rows`: which rows of the file this view holds, in order. The conversion: ``x / 255``, then the
    resize to `size` when it differs from the stored size (bilinear, antialiased, as the in-memory
    path), then ``(x - mean) / std``, then ``(x - zca_mean) @ transform.T`` when `zca` is given."""

    def __init__(self, path: Path, shape: tuple[int, int, int], rows: np.ndarray, mean, std,
                 size: tuple[int, int] | None = None, zca: dict | None = None,
                 device: torch.device | str = "cpu"):
        self.path = Path(path)
        self.stored = tuple(int(v) for v in shape)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.size = tuple(size) if size is not None else tuple(self.stored[1:])
        self.zca = zca
        self.device = torch.device(device)
        self.dtype = torch.float32
        with open(self.path, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            self._offset = f.tell()
        self._row_bytes = int(np.prod(self.stored))
        self._fd: int | None = None

    # -- the tensor-like surface ----------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.stored[0], *self.size))

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.rows)

    def _like(self, **changes) -> "StoredImages":
        kw = dict(path=self.path, shape=self.stored, rows=self.rows, mean=self.mean, std=self.std, size=self.size,
                  zca=self.zca, device=self.device)
        kw.update(changes)
        return StoredImages(**kw)

    def to(self, device, dtype=None) -> "StoredImages":
        if isinstance(device, torch.dtype):
            device, dtype = self.device, device
        if dtype not in (None, torch.float32):
            raise DataError("images read from the out-of-core store are float32")
        return self._like(device=device)

    def view(self, idx) -> "StoredImages":
        """A view of rows `idx` of this view (nothing read)."""
        sel = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        return self._like(rows=self.rows[sel])

    def with_zca(self, zca: dict) -> "StoredImages":
        return self._like(zca={"mean": zca["mean"].float().cpu(), "transform": zca["transform"].float().cpu()})

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            rows = self.rows[key]
        elif isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        else:
            rows = self.rows[key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)]
        return self._convert(self._read(rows))

    def split(self, chunk: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), chunk):
            yield self[start : start + chunk]

    def detach(self) -> torch.Tensor:
        return self[:]

    def cpu(self) -> torch.Tensor:
        return self[:].cpu()

    # -- reading and converting -------------------------------------------------------------------
    def _read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 (k, C, H, W) of `rows`, in that order; consecutive rows are read in one call."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(rows), *self.stored), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        rb, fd = self._row_bytes, self._fd

        def read_run(run: np.ndarray) -> None:
            first, k = int(srt[run[0]]), len(run)
            buf = os.pread(fd, k * rb, self._offset + first * rb)
            if len(buf) != k * rb:
                raise DataError(f"{self.path}: the image cache is truncated; remove {self.path.parent} and rerun")
            flat[order[run]] = np.frombuffer(buf, dtype=np.uint8).reshape(k, rb)

        runs = np.split(np.arange(len(srt)), breaks)
        if len(runs) < PARALLEL_READS_FROM:
            for run in runs:
                read_run(run)
        else:  # scattered rows: many reads in flight (pread releases the GIL; the disk serves them in parallel)
            list(_reader_pool().map(read_run, runs, chunksize=max(1, len(runs) // (4 * READ_THREADS))))
        return out

    def _convert(self, u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(u8).to(torch.float32).div_(255.0)
        if tuple(x.shape[2:]) != tuple(self.size):
            x = (F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
                 if x.shape[0] else x.new_zeros((0, x.shape[1], *self.size)))
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x.sub_(mean).div_(std)
        if self.zca is not None:
            t, m = self.zca["transform"], self.zca["mean"]
            x = ((x.reshape(x.shape[0], -1) - m) @ t.T).reshape(x.shape)
        return x.to(self.device)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"] = None
        return state
