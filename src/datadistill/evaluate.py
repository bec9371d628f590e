"""The evaluation protocol: train a fresh network N times on a set, test each once on real data.

Reported: per-run accuracies (percent), mean and std over the runs (population std, as the
DC/DSA/DM papers report), training seconds per run, and FLOPs counted with
`torch.utils.flop_counter` (convolutions and matrix products; element-wise work is not counted).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .augment import DSA, strategy_for
from .data import ImageData, load_dataset
from .errors import ConfigError
from .nets import make_net
from .rng import make_generator, resolve_device
from .synset import SyntheticSet
from .train import Augment, accuracy, classification_loss, train_model

DEFAULT_LR = 0.01


@dataclass
class EvalResult:
    model: str
    runs: int
    accuracies: list[float]
    mean: float
    std: float
    train_seconds: float  # total over the runs
    train_seconds_per_run: list[float]
    flops: dict[str, float]
    epochs: int
    lr: float
    aug: str
    split: str = "test"
    train_images: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.model}: {self.mean:.2f} +- {self.std:.2f} % on {self.split} "
            f"({self.runs} run{'s' if self.runs != 1 else ''}, {self.epochs} epochs, aug {self.aug}, "
            f"{self.train_seconds / max(1, self.runs):.1f} s/run)"
        )


def make_augment(aug: str, dataset: str, strategy: str = "color_crop_cutout_flip_scale_rotate") -> Augment | None:
    """The training-time augmentation of the evaluation protocol, as a callable (x, generator) -> x."""
    if aug == "none":
        return None
    if aug == "dsa":
        dsa = DSA(strategy_for(dataset, strategy))
        return lambda x, g: dsa(x, dsa.sample(x.shape[0], g, siamese=False))
    raise ConfigError(f"unknown evaluation augmentation {aug!r}; use dsa or none")


def count_flops(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(training FLOPs per image: forward + backward, test FLOPs per image: forward)."""
    n = x.shape[0]
    with FlopCounterMode(display=False) as fc:
        classification_loss(net(x), y).backward()
    train = fc.get_total_flops() / n
    net.zero_grad(set_to_none=True)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return float(train), float(fc.get_total_flops() / n)


def evaluate(
    syn: SyntheticSet | ImageData,
    model: str = "convnet",
    runs: int = 5,
    epochs: int | None = None,
    lr: float | None = None,
    aug: str = "dsa",
    *,
    test: ImageData | None = None,
    split: str = "test",
    data_root: str | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
    model_args: dict | None = None,
    progress: bool = True,
) -> EvalResult:
    """Train `runs` fresh `model`s on `syn` and test each once on `test` (default: the real test
    split of the set's dataset; `split="val"` for the validation split, which is what anything that
    selects must use). `epochs` None: 1000 with DSA, 300 without (the papers' protocol). `lr` None:
    the set's learned lr if it carries one, else 0.01."""
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    dev = resolve_device(device)
    spec = syn.spec
    if test is None:
        splits = load_dataset(spec.name, data_root, image_size=spec.im_size)
        test = splits.val if split == "val" else splits.test
    if isinstance(syn, SyntheticSet):
        if syn.zca is not None:  # the set lives in whitened space: whiten the real test images too
            test = apply_zca(test, syn.zca)
        images, labels = syn.images.detach(), syn.labels.detach()
        set_lr = syn.lr
    else:
        images, labels, set_lr = syn.images, syn.labels, None
    lr = lr if lr is not None else (set_lr if set_lr is not None else DEFAULT_LR)
    epochs = epochs if epochs is not None else (1000 if aug == "dsa" else 300)
    images, labels = images.to(dev), labels.to(dev)
    test_x, test_y = test.images.to(dev), test.labels.to(dev)
    augment = make_augment(aug, spec.name, dsa_strategy)
    accs, secs = [], []
    flops: dict[str, float] = {}
    for r in range(runs):
        g = make_generator(seed, "evaluate", model, r)
        net = make_net(model, spec.channels, spec.num_classes, spec.im_size, generator=g, **(model_args or {}))
        net = net.to(dev)
        if not flops:
            b = min(batch_size, images.shape[0])
            probe = make_net(model, spec.channels, spec.num_classes, spec.im_size, **(model_args or {})).to(dev)
            tr, te = count_flops(probe, images[:b], labels[:b])
            flops = {
                "train_per_image": tr,
                "train_total": tr * images.shape[0] * epochs,
                "test_per_image": te,
                "test_total": te * test_x.shape[0],
            }
        res = train_model(
            net, images, labels, epochs=epochs, lr=lr, generator=g, batch_size=batch_size,
            momentum=momentum, weight_decay=weight_decay, aug=augment, progress=progress,
            desc=f"eval {model} run {r + 1}/{runs}",
        )
        accs.append(accuracy(net, test_x, test_y))
        secs.append(res.seconds)
    return EvalResult(
        model=model, runs=runs, accuracies=accs, mean=float(np.mean(accs)), std=float(np.std(accs)),
        train_seconds=float(sum(secs)), train_seconds_per_run=secs, flops=flops, epochs=epochs,
        lr=float(lr), aug=aug, split=split, train_images=int(images.shape[0]),
    )


def apply_zca(data: ImageData, zca: dict[str, torch.Tensor]) -> ImageData:
    """Whiten real images with a set's stored ZCA so they live in the same space as the set."""
    x = data.images.reshape(len(data), -1)
    x = (x - zca["mean"].to(x)) @ zca["transform"].to(x).T
    return ImageData(x.reshape(data.images.shape), data.labels, data.spec)
