"""Distribution matching (DM; Zhao & Bilen, "Dataset Condensation with Distribution Matching",
WACV 2023). Each iteration a freshly initialized, frozen network embeds a real batch and the
synthetic images of every class, with the same DSA transform on both sides of a class; the loss is
the sum over classes of the squared distance between the mean embeddings.

Under torchrun each process computes the terms of its share of the classes and the gradients are
summed (`ImageDistiller.backward_and_reduce`); the terms are independent for networks whose
normalization is per sample. With batch norm (train mode: statistics over the whole batch of all
classes) the loss is not separable and process 0 computes all of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..numerics import upcast
from .base import ImageDistiller, chunked_no_grad, uses_batch_norm
from .registry import register_method


def class_means(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, D) mean of the rows of `feats` (N, D) of each class in `labels` (N,)."""
    sums = torch.zeros(num_classes, feats.shape[1], dtype=feats.dtype, device=feats.device)
    sums = sums.index_add(0, labels, feats)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(feats.dtype)
    return sums / counts[:, None]


def mean_embedding_loss(
    real_feats: torch.Tensor, real_labels: torch.Tensor,
    syn_feats: torch.Tensor, syn_labels: torch.Tensor, num_classes: int,
) -> torch.Tensor:
    """sum_c || mean(real_c) - mean(syn_c) ||^2 over the classes present in `syn_labels` (features
    computed under bf16 autocast are cast up to fp32 before the means)."""
    real_feats, syn_feats = upcast(real_feats), upcast(syn_feats)
    present = torch.bincount(syn_labels, minlength=num_classes) > 0
    diff = class_means(real_feats, real_labels, num_classes) - class_means(syn_feats, syn_labels, num_classes)
    return (diff[present] ** 2).sum()


@dataclass
class DMOptions:
    real_chunk: int = 64  # real images per no-grad forward (speed only; the result is the same)


@register_method("dm")
class DistributionMatching(ImageDistiller):
    Options = DMOptions
    supports_bf16 = True  # the loss is forward passes of a frozen network

    def augmented_batches(
        self, classes: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`class_batches(classes)` concatenated over the classes (None: all): real images, their
        labels, synthetic images, their labels. Empty tensors for no classes."""
        reals, syns = self.class_batches(classes)
        classes = range(self.spec.num_classes) if classes is None else classes
        if not reals:
            empty = self.images.new_zeros((0, *self.images.shape[1:]))
            no_labels = torch.zeros(0, dtype=torch.long, device=self.device)
            return empty, no_labels, empty, no_labels

        def labels(batches):
            return torch.cat([torch.full((x.shape[0],), c, dtype=torch.long) for c, x in zip(classes, batches)]).to(self.device)

        return torch.cat(reals), labels(reals), torch.cat(syns), labels(syns)

    def loss(self, it: int) -> torch.Tensor:
        """The sum over this process's classes (`loss_classes`; all of them in one process)."""
        net = self.fresh_net(frozen=True)
        # Batch norm in train mode mixes the classes of a batch: not separable, so one process does all.
        bn = uses_batch_norm(net)
        classes = self.loss_classes(separable=not bn)
        xr, yr, xs, ys = self.augmented_batches(classes)
        if not classes:
            return self.no_loss()
        # All classes at once on each side: exact for per-sample norms (instance/layer/group), and
        # what the DM reference does for batch norm (real and synthetic batches forwarded apart, whole).
        if bn:
            with torch.no_grad():
                fr = net.embed(xr)
        else:
            fr = chunked_no_grad(net.embed, xr, self.opts.real_chunk)
        fs = net.embed(xs)
        return mean_embedding_loss(fr, yr, fs, ys, self.spec.num_classes)
