"""SyntheticSet: the distilled images, their labels, and everything needed to use them later.

File format: one safetensors file (never a pickle). Tensors: ``images`` (N, C, H, W) float32 in
normalized (and, if used, ZCA-whitened) space; ``labels`` (N,) int64 or (N, K) float32 soft labels;
optionally ``lr`` (scalar, a learned learning rate) and ``zca_mean`` / ``zca_transform`` /
``zca_inverse``. The safetensors metadata holds ``format`` = ``datadistill.synset``, the format
version, the dataset spec and the run metadata as JSON.
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
from .fileio import atomic_path

FORMAT = "datadistill.synset"
FORMAT_VERSION = "1"
RUN_FOLDER_FILE = "synset.safetensors"  # the set's name in a run folder (run/folder.py)


@dataclass
class SyntheticSet:
    images: torch.Tensor
    labels: torch.Tensor
    spec: DatasetSpec
    lr: float | None = None
    zca: dict[str, torch.Tensor] | None = None  # {"mean", "transform", "inverse"}
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise FormatError(f"synthetic images must be (N, C, H, W), got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if self.labels.shape[0] != n or self.labels.ndim not in (1, 2):
            raise FormatError(f"{n} images but labels of shape {tuple(self.labels.shape)}")
        if self.labels.ndim == 2 and self.labels.shape[1] != self.spec.num_classes:
            raise FormatError(
                f"soft labels have {self.labels.shape[1]} columns, dataset has {self.spec.num_classes} classes"
            )

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

    def to(self, device) -> "SyntheticSet":
        zca = None if self.zca is None else {k: v.to(device) for k, v in self.zca.items()}
        return SyntheticSet(self.images.to(device), self.labels.to(device), self.spec, self.lr, zca, self.meta)

    def detach(self) -> "SyntheticSet":
        return SyntheticSet(
            self.images.detach().clone(), self.labels.detach().clone(), self.spec, self.lr, self.zca, dict(self.meta)
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
            path = path / RUN_FOLDER_FILE
        if not path.exists():
            raise FormatError(f"{path}: no such file (expected a run folder or a .safetensors synthetic set)")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise FormatError(f"{path}: not a readable safetensors file ({e})") from e
        if header.get("format") != FORMAT:
            raise FormatError(f"{path}: not a datadistill synthetic set (no '{FORMAT}' format tag)")
        if header.get("format_version") != FORMAT_VERSION:
            raise FormatError(
                f"{path}: synthetic-set format version {header.get('format_version')!r}; "
                f"this datadistill reads version {FORMAT_VERSION}"
            )
        try:
            spec = DatasetSpec.from_dict(json.loads(header["spec"]))
            meta = json.loads(header.get("meta", "{}"))
            images, labels = tensors["images"], tensors["labels"]
        except (KeyError, ValueError, TypeError) as e:
            raise FormatError(f"{path}: synthetic set is missing or has a corrupt field ({e})") from e
        lr = float(tensors["lr"]) if "lr" in tensors else None
        zca = {k[4:]: v for k, v in tensors.items() if k.startswith("zca_")} or None
        syn = cls(images, labels, spec, lr, zca, meta)
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
