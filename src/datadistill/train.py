"""The one training loop: train a network on a set of images, and measure accuracy.

Everything that trains a classifier (evaluation, validation during distillation, baselines,
coreset embeddings, experts' epochs, architecture search, continual learning) calls `train_model`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .errors import DistillError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainResult:
    seconds: float
    epochs: int
    steps: int
    final_loss: float


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard labels (N,) or soft label distributions (N, K)."""
    if labels.ndim == 2:
        return F.cross_entropy(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def train_model(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_at: tuple[float, ...] = (0.5,),
    aug: Augment | None = None,
    progress: bool = False,
    desc: str = "train",
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """SGD with momentum; lr x0.1 at each fraction of `decay_at` of the epochs (the papers' protocol:
    half the epochs). Images and labels must already be on the network's device. Shuffling and
    augmentation draw only from `generator`."""
    n = images.shape[0]
    if n == 0:
        raise DistillError("cannot train on an empty set of images")
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    milestones = {max(1, int(round(epochs * f))) for f in decay_at if 0 < f < 1}
    net.train()
    t0 = time.perf_counter()
    steps, loss_val = 0, math.nan
    for ep in tqdm(range(epochs), desc=desc, disable=not progress, leave=False, unit="ep"):
        if ep in milestones:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        perm = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            x, y = images[idx], labels[idx]
            if aug is not None:
                x = aug(x, generator)
            loss = classification_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        loss_val = float(loss.detach())
        if not math.isfinite(loss_val):
            raise DistillError(
                f"training loss became {loss_val} at epoch {ep + 1}; lower the learning rate (now {lr})"
            )
        if on_epoch_end is not None:
            on_epoch_end(ep, net)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    return TrainResult(time.perf_counter() - t0, epochs, steps, loss_val)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent, network in eval mode."""
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        out = net(images[start : start + batch_size])
        correct += int((out.argmax(1) == labels[start : start + batch_size]).sum())
    net.train(was_training)
    return 100.0 * correct / max(1, images.shape[0])
