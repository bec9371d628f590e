"""The in-memory shape every loader returns: normalized images, labels, and a spec."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..errors import DatadistillError


class DataError(DatadistillError, RuntimeError):
    """A dataset is missing, corrupt, or not what was asked for. The message says what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a network and the file format need to know about a dataset."""

    name: str
    channels: int
    im_size: tuple[int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["im_size"] = list(self.im_size)
        d["class_names"] = list(self.class_names)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        return cls(
            name=str(d["name"]),
            channels=int(d["channels"]),
            im_size=tuple(int(v) for v in d["im_size"]),
            num_classes=int(d["num_classes"]),
            class_names=tuple(str(v) for v in d["class_names"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> normalized space (N, C, H, W)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized space -> [0, 1] pixels (not clamped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * std + mean


@dataclass
class ImageData:
    """One split: float32 images (N, C, H, W) in normalized space and int64 labels (N,).

    `images` is a tensor (the in-memory path) or a `store.StoredImages` (the out-of-core path: the
    split stays on disk and is read, converted and normalized a batch at a time on indexing); both
    answer the same calls (`class_batch`, `subset`, `to`, indexing, `len`). `extra`: per-image
    values a dataset keeps besides the label (MHIST: the annotators' agreement), as tensors (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    spec: DatasetSpec
    extra: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    _per_class: list[torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"{self.spec.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(
                f"{self.spec.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.images.shape[1] != self.spec.channels or tuple(self.images.shape[2:]) != tuple(self.spec.im_size):
            raise DataError(
                f"{self.spec.name}: images have shape {tuple(self.images.shape[1:])}, "
                f"spec says {(self.spec.channels, *self.spec.im_size)}"
            )
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.spec.num_classes):
            raise DataError(
                f"{self.spec.name}: labels out of range [0, {self.spec.num_classes}) "
                f"(min {int(self.labels.min())}, max {int(self.labels.max())})"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def out_of_core(self) -> bool:
        """True when the images are read from the out-of-core store (not a tensor in memory)."""
        return not isinstance(self.images, torch.Tensor)

    @property
    def indices_per_class(self) -> list[torch.Tensor]:
        """Index tensor of each class (ascending), computed once with one stable sort."""
        if self._per_class is None:
            lab = self.labels.cpu()
            order = torch.argsort(lab, stable=True)
            counts = torch.bincount(lab, minlength=self.spec.num_classes)[: self.spec.num_classes]
            self._per_class = list(order.split(counts.tolist()))
        return self._per_class

    def class_counts(self) -> list[int]:
        return [int(i.numel()) for i in self.indices_per_class]

    def class_batch(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images of class c drawn without replacement (all of them if the class has fewer)."""
        idx = self.indices_per_class[c]
        perm = torch.randperm(idx.numel(), generator=generator)[: min(n, idx.numel())]
        return self.images[idx[perm].to(self.images.device)]

    def subset(self, idx: torch.Tensor) -> "ImageData":
        """The images `idx` (out of core: a view, nothing read)."""
        idx = idx.to(self.images.device)
        images = self.images.view(idx) if self.out_of_core else self.images[idx]
        extra = {k: v[idx.to(v.device)] for k, v in self.extra.items()}
        return ImageData(images, self.labels[idx.to(self.labels.device)], self.spec, extra)

    def to(self, device: torch.device | str) -> "ImageData":
        out = ImageData(self.images.to(device), self.labels.to(device), self.spec, self.extra)
        out._per_class = self._per_class
        return out


@dataclass
class DatasetSplits:
    """train (minus the validation part), val (carved from train with a fixed seed), test."""

    train: ImageData
    val: ImageData
    test: ImageData

    @property
    def spec(self) -> DatasetSpec:
        return self.train.spec
