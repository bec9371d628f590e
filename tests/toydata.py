"""A tiny in-memory dataset so method and runner tests need no files."""
from __future__ import annotations

import torch

from datadistill.data import DatasetSplits, DatasetSpec, ImageData


def toy_splits(num_classes: int = 3, per_class: int = 12, channels: int = 1, size: int = 28, seed: int = 0) -> DatasetSplits:
    """Class c images are noise around a class-specific mean pattern: learnable, tiny, deterministic."""
    g = torch.Generator().manual_seed(seed)
    spec = DatasetSpec("toy", channels, (size, size), num_classes, tuple(str(c) for c in range(num_classes)),
                       (0.5,) * channels, (0.25,) * channels)
    protos = torch.randn(num_classes, channels, size, size, generator=g)

    def make(n):
        labels = torch.arange(num_classes).repeat_interleave(n)
        images = protos[labels] + 0.5 * torch.randn(labels.numel(), channels, size, size, generator=g)
        return ImageData(images, labels, spec)

    return DatasetSplits(make(per_class), make(3), make(5))


def accuracy_before_after(distiller, data: DatasetSplits, steps: int):
    """Evaluate the distiller's set, run `steps` outer iterations, evaluate again (2 tiny-ConvNet
    runs of 30 epochs, no augmentation, on `data.test`). Returns (before, after) EvalResults."""
    from datadistill.evaluate import evaluate

    kw = dict(model="convnet", runs=2, epochs=30, aug="none", test=data.test, device="cpu",
              model_args={"width": 16, "depth": 2}, progress=False)
    before = evaluate(distiller.synthetic_set(), **kw)
    for it in range(steps):
        distiller.step(it)
    return before, evaluate(distiller.synthetic_set(), **kw)
