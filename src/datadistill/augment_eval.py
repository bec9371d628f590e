"""The DC paper's evaluation augmentation (non-differentiable; used only to train evaluation networks).

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, evaluate sets
learned with DC (without DSA) on MNIST by training with this augmentation; the authors' code
(github.com/VICO-UoE/DatasetCondensation, utils.py `augment` and `get_daparam`) uses
crop 4 px, scale 0.2, rotate 45 degrees, noise 0.001, and for MNIST the strategy
``crop_scale_rotate``. Each image gets ONE transform of the strategy, chosen at random:

- crop: pad `crop` pixels on every side with the per-channel mean of the batch, then take the
  window at offset (r, c), each uniform in {0, ..., 2 * crop - 1} (as the reference: a shift in
  [-crop, crop - 1]);
- scale: resize (nearest) to int(U(1 - s, 1 + s) * H) x int(U(1 - s, 1 + s) * W), centre on a
  zero canvas and take the centre H x W window;
- rotate: rotate about the centre by an integer angle uniform in [-rotate, rotate - 1] degrees,
  filling outside with the mean of the channel means (the reference's `cval`);
- noise: add `noise` x N(0, 1) per pixel.

Differences from the reference, all small: rotation resamples bilinearly with `grid_sample`
(`rotate_mode="bilinear"`, the default), so it runs on any device in one batched call; the
reference uses scipy's cubic spline (`scipy.ndimage.rotate`, order 3, the rotated image's centre
window), which `rotate_mode="spline"` reproduces (per image on the CPU; config
`eval.dc_rotate: spline`). Scale uses the input width for the width factor (the reference uses
the height for both; equal for square images). Every random number comes from the generator passed in; the global
RNG is never touched.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from .errors import ConfigError

DC_OPS = ("crop", "scale", "rotate", "noise")
DC_ROTATE_MODES = ("bilinear", "spline")
DC_MNIST_STRATEGY = "crop_scale_rotate"  # get_daparam: dataset == 'MNIST'
# Dataset names that get the augmentation under `aug="dc"`: those containing one of these.
_DC_AUG_MARKERS = ("mnist",)


class DCAugment:
    """Callable `(x, generator) -> x`: one random transform of `strategy` per image.

    Args:
        strategy: transform names joined by "_" (any of crop, scale, rotate, noise).
        crop: pixels of padding for the crop (4).
        scale: the scale factors are uniform in [1 - scale, 1 + scale] (0.2).
        rotate: the largest rotation in degrees (45).
        noise: standard deviation of the additive Gaussian noise (0.001).
        rotate_mode: "bilinear" (default: `grid_sample`, any device, batched) or "spline" (the
            reference's scipy cubic spline, per image on the CPU).
    """

    def __init__(self, strategy: str = DC_MNIST_STRATEGY, crop: int = 4, scale: float = 0.2,
                 rotate: int = 45, noise: float = 0.001, rotate_mode: str = "bilinear") -> None:
        ops = tuple(p for p in str(strategy).lower().split("_") if p)
        bad = [p for p in ops if p not in DC_OPS]
        if bad or not ops:
            raise ConfigError(f"invalid DC augmentation strategy {strategy!r}; use names from {', '.join(DC_OPS)} joined by '_'")
        if crop < 1 or rotate < 1 or not 0 <= scale < 1 or noise < 0:
            raise ConfigError("DC augmentation needs crop >= 1, rotate >= 1, 0 <= scale < 1 and noise >= 0")
        if rotate_mode not in DC_ROTATE_MODES:
            raise ConfigError(f"invalid DC rotation {rotate_mode!r}; valid choices: {', '.join(DC_ROTATE_MODES)}")
        self.ops = ops
        self.crop, self.scale, self.rotate, self.noise = int(crop), float(scale), int(rotate), float(noise)
        self.rotate_mode = rotate_mode

    def __repr__(self) -> str:
        return (f"DCAugment(strategy={'_'.join(self.ops)!r}, crop={self.crop}, scale={self.scale}, "
                f"rotate={self.rotate}, noise={self.noise}, rotate_mode={self.rotate_mode!r})")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"DCAugment expects images (N, C, H, W), got shape {tuple(x.shape)}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"DCAugment needs a torch.Generator, got {type(generator).__name__}")
        n, ch, h, w = x.shape
        gdev = generator.device

        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, device=gdev).to(x.device)

        # Every draw happens for the whole batch, in a fixed order, whatever gets chosen.
        choice = torch.randint(len(self.ops), (n,), generator=generator, device=gdev).to(x.device)
        crop_at = torch.randint(2 * self.crop, (n, 2), generator=generator, device=gdev).to(x.device)
        factors = rand(n, 2) * (2 * self.scale) + (1 - self.scale)
        angles = torch.randint(-self.rotate, self.rotate, (n,), generator=generator, device=gdev).to(x.device)
        noise = torch.randn(x.shape, generator=generator, device=gdev).to(x.device, x.dtype)

        x = x.detach()
        mean = x.mean(dim=(0, 2, 3))  # per channel, over the batch, before any change (the reference)
        out = x.clone()
        for k, op in enumerate(self.ops):
            sel = torch.nonzero(choice == k).flatten()
            if sel.numel() == 0:
                continue
            xs = x[sel]
            if op == "crop":
                out[sel] = _crop(xs, crop_at[sel], self.crop, mean)
            elif op == "scale":
                out[sel] = _scale(xs, factors[sel])
            elif op == "rotate":
                rot = _rotate_spline if self.rotate_mode == "spline" else _rotate
                out[sel] = rot(xs, angles[sel], float(mean.mean()))
            else:
                out[sel] = xs + self.noise * noise[sel]
        return out


def _crop(x: Tensor, at: Tensor, pad: int, mean: Tensor) -> Tensor:
    """Window at offsets `at` (n, 2) of `x` padded by `pad` pixels of the channel `mean`."""
    n, ch, h, w = x.shape
    xp = mean.view(1, ch, 1, 1).expand(n, ch, h + 2 * pad, w + 2 * pad).clone()
    xp[:, :, pad:pad + h, pad:pad + w] = x
    rows = torch.arange(h, device=x.device).view(1, h) + at[:, :1]
    cols = torch.arange(w, device=x.device).view(1, w) + at[:, 1:]
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return xp[batch, :, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def _scale(x: Tensor, factors: Tensor) -> Tensor:
    """Nearest-neighbour resize to int(f * size), centred on a zero canvas, centre window kept.

    Rows and columns are independent, so each output pixel is a gather of (source row, source
    column) or zero; the index arithmetic is that of `F.interpolate(mode="nearest")`."""
    n, ch, h, w = x.shape
    new_h = (factors[:, 0] * h).long().clamp_min(1)  # int() of a positive number
    new_w = (factors[:, 1] * w).long().clamp_min(1)
    mhw = torch.maximum(torch.maximum(new_h, new_w), torch.full_like(new_h, max(h, w)))

    def axis(size: int, new: Tensor) -> tuple[Tensor, Tensor]:
        # output index -> index in the resized image (offset by the two centrings) -> source index
        pos = torch.arange(size, device=x.device).view(1, size) + ((mhw - size) // 2 - (mhw - new) // 2).view(-1, 1)
        valid = (pos >= 0) & (pos < new.view(-1, 1))
        ratio = (size / new.to(torch.float32)).view(-1, 1)
        src = torch.floor(pos.clamp_min(0).to(torch.float32) * ratio).long().clamp(max=size - 1)
        return src, valid

    src_r, ok_r = axis(h, new_h)
    src_c, ok_c = axis(w, new_w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    y = x[batch, :, src_r.view(n, h, 1), src_c.view(n, 1, w)].permute(0, 3, 1, 2)
    keep = (ok_r.view(n, 1, h, 1) & ok_c.view(n, 1, 1, w)).to(x.dtype)
    return y * keep


def _rotate(x: Tensor, degrees: Tensor, fill: float) -> Tensor:
    """Rotate each image about its centre by `degrees` (n,), bilinear, `fill` outside."""
    n, _, h, w = x.shape
    rad = degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
    theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
    grid = F.affine_grid(theta.to(x.dtype), [n, 1, h, w], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones(n, 1, h, w, dtype=x.dtype, device=x.device), grid,
                           mode="bilinear", padding_mode="zeros", align_corners=False)
    return y + fill * (1 - inside)


def _rotate_spline(x: Tensor, degrees: Tensor, fill: float) -> Tensor:
    """The reference's rotation: `scipy.ndimage.rotate` of each image (cubic spline, order 3,
    the canvas enlarged to hold the rotated image, `fill` outside), then its centre window."""
    import numpy as np
    from scipy.ndimage import rotate as nd_rotate

    _, _, h, w = x.shape
    out = []
    for img, deg in zip(x.detach().cpu().numpy(), degrees.tolist()):
        r = nd_rotate(img, angle=int(deg), axes=(-2, -1), cval=fill)
        top, left = (r.shape[-2] - h) // 2, (r.shape[-1] - w) // 2
        out.append(r[:, top:top + h, left:left + w])
    return torch.from_numpy(np.stack(out)).to(device=x.device, dtype=x.dtype)


def dc_augment_for(dataset: str, rotate_mode: str = "bilinear") -> DCAugment | None:
    """The DC evaluation augmentation for `dataset`: `DCAugment()` (crop_scale_rotate) for the
    MNIST family (any name containing "mnist": mnist, mnist-5k, fashion_mnist), None otherwise
    (the reference augments no other dataset). Note the reference tests `dataset == 'MNIST'`,
    so its Fashion-MNIST numbers were trained without it; the `paper` preset of `dc` follows that."""
    name = str(dataset).lower()
    if any(m in name for m in _DC_AUG_MARKERS):
        return DCAugment(rotate_mode=rotate_mode)
    return None
