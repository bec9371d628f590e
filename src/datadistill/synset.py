"""SyntheticSet: the distilled images, their labels, and everything needed to use them later.

File format: one safetensors file (never a pickle). Tensors: ``images`` (N, C, H, W) float32 in
normalized (and, if used, ZCA-whitened) space; ``labels`` (N,) int64 or (N, K) float32 soft labels;
optionally ``lr`` (scalar, a learned learning rate), ``zca_mean`` / ``zca_transform`` /
``zca_inverse``, and ``region_labels`` (N, R, K) float32: soft labels of the R regions of each image
(RDED's stitched images; ``labels`` then holds their area-weighted mixture, and the metadata's
``regions`` say where the regions lie). The safetensors metadata holds ``format`` =
``datadistill.synset``, the format version, the dataset spec and the run metadata as JSON.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._version import __version__
from .data.base import DatasetSpec
from .errors import FormatError
from .fileio import atomic_path, is_torch_file

FORMAT = "datadistill.synset"
FORMAT_VERSION = "1"
RUN_FOLDER_FILE = "synset.safetensors"  # the set's name in a run folder (run/folder.py)
PUBLISHED_HINT = ("a set another code base saved is read with `--format mtt|datm|pad|ddranking|vico|imagefolder "
                  "--dataset D` (datadistill evaluate, datadistill import)")


@dataclass
class SyntheticSet:
    images: torch.Tensor
    labels: torch.Tensor
    spec: DatasetSpec
    lr: float | None = None
    zca: dict[str, torch.Tensor] | None = None  # {"mean", "transform", "inverse"}
    meta: dict = field(default_factory=dict)
    region_labels: torch.Tensor | None = None  # (N, R, K): per-region soft labels (see the module doc)

    def __post_init__(self) -> None:
        check_tensors(self.images, self.labels, self.spec, self.region_labels)

    # ----------------------------------------------------------------- properties
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def soft(self) -> bool:
        return self.labels.ndim == 2

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1) if self.soft else self.labels

    @property
    def ipc(self) -> int:
        counts = torch.bincount(self.hard_labels.cpu(), minlength=self.spec.num_classes)
        return int(counts.max())

    def default_data_root(self) -> str | None:
        """Where to find the real data of the set's dataset when not told: the data root of the
        run that distilled it (stored in its config), unless $DATADISTILL_DATA is set (the
        environment then wins, as for any command). None: the usual default."""
        if os.environ.get("DATADISTILL_DATA"):
            return None
        config = self.meta.get("config")
        root = config.get("data_root") if isinstance(config, dict) else None
        return root if isinstance(root, str) and root else None

    def to(self, device) -> "SyntheticSet":
        zca = None if self.zca is None else {k: v.to(device) for k, v in self.zca.items()}
        regions = None if self.region_labels is None else self.region_labels.to(device)
        return SyntheticSet(self.images.to(device), self.labels.to(device), self.spec, self.lr, zca, self.meta, regions)

    def detach(self) -> "SyntheticSet":
        regions = None if self.region_labels is None else self.region_labels.detach().clone()
        return SyntheticSet(
            self.images.detach().clone(), self.labels.detach().clone(), self.spec, self.lr, self.zca, dict(self.meta),
            regions,
        )

    # ----------------------------------------------------------------- file I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (the old file stays intact until the new one is complete)."""
        path = Path(path)
        tensors = {
            "images": self.images.detach().float().cpu().contiguous(),
            "labels": self.labels.detach().cpu().contiguous(),
        }
        if self.lr is not None:
            tensors["lr"] = torch.tensor(float(self.lr), dtype=torch.float32)
        if self.zca is not None:
            for k, v in self.zca.items():
                tensors[f"zca_{k}"] = v.detach().float().cpu().contiguous()
        if self.region_labels is not None:
            tensors["region_labels"] = self.region_labels.detach().float().cpu().contiguous()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": json.dumps(self.spec.to_dict()),
            "meta": json.dumps({"package_version": __version__, **self.meta}, default=str),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SyntheticSet":
        path = Path(path)
        if path.is_dir():
            if not (path / RUN_FOLDER_FILE).exists() and any(path.glob("*.pt")):
                raise FormatError(f"{path}: no {RUN_FOLDER_FILE} here, but .pt files: {PUBLISHED_HINT}")
            path = path / RUN_FOLDER_FILE
        if not path.exists():
            raise FormatError(f"{path}: no such file (expected a run folder or a .safetensors synthetic set)")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            if is_torch_file(path):
                raise FormatError(f"{path}: a torch file, not a datadistill synthetic set: {PUBLISHED_HINT}") from None
            raise FormatError(f"{path}: not a readable safetensors file ({e})") from e
        if header.get("format") != FORMAT:
            raise FormatError(f"{path}: not a datadistill synthetic set (no '{FORMAT}' format tag)")
        if header.get("format_version") != FORMAT_VERSION:
            raise FormatError(
                f"{path}: synthetic-set format version {header.get('format_version')!r}; "
                f"this datadistill reads version {FORMAT_VERSION}"
            )
        try:
            spec, meta, images, labels, lr, zca = _checked(path, header, tensors)
            regions = _region_labels(path, tensors, labels)
            try:
                syn = cls(images, labels, spec, lr, zca, meta, regions)  # the shapes: check_tensors
            except FormatError as e:
                raise FormatError(f"{path}: {e}") from None
        except FormatError as e:
            raise FormatError(f"{e}; the file is corrupt or was not written by datadistill (distill the set again)") from None
        return syn.to(device) if str(device) != "cpu" else syn

    # ----------------------------------------------------------------- pixels, grids, export
    def pixels(self) -> torch.Tensor:
        """Images as [0, 1] pixels (N, C, H, W): ZCA undone, normalization undone, clamped."""
        x = self.images.detach().float().cpu()
        if self.zca is not None:
            flat = x.reshape(x.shape[0], -1)
            flat = flat @ self.zca["inverse"].float().cpu().T + self.zca["mean"].float().cpu()
            x = flat.reshape(x.shape)
        return self.spec.denormalize(x).clamp(0, 1)

    def grid_array(self, pad: int = 2) -> np.ndarray:
        """uint8 array (H, W, C): one row per class, IPC columns, white padding."""
        return make_grid(self.pixels(), self.hard_labels.cpu(), self.spec.num_classes, pad)

    def save_grid(self, path: str | os.PathLike, pad: int = 2) -> Path:
        arr = self.grid_array(pad)
        img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        path = Path(path)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        return path

    def export_imagefolder(self, out_dir: str | os.PathLike) -> Path:
        """One sub-folder per class (its name), one PNG per image, pixels de-normalized."""
        out = Path(out_dir)
        px = (self.pixels() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        labels = self.hard_labels.cpu().tolist()
        counters: dict[int, int] = {}
        for arr, c in zip(px, labels):
            name = _safe_name(self.spec.class_names[c]) if c < len(self.spec.class_names) else str(c)
            d = out / f"{c:03d}_{name}"
            d.mkdir(parents=True, exist_ok=True)
            k = counters.get(c, 0)
            counters[c] = k + 1
            img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
            with atomic_path(d / f"{k:04d}.png") as tmp:
                img.save(tmp, format="PNG")
        return out


MAX_SPEC_CHARS = 1 << 16  # a spec of 10,000 classes with long names is well under this
MAX_META_CHARS = 1 << 24
TENSORS = ("images", "labels", "lr", "zca_mean", "zca_transform", "zca_inverse", "region_labels")


def _json_field(path: Path, header: dict, key: str, limit: int, default: str | None = None) -> dict:
    text = header.get(key, default)
    if not isinstance(text, str):
        raise FormatError(f"{path}: field '{key}' is missing from the synthetic set's metadata")
    if len(text) > limit:
        raise FormatError(f"{path}: field '{key}' is {len(text):,} characters long (at most {limit:,})")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else f"not JSON: {e}"
        raise FormatError(f"{path}: field '{key}' is corrupt ({reason})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: field '{key}' must be a JSON object, got {type(value).__name__}")
    return value


def _spec(path: Path, d: dict) -> DatasetSpec:
    """The stored dataset spec, every value checked (positive sizes, one name per class, ...)."""
    def bad(field: str, what: str):
        return FormatError(f"{path}: spec field '{field}' {what}, got {d.get(field)!r:.80}")

    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def numbers(v, n) -> bool:
        return (isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                             and np.isfinite(x) for x in v))

    if not isinstance(d.get("name"), str) or not d["name"]:
        raise bad("name", "must be a dataset name")
    for key in ("channels", "num_classes"):
        if not count(d.get(key)):
            raise bad(key, "must be a positive integer")
    if not (isinstance(d.get("im_size"), list) and len(d["im_size"]) == 2 and all(map(count, d["im_size"]))):
        raise bad("im_size", "must be [height, width] of positive integers")
    names = d.get("class_names")
    if not (isinstance(names, list) and len(names) == d["num_classes"] and all(isinstance(n, str) for n in names)):
        raise bad("class_names", f"must be {d['num_classes']} names (num_classes)")
    if not numbers(d.get("mean"), d["channels"]):
        raise bad("mean", f"must be {d['channels']} finite numbers (channels)")
    if not numbers(d.get("std"), d["channels"]) or min(d["std"]) <= 0:
        raise bad("std", f"must be {d['channels']} positive numbers (channels)")
    return DatasetSpec.from_dict(d)


def check_tensors(images: torch.Tensor, labels: torch.Tensor, spec: DatasetSpec,
                  region_labels: torch.Tensor | None = None) -> None:
    """The shapes and label values every synthetic set has, whether built in Python or read from a
    file (which adds its own checks: dtypes, finite values, the learned lr, the ZCA): images
    (N, C, H, W) of the dataset's channels and size; labels either (N,) integer classes in
    0..K-1 or (N, K) float soft labels; region labels (N, R, K) floats. A FormatError names the
    tensor ('images', 'labels', 'region_labels') and what it should be."""
    if images.ndim != 4:
        raise FormatError(f"'images' must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, k = images.shape[0], spec.num_classes
    if images.shape[1] != spec.channels:
        raise FormatError(f"'images' have {images.shape[1]} channels, the dataset's have {spec.channels}")
    if tuple(images.shape[2:]) != tuple(spec.im_size):
        raise FormatError(f"'images' are {images.shape[2]}x{images.shape[3]}, the dataset's image size is "
                          f"{spec.im_size[0]}x{spec.im_size[1]}")
    if labels.ndim == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
        if labels.shape[0] != n:
            raise FormatError(f"{n} images but {labels.shape[0]} labels")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise FormatError(f"'labels' must be classes 0..{k - 1}, found {int(labels.min())}..{int(labels.max())}")
    elif labels.ndim == 2 and labels.is_floating_point():
        if tuple(labels.shape) != (n, k):
            raise FormatError(f"soft 'labels' must be ({n}, {k}) (images, classes), got {tuple(labels.shape)}")
    else:
        raise FormatError(f"'labels' must be (N,) integer classes or (N, classes) float soft labels, "
                          f"got {labels.dtype} of shape {tuple(labels.shape)}")
    r = region_labels
    if r is not None and (r.ndim != 3 or not r.is_floating_point() or r.shape[0] != n or r.shape[1] < 1
                          or r.shape[2] != k):
        raise FormatError(f"'region_labels' must be floats of shape ({n}, regions, {k}), got {r.dtype} of "
                          f"shape {tuple(r.shape)}")


def _checked(path: Path, header: dict, tensors: dict[str, torch.Tensor]):
    """What a set file holds beyond the shapes that the SyntheticSet constructor checks
    (check_tensors): the spec and meta, dtypes, finite values, the learned lr, the ZCA. Returns
    (spec, meta, images, labels, lr, zca). A FormatError names the file and the field."""
    spec = _spec(path, _json_field(path, header, "spec", MAX_SPEC_CHARS))
    meta = _json_field(path, header, "meta", MAX_META_CHARS, "{}")
    unknown = sorted(set(tensors) - set(TENSORS))
    if unknown:
        raise FormatError(f"{path}: unknown tensor(s) {unknown}; a synthetic set holds {', '.join(TENSORS)}")
    for key in ("images", "labels"):
        if key not in tensors:
            raise FormatError(f"{path}: the synthetic set has no '{key}' tensor")
    images, labels = tensors["images"], tensors["labels"]
    if not images.is_floating_point():
        raise FormatError(f"{path}: 'images' must be floating point, got {images.dtype}")
    if images.ndim >= 1 and images.shape[0] < 1:
        raise FormatError(f"{path}: 'images' hold no image (N = 0)")
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise FormatError(f"{path}: 'images' hold NaN or infinite values")
    if labels.ndim == 2 and labels.is_floating_point():
        labels = labels.float()
        if not bool(torch.isfinite(labels).all()):
            raise FormatError(f"{path}: soft 'labels' hold NaN or infinite values")
    elif labels.ndim == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
        labels = labels.long()  # any other kind of labels is refused by the constructor (check_tensors)
    want = (spec.channels, *spec.im_size)
    lr = None
    if "lr" in tensors:
        t = tensors["lr"]
        if t.numel() != 1 or t.ndim > 1 or not t.is_floating_point():
            raise FormatError(f"{path}: 'lr' must be one floating-point number, got {t.dtype} of shape {tuple(t.shape)}")
        lr = float(t.reshape(()))
        if not (np.isfinite(lr) and lr > 0):
            raise FormatError(f"{path}: 'lr' (the learned learning rate) must be a positive number, got {lr}")
    zca = {k[4:]: v for k, v in tensors.items() if k.startswith("zca_")} or None
    if zca is not None:
        d = int(np.prod(want))
        shapes = {"mean": (d,), "transform": (d, d), "inverse": (d, d)}
        if set(zca) != set(shapes):
            raise FormatError(f"{path}: a ZCA needs zca_mean, zca_transform and zca_inverse; found "
                              f"{', '.join('zca_' + z for z in sorted(zca))}")
        for z, shape in shapes.items():
            t = zca[z]
            if tuple(t.shape) != shape or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise FormatError(f"{path}: 'zca_{z}' must be finite floats of shape {shape} (C*H*W = {d}), got "
                                  f"{t.dtype} of shape {tuple(t.shape)}")
        zca = {z: t.float() for z, t in zca.items()}
    return spec, meta, images, labels, lr, zca


def _region_labels(path: Path, tensors: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor | None:
    """The optional per-region soft labels, finite floats (their shape is checked with the set's)."""
    r = tensors.get("region_labels")
    if r is None:
        return None
    if not r.is_floating_point():
        raise FormatError(f"{path}: 'region_labels' must be floats, got {r.dtype}")
    if not bool(torch.isfinite(r).all()):
        raise FormatError(f"{path}: 'region_labels' hold NaN or infinite values")
    return r.float()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "class"


def make_grid(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, pad: int = 2) -> np.ndarray:
    """Arrange [0,1] images as rows by class. Returns uint8 (H, W, C)."""
    n, c, h, w = pixels.shape
    rows = [torch.nonzero(labels == k).flatten() for k in range(num_classes)]
    cols = max(1, max((len(r) for r in rows), default=1))
    H = num_classes * (h + pad) + pad
    W = cols * (w + pad) + pad
    canvas = np.full((H, W, c), 255, dtype=np.uint8)
    px = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for k, idx in enumerate(rows):
        for j, i in enumerate(idx.tolist()):
            y, x = pad + k * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = px[i]
    return canvas
