"""ZCA whitening fitted on a training split, as the MTT code does it (Cazenavette et al., 2022).

The MTT code (``utils.get_dataset`` of github.com/GeorgeCazenavette/mtt-distillation) fits
``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` on the training images as [0, 1]
pixels (its CIFAR transform is ``ToTensor()`` alone when ``--zca`` is given, no ``Normalize``),
with the unbiased covariance (N - 1) and ``eps`` added to every eigenvalue::

    C = U diag(S) U^T              covariance of the flattened pixels
    T = U diag((S + eps)^-1/2) U^T whitening, z = (x_pix - mu_pix) T
    T^-1 = U diag((S + eps)^1/2) U^T

datadistill keeps images in normalized space, (x_pix - m_c) / s_c per channel. `fit_zca` fits
on the pixels exactly as above and folds the per-channel normalization into the matrices, so that
for normalized images ``x``::

    whiten(x)   = (x - mean) @ transform.T     == the MTT whitening of the pixels
    unwhiten(z) = z @ inverse.T + mean         == x

which is the convention `SyntheticSet.pixels()` and `evaluate.apply_zca` use. Returned tensors
(float32, CPU): ``mean`` (D,), ``transform`` (D, D), ``inverse`` (D, D), D = C * H * W.
"""
from __future__ import annotations

import torch

from .base import ImageData

DEFAULT_EPS = 0.1  # kornia ZCAWhitening(eps=0.1) in the MTT code


def fit_zca(data: ImageData, eps: float = DEFAULT_EPS, chunk: int = 2048) -> dict[str, torch.Tensor]:
    """Fit ZCA whitening on `data` (a training split, in normalized space); see the module docstring.

    The covariance is accumulated in float64 `chunk` images at a time (a full CIFAR-10 train split
    never needs more than one chunk in float64 at once); the eigendecomposition is float64."""
    if len(data) < 2:
        raise ValueError(f"ZCA needs at least 2 images to estimate a covariance, got {len(data)}")
    if not eps > 0:
        raise ValueError(f"ZCA eps must be > 0, got {eps}")
    spec = data.spec
    n = len(data)
    d = spec.channels * spec.im_size[0] * spec.im_size[1]
    # per-feature std / mean of the normalization (each channel's value repeated over its pixels)
    std = torch.tensor(spec.std, dtype=torch.float64).repeat_interleave(d // spec.channels)
    norm_mean = torch.tensor(spec.mean, dtype=torch.float64).repeat_interleave(d // spec.channels)

    def pixels(part: torch.Tensor) -> torch.Tensor:
        return part.detach().to("cpu", torch.float64).reshape(part.shape[0], -1) * std + norm_mean

    total = torch.zeros(d, dtype=torch.float64)
    for part in data.images.split(chunk):
        total += pixels(part).sum(0)
    mu_pix = total / n
    cov = torch.zeros(d, d, dtype=torch.float64)
    for part in data.images.split(chunk):
        xc = pixels(part) - mu_pix
        cov.addmm_(xc.T, xc)
    cov /= n - 1
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(0.0)  # round-off can make tiny eigenvalues negative
    t_pix = (evecs * (evals + eps).rsqrt()) @ evecs.T
    t_inv_pix = (evecs * (evals + eps).sqrt()) @ evecs.T
    # Fold the normalization in: x_pix - mu_pix = (x - mu_x) * std, so
    # z = (x - mu_x) diag(std) T  ->  transform = (diag(std) T)^T = T diag(std)   (T symmetric)
    # x - mu_x = z T^-1 diag(1/std) ->  inverse = (T^-1 diag(1/std))^T = diag(1/std) T^-1
    transform = t_pix * std[None, :]
    inverse = t_inv_pix / std[:, None]
    mean = (mu_pix - norm_mean) / std
    return {"mean": mean.float(), "transform": transform.float(), "inverse": inverse.float()}


def whiten(data: ImageData, zca: dict[str, torch.Tensor], chunk: int = 4096) -> ImageData:
    """`data` whitened with `zca`: ``(x - mean) @ transform.T`` per flattened image (out of core:
    a view that whitens each batch as it is read)."""
    if data.out_of_core:
        return ImageData(data.images.with_zca(zca), data.labels, data.spec, data.extra)
    t = zca["transform"].to(data.images.device, data.images.dtype)
    m = zca["mean"].to(data.images.device, data.images.dtype)
    out = torch.empty_like(data.images)
    flat_out = out.view(len(data), -1)
    for start in range(0, len(data), chunk):
        x = data.images[start : start + chunk].reshape(-1, t.shape[0])
        flat_out[start : start + chunk] = (x - m) @ t.T
    return ImageData(out, data.labels, data.spec, data.extra)


def unwhiten_images(images: torch.Tensor, zca: dict[str, torch.Tensor]) -> torch.Tensor:
    """Whitened images (N, C, H, W) back to normalized space: ``z @ inverse.T + mean``."""
    inv = zca["inverse"].to(images.device, images.dtype)
    m = zca["mean"].to(images.device, images.dtype)
    return (images.reshape(images.shape[0], -1) @ inv.T + m).reshape(images.shape)
