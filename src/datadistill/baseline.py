"""The full-data baseline: what training on the whole training split costs and reaches.

A distilled set is worth what it saves: this trains `model` on the full training split (train
minus the validation part) with the one training loop (`train.train_model`: SGD, momentum 0.9,
weight decay 5e-4, lr 0.01, batch 256, lr x0.1 at half the epochs), `runs` times from different
initializations, and reports test accuracy (mean +- population std over the runs), validation
accuracy of the same networks (nothing is selected on either split: the last epoch is reported),
training seconds, and FLOPs counted with `torch.utils.flop_counter` (convolutions and matrix
products; element-wise work such as normalization, activations and the optimizer update is not
counted):

  train_per_image  forward + backward of one training image, as the counter reports them
  train_total      train_per_image x training images x epochs (one run)
  test_per_image   forward of one test image
  test_total       test_per_image x test images (one evaluation of one run)

`epochs` defaults to 5 so that the baseline runs on a CPU in minutes on small datasets (the
papers' whole-dataset figures come from much longer training): say how many epochs a figure used. Augmentation is off by default (`aug="dsa"` turns
the evaluation protocol's DSA on).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import DatasetSplits, load_dataset
from .augment import DEFAULT_STRATEGY
from .errors import ConfigError
from .evaluate import DEFAULT_LR, flops_of_training, make_augment
from .nets import make_net
from .rng import make_generator, resolve_device
from .train import accuracy, train_model

DEFAULT_EPOCHS = 5


@dataclass
class BaselineResult:
    dataset: str
    model: str
    epochs: int
    runs: int
    lr: float
    batch_size: int
    aug: str
    seed: int
    device: str
    train_images: int
    val_images: int
    test_images: int
    test_accuracies: list[float]
    test_mean: float
    test_std: float
    val_accuracies: list[float]
    val_mean: float | None  # None when the dataset has no validation split
    val_std: float | None
    train_seconds: float  # total over the runs
    train_seconds_per_run: list[float]
    flops: dict[str, float]
    model_args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A short human-readable summary."""
        f = self.flops
        rows = [
            ("dataset / model", f"{self.dataset} / {self.model}"),
            ("training images", f"{self.train_images:,}"),
            ("epochs, runs", f"{self.epochs}, {self.runs} (aug {self.aug})"),
            ("test accuracy", f"{self.test_mean:.2f} +- {self.test_std:.2f} % ({self.runs} run{'s' if self.runs != 1 else ''})"),
            ("val accuracy", "no validation split" if self.val_mean is None
             else f"{self.val_mean:.2f} +- {self.val_std:.2f} % (same networks)"),
            ("train seconds/run", f"{self.train_seconds / max(1, self.runs):.1f}"),
            ("train FLOPs/image", f"{f['train_per_image'] / 1e6:.2f} M (forward + backward)"),
            ("train FLOPs total", f"{f['train_total'] / 1e12:.3f} T per run"),
            ("test FLOPs/image", f"{f['test_per_image'] / 1e6:.2f} M (forward)"),
            ("test FLOPs total", f"{f['test_total'] / 1e9:.2f} G ({self.test_images:,} images)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def full_data_baseline(
    dataset: str,
    model: str = "convnet",
    epochs: int = DEFAULT_EPOCHS,
    runs: int = 1,
    *,
    lr: float = DEFAULT_LR,
    batch_size: int = 256,
    aug: str = "none",
    dsa_strategy: str = DEFAULT_STRATEGY,
    model_args: dict | None = None,
    seed: int = 0,
    data: DatasetSplits | None = None,
    data_root: str | None = None,
    device: str = "auto",
    progress: bool = False,
) -> BaselineResult:
    """Train `model` `runs` times on the full training split of `dataset` (or of `data`, when given)
    and test each network once on the test split (and on the validation split). See the module
    docstring for the fields."""
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    dev = resolve_device(device)
    if data is None:
        data = load_dataset(dataset, data_root, progress=progress)
    spec = data.spec
    model_args = dict(model_args or {})
    x, y = data.train.images.to(dev), data.train.labels.to(dev)
    augment = make_augment(aug, spec.name, dsa_strategy)

    probe = make_net(model, spec.channels, spec.num_classes, spec.im_size, **model_args).to(dev)
    flops = flops_of_training(probe, x, y, batch_size, epochs, len(data.test))

    test_accs, val_accs, secs = [], [], []
    for r in range(runs):
        g = make_generator(seed, "baseline", model, r)
        net = make_net(model, spec.channels, spec.num_classes, spec.im_size, generator=g, **model_args).to(dev)
        res = train_model(net, x, y, epochs=epochs, lr=lr, generator=g, batch_size=batch_size, aug=augment,
                          progress=progress, desc=f"full data {model} run {r + 1}/{runs}")
        secs.append(res.seconds)
        test_accs.append(accuracy(net, data.test.images.to(dev), data.test.labels.to(dev)))
        if len(data.val):
            val_accs.append(accuracy(net, data.val.images.to(dev), data.val.labels.to(dev)))
        if progress:
            print(f"run {r + 1}/{runs}: test {test_accs[-1]:.2f} %, {res.seconds:.1f} s", file=sys.stderr)
    return BaselineResult(
        dataset=spec.name, model=model, epochs=epochs, runs=runs, lr=float(lr),
        batch_size=batch_size, aug=aug, seed=seed, device=str(dev), train_images=int(x.shape[0]),
        val_images=len(data.val), test_images=len(data.test),
        test_accuracies=test_accs, test_mean=float(np.mean(test_accs)), test_std=float(np.std(test_accs)),
        val_accuracies=val_accs, val_mean=float(np.mean(val_accs)) if val_accs else None,
        val_std=float(np.std(val_accs)) if val_accs else None,
        train_seconds=float(sum(secs)), train_seconds_per_run=secs, flops=flops, model_args=model_args,
    )
