"""SRe2L (Yin, Xing & Shen, "Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale
From A New Perspective", NeurIPS 2023, arXiv:2306.13092): images recovered from a trained teacher.

Squeeze is the teacher artifact (`datadistill teacher`). Recover: starting from noise, the images
of each recovery batch (one image of each of up to `batch_classes` classes) are optimized with
Adam so that the frozen teacher (eval mode) classifies them as their class and the per-channel
mean and variance of the inputs of its every batch-norm layer, over the batch, match that layer's
running statistics:

    loss = CE(teacher(A(x)), y) + r_bn * sum_l a_l (||mu_l(A(x)) - mu_l^run||_2 + ||var_l(A(x)) - var_l^run||_2)

with a_1 = `first_bn_multiplier` for the first batch-norm layer and a_l = 1 for the others, var
the biased variance, and A a fresh random-resized crop and horizontal flip of the batch at every
step (one crop and one flip per batch, as torchvision's transforms applied to a batch tensor; plus
an optional random roll by up to `jitter` pixels). The learning rate follows a cosine from `lr` to
0 over the iterations; after each step the pixels are clipped to the valid range [0, 1]. Relabel
is the shared step (`relabel.py`).

One outer iteration of the run is one Adam step of every recovery batch: the batches are
independent (their statistics are over themselves), so stepping them together is the same as
recovering them one after another, and the loop's checkpoints make the recovery resumable. Each
batch is forwarded and backpropagated on its own (memory of one batch); under torchrun the
batches are split over the processes and the image gradients summed. Batch b's crop, flip and
roll at iteration it come from a generator of (seed, it, b) alone.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ... import dist
from ...errors import ConfigError
from ...rng import make_generator
from ...synset import SyntheticSet
from ..base import ImageDistiller, check_finite
from ..registry import register_method
from .crops import crop_resize, random_resized_box


@contextmanager
def batch_norm_statistics(net: nn.Module):
    """Within the block, `stats` (the yielded list) receives per batch-norm layer of `net`, in
    forward order, (mean, biased variance, running mean, running variance) of the layer's input
    over the batch and spatial positions, for every forward pass."""
    stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def hook(module, inputs, output):
        x = inputs[0]
        dims = [0] + list(range(2, x.ndim))
        stats.append((x.mean(dims), x.var(dims, unbiased=False), module.running_mean, module.running_var))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def bn_matching_loss(stats, first_multiplier: float = 10.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(sum_l a_l (||mu_l - mu_l^run||_2 + ||var_l - var_l^run||_2), the per-layer terms before the
    weights a_l), a_1 = `first_multiplier`, the others 1 (SRe2L's R_BN)."""
    if not stats:
        raise ConfigError("the teacher has no batch-norm layers, whose statistics SRe2L matches; train one with "
                          "--model convnet_bn or resnet18_bn")
    terms = [torch.linalg.vector_norm(m - rm) + torch.linalg.vector_norm(v - rv) for m, v, rm, rv in stats]
    weights = [first_multiplier] + [1.0] * (len(terms) - 1)
    return sum(w * t for w, t in zip(weights, terms)), terms


def recover_loss(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, r_bn: float,
                 first_multiplier: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CE + r_bn * R_BN, CE, R_BN) of the images x (already augmented) labelled y."""
    with batch_norm_statistics(teacher) as stats:
        logits = teacher(x)
    bn, _ = bn_matching_loss(stats, first_multiplier)
    ce = F.cross_entropy(logits, y)
    return ce + r_bn * bn, ce, bn


@dataclass
class SRe2LOptions:
    r_bn: float = 0.01  # weight of the batch-norm statistics term (the authors' ImageNet and CIFAR scripts)
    first_bn_multiplier: float = 10.0  # extra weight of the first batch-norm layer
    lr: float = 0.25  # Adam's learning rate (cosine to 0 over the iterations)
    beta1: float = 0.5
    beta2: float = 0.9
    batch_classes: int = 100  # classes per recovery batch (one image of each): the batch of the statistics
    crop: bool = True  # random-resized crop of each batch at every step
    crop_scale_min: float = 0.08  # smallest crop area fraction (torchvision's default; scale (min, 1))
    flip: bool = True  # random horizontal flip of each batch at every step
    jitter: int = 0  # random roll by up to this many pixels (the authors' code: 32 at 224 px, 4 at 32 px)


@register_method("sre2l")
class SRe2L(ImageDistiller):
    """Recover images from the teacher's batch-norm statistics (see the module doc)."""

    Options = SRe2LOptions
    requires = ("teacher",)

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        if o.batch_classes < 1:
            raise ConfigError(f"sre2l batch_classes must be >= 1, got {o.batch_classes}")
        if not (o.lr > 0 and 0 <= o.beta1 < 1 and 0 <= o.beta2 < 1 and o.r_bn >= 0 and o.jitter >= 0
                and 0 < o.crop_scale_min <= 1 and math.isfinite(o.first_bn_multiplier) and o.first_bn_multiplier >= 0):
            raise ConfigError("sre2l needs lr > 0, beta1 and beta2 in [0, 1), r_bn >= 0, first_bn_multiplier >= 0, "
                              "jitter >= 0 and crop_scale_min in (0, 1]")
        if cfg.zca:
            raise ConfigError("sre2l recovers normalized images for its teacher; drop --zca")
        self.teacher = self.artifacts["teacher"].network(device)
        with batch_norm_statistics(self.teacher) as stats:
            self.teacher(torch.zeros((2, self.spec.channels, *self.spec.im_size), device=device))
        bn_matching_loss(stats)  # refuses a teacher without batch norm before any work
        mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.lo, self.hi = (0 - mean) / std, (1 - mean) / std  # the valid pixels in normalized space

    def init(self, syn: SyntheticSet) -> None:
        super().init(syn)
        o = self.opts
        self.opt_img = torch.optim.Adam([self.images], lr=o.lr, betas=(o.beta1, o.beta2), eps=1e-8)
        with torch.no_grad():
            self.images.copy_(torch.maximum(torch.minimum(self.images, self.hi), self.lo))
        self.batches = recovery_batches(self.class_index, o.batch_classes)

    def lr_at(self, it: int) -> float:
        """The cosine schedule of the authors' code: lr (1 + cos(pi it / iterations)) / 2."""
        return 0.5 * (1 + math.cos(math.pi * it / max(1, self.cfg.iterations))) * self.opts.lr

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        o = self.opts
        h, w = x.shape[-2:]
        if o.crop:
            x = crop_resize(x, random_resized_box(h, w, g, (o.crop_scale_min, 1.0)), (h, w))
        if o.flip and bool(torch.rand(1, generator=g) < 0.5):
            x = x.flip(-1)
        if o.jitter:
            dy, dx = (int(v) for v in torch.randint(0, o.jitter + 1, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        return x

    def batch_loss(self, it: int, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, CE, R_BN) of recovery batch b at iteration it, its augmentation drawn from (seed, it, b)."""
        idx = self.batches[b]
        x = self.augment(self.images[idx], make_generator(self.cfg.seed, "sre2l", it, b))
        return recover_loss(self.teacher, x, self.labels[idx], self.opts.r_bn, self.opts.first_bn_multiplier)

    def loss(self, it: int) -> torch.Tensor:
        """The sum of this process's batch losses at iteration it, as one graph (`step` backpropagates
        them one batch at a time instead, to hold one batch's activations)."""
        parts = [self.batch_loss(it, b)[0] for b in dist.shard(range(len(self.batches)))]
        return torch.stack(parts).sum() if parts else self.no_loss()

    def step(self, it: int) -> dict[str, float]:
        o = self.opts
        for group in self.opt_img.param_groups:
            group["lr"] = self.lr_at(it)
        self.opt_img.zero_grad(set_to_none=True)
        total = self.images.new_zeros(())
        ce_sum = self.images.new_zeros(())
        bn_sum = self.images.new_zeros(())
        for b in dist.shard(range(len(self.batches))):
            loss, ce, bn = self.batch_loss(it, b)
            loss.backward(inputs=[self.images])
            total, ce_sum, bn_sum = total + loss.detach(), ce_sum + ce.detach(), bn_sum + bn.detach()
        values = self.backward_and_reduce(total, ce_sum, bn_sum)  # already backpropagated: sums the gradients
        check_finite(values[0], it, f"lower lr (now {o.lr})")
        self.opt_img.step()
        with torch.no_grad():
            self.images.copy_(torch.maximum(torch.minimum(self.images, self.hi), self.lo))
        n = len(self.batches)
        return {"loss": values[0] / n, "ce": values[1] / n, "bn": values[2] / n, "lr": self.lr_at(it)}


def recovery_batches(class_index: list[torch.Tensor], batch_classes: int) -> list[torch.Tensor]:
    """The recovery batches: for image slot j of every class (the j-th image of each class) and each
    group of `batch_classes` consecutive classes, the indices of those images. Classes with fewer
    images simply have no image in the later slots."""
    classes = len(class_index)
    slots = max((len(ix) for ix in class_index), default=0)
    out = []
    for j in range(slots):
        for start in range(0, classes, batch_classes):
            idx = [int(class_index[c][j]) for c in range(start, min(classes, start + batch_classes))
                   if j < len(class_index[c])]
            if idx:
                out.append(torch.tensor(idx, dtype=torch.long, device=class_index[0].device))
    return out
