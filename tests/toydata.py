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


def check_kill_and_resume(method_cls, make_cfg, data: DatasetSplits, tmp_path, monkeypatch):
    """Run `make_cfg()` (6 iterations, checkpoint every 2) uninterrupted in tmp_path/a; run it again
    in tmp_path/b killed during iteration 4; resume; the set must equal the uninterrupted one and
    metrics.jsonl must hold each iteration once. Returns (uninterrupted set, resumed set) for
    method-specific checks."""
    import json

    import pytest

    from datadistill.run import run_distillation
    from datadistill.synset import SyntheticSet

    full = run_distillation(make_cfg(), tmp_path / "a", data=data, progress=False).synset
    real_step = method_cls.step

    def dying_step(self, it):
        if it == 3:  # killed during iteration 4: the checkpoint at 2 is the last one
            raise KeyboardInterrupt
        return real_step(self, it)

    monkeypatch.setattr(method_cls, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(make_cfg(), tmp_path / "b", data=data, progress=False)
    monkeypatch.setattr(method_cls, "step", real_step)
    assert SyntheticSet.load(tmp_path / "b").meta["iterations"] == 2
    resumed = run_distillation(make_cfg(), tmp_path / "b", data=data, progress=False)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.synset.images, full.images)
    its = [json.loads(line)["it"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert its[:6] == [1, 2, 3, 4, 5, 6]  # no duplicated iterations after the resume
    return full, resumed.synset
