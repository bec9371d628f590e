"""Attention matching (DataDAM; Sajedi et al., "DataDAM: Efficient Dataset Distillation with Attention
Matching", ICCV 2023, arXiv:2310.00093).

Each iteration a freshly initialized, frozen network embeds a real batch and the synthetic images
of every class, with the same DSA transform on both sides of a class (the batches of DM). The loss
has two parts, summed over classes:

- spatial attention matching (SAM): at the output of every convolutional block but the last, the
  attention map of an image is sum_c |f_c|^p over the channels, flattened and L2-normalized; per
  layer, the squared distance between the class mean of the real maps and that of the synthetic ones;
- the DM term ("MMD" in the paper): the squared distance between the class means of the final
  embeddings, weighted by `lam`.

Both terms are sums over classes of terms that need only that class's images, so under torchrun
each process computes its share of the classes and the gradients are summed (as DM; with batch
norm, which mixes the classes of a batch, process 0 computes all of it).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig
from ..data import DatasetSplits
from ..errors import ConfigError
from ..nets import list_nets, make_net
from ..numerics import upcast
from .base import ImageDistiller, chunked_no_grad, uses_batch_norm
from .distribution import DistributionMatching, mean_embedding_loss
from .registry import register_method

LAYER_CHOICES = ("all_but_last", "all")


def attention_map(f: torch.Tensor, p: float = 4) -> torch.Tensor:
    """Spatial attention of feature maps `f` (N, C, H, W): sum_c |f_c|^p, flattened to (N, H*W) and
    divided by its L2 norm per image (an all-zero map stays zero). Computed in fp32 when `f` is
    in a reduced precision (bf16 under autocast).

    The element-wise work is a sizeable part of an iteration next to the convolutions (the real
    side holds batch_real maps per class), so the common powers take cheaper routes with the same
    values: p = 2 and 4 are squarings (no abs, no general `pow`), and where no gradient is needed
    the second pass works in place on the temporary instead of allocating another."""
    f = upcast(f)
    inplace = not (torch.is_grad_enabled() and f.requires_grad)
    if p == 4:
        a = f.square()
        a = a.square_() if inplace else a.square()
    elif p == 2:
        a = f.square()
    elif p == 1:
        a = f.abs()
    else:
        a = f.abs()
        a = a.pow_(p) if inplace else a.pow(p)
    return F.normalize(a.sum(dim=1).flatten(1), p=2.0, dim=1)


def sam_loss(
    real_maps: Sequence[torch.Tensor], real_labels: torch.Tensor,
    syn_maps: Sequence[torch.Tensor], syn_labels: torch.Tensor, num_classes: int,
) -> torch.Tensor:
    """Spatial attention matching: sum over layers and over the classes present in `syn_labels` of
    || mean(real maps of c) - mean(synthetic maps of c) ||^2. `real_maps[l]` (N_real, D_l) and
    `syn_maps[l]` (N_syn, D_l) are the (normalized) attention maps of layer l."""
    if len(real_maps) != len(syn_maps):
        raise ValueError(f"{len(real_maps)} real layers but {len(syn_maps)} synthetic ones")
    terms = [mean_embedding_loss(ar, real_labels, as_, syn_labels, num_classes) for ar, as_ in zip(real_maps, syn_maps)]
    return torch.stack(terms).sum() if terms else torch.zeros((), device=syn_labels.device)


def spatial_nets() -> list[str]:
    """Registered networks that have convolutional feature maps (all but the MLP-like ones)."""
    return [n for n in list_nets() if make_net(n, 3, 10, (32, 32)).has_spatial_features]


@dataclass
class DataDAMOptions:
    power: float = 4  # p in sum_c |f_c|^p (paper: 4; the authors' code: 1)
    lam: float | None = None  # weight of the embedding (MMD) term; None: 0.01 up to 32x32 images, 0.02 above
    layers: str | list[int] = "all_but_last"  # "all_but_last", "all", or block indices (0-based)
    real_chunk: int = 64  # real images per no-grad forward (speed only; the result is the same)


def default_lam(im_size: Sequence[int]) -> float:
    """The paper's lambda: 0.01 for low-resolution images (up to 32x32), 0.02 for larger ones."""
    return 0.01 if max(im_size) <= 32 else 0.02


@register_method("datadam")
class AttentionMatching(ImageDistiller):
    Options = DataDAMOptions
    supports_bf16 = True  # the loss is forward passes of a frozen network, as DM's

    def __init__(self, cfg: DistillConfig, data: DatasetSplits, device: torch.device, artifacts: dict | None = None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        if isinstance(o.power, bool) or not isinstance(o.power, (int, float)) or not o.power > 0:
            raise ConfigError(f"datadam option power must be a number > 0, got {o.power!r}")
        if o.lam is not None and (isinstance(o.lam, bool) or not isinstance(o.lam, (int, float)) or o.lam < 0):
            raise ConfigError(f"datadam option lam must be a number >= 0 (or null for the paper's default), got {o.lam!r}")
        if isinstance(o.real_chunk, bool) or not isinstance(o.real_chunk, int) or o.real_chunk < 1:
            raise ConfigError(f"datadam option real_chunk must be a positive int, got {o.real_chunk!r}")
        self.lam = float(o.lam) if o.lam is not None else default_lam(self.spec.im_size)
        self.layer_index = self._resolve_layers(self._count_blocks())

    def _count_blocks(self) -> int:
        """Build the configured network once with a private generator (the run's generator and the
        global RNG are untouched) to refuse networks without feature maps and count the blocks."""
        probe = make_net(self.cfg.model, self.spec.channels, self.spec.num_classes, self.spec.im_size,
                         generator=torch.Generator().manual_seed(0), **self.cfg.model_args)
        if not getattr(probe, "has_spatial_features", False):
            raise ConfigError(
                f"datadam matches spatial attention maps of convolutional blocks, and network "
                f"{self.cfg.model!r} has none; use one of: {', '.join(spatial_nets())}"
            )
        probe.eval()
        with torch.no_grad():
            return len(probe.feature_maps(torch.zeros(1, self.spec.channels, *self.spec.im_size)))

    def _resolve_layers(self, n: int) -> list[int]:
        layers = self.opts.layers
        if layers == "all_but_last":
            idx = list(range(n - 1))
            if not idx:
                raise ConfigError(
                    f"network {self.cfg.model!r} has a single convolutional block, so layers='all_but_last' "
                    f"matches no attention map; use --opt layers=all or a deeper network"
                )
            return idx
        if layers == "all":
            return list(range(n))
        if isinstance(layers, (list, tuple)) and layers and all(
            isinstance(i, int) and not isinstance(i, bool) for i in layers
        ):
            bad = [i for i in layers if not -n <= i < n]
            if bad:
                raise ConfigError(f"datadam layers {bad} out of range: network {self.cfg.model!r} has {n} blocks (0..{n - 1})")
            return sorted({i % n for i in layers})
        raise ConfigError(
            f"datadam option layers must be {' or '.join(map(repr, LAYER_CHOICES))} or a non-empty list "
            f"of block indices, got {layers!r}"
        )

    # The same per-class real and synthetic batches as DM (one shared DSA draw per class).
    augmented_batches = DistributionMatching.augmented_batches

    def _features(self, net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """[attention map of each matched layer..., embedding]."""
        maps, emb = net.maps_and_embed(x)
        return [attention_map(maps[i], self.opts.power) for i in self.layer_index] + [emb]

    def loss(self, it: int) -> torch.Tensor:
        """The sum over this process's classes (`loss_classes`; all of them in one process). Both
        terms are sums over classes of per-class distances of means of per-image features, so they
        split over processes exactly, except with batch norm (process 0 computes all, as in DM)."""
        net = self.fresh_net(frozen=True)
        bn = uses_batch_norm(net)
        classes = self.loss_classes(separable=not bn)
        xr, yr, xs, ys = self.augmented_batches(classes)
        if not classes:
            self._terms = (self.no_loss(), self.no_loss())
            return self.no_loss()
        # As DM: one forward per side for all classes; the real side without autograd, in chunks
        # (exact for per-sample norms) or, with batch norm, as one batch.
        if bn:
            with torch.no_grad():
                real = self._features(net, xr)
        else:
            real = chunked_no_grad(lambda x: self._features(net, x), xr, self.opts.real_chunk)
        syn = self._features(net, xs)
        k = self.spec.num_classes
        sam = sam_loss(real[:-1], yr, syn[:-1], ys, k)
        mmd = mean_embedding_loss(real[-1], yr, syn[-1], ys, k)
        self._terms = (sam.detach(), mmd.detach())
        return sam + self.lam * mmd

    def loss_terms(self) -> dict[str, torch.Tensor]:
        sam, mmd = self._terms
        return {"sam": sam, "mmd": mmd}
