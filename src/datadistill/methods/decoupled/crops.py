"""The geometry the decoupled methods share: random resized crops, centred padding, and the
`factor x factor` grid of regions a stitched image is made of.

Boxes are ``(top, left, height, width)`` in pixels. Every draw comes from a `torch.Generator`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]


def random_resized_box(h: int, w: int, g: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Box:
    """A crop of an h x w image covering a fraction of its area drawn uniformly from `scale`, with an
    aspect ratio (width / height) drawn log-uniformly from `ratio`: the random-resized-crop rule of
    Szegedy et al. (2015) as torchvision implements it (ten tries, then the central crop whose ratio
    is clamped to `ratio`)."""
    area = h * w
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        r = math.exp(lo + (hi - lo) * u[1])
        cw = int(round(math.sqrt(target * r)))
        ch = int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            top = min(int(u[2] * (h - ch + 1)), h - ch)
            left = min(int(u[3] * (w - cw + 1)), w - cw)
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def crop_resize(x: torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """The `box` of images x (N, C, H, W), resized bilinearly to `size` (differentiable in x; the
    identity when the box is the whole image and `size` its size)."""
    top, left, ch, cw = box
    part = x[..., top:top + ch, left:left + cw]
    if tuple(part.shape[-2:]) == tuple(size):
        return part
    return F.interpolate(part, size=size, mode="bilinear", align_corners=False)


def pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Images x (N, C, h', w') in the middle of an h x w canvas of zeros (the dataset's mean colour
    in normalized space); the extra row or column of an odd margin goes to the bottom / right."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to {(h, w)}")
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def region_boxes(h: int, w: int, factor: int) -> list[Box]:
    """The `factor x factor` regions of an h x w image, row by row (region k = row k // factor,
    column k % factor). Sizes h // factor and w // factor, the first h % factor rows (w % factor
    columns) one pixel larger, so that the regions tile the image exactly."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")

    def sizes(n: int) -> list[int]:
        s, extra = divmod(n, factor)
        return [s + 1 if i < extra else s for i in range(factor)]

    boxes: list[Box] = []
    top = 0
    for rh in sizes(h):
        left = 0
        for rw in sizes(w):
            boxes.append((top, left, rh, rw))
            left += rw
        top += rh
    return boxes


def stitch(patches: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """Images (n, C, h, w) made of patches (factor^2, n, C, ph, pw): patch k of image t goes to
    region k (`region_boxes`), resized to the region's size when it differs from (ph, pw)."""
    boxes = region_boxes(h, w, factor)
    if patches.shape[0] != len(boxes):
        raise ValueError(f"{len(boxes)} regions but {patches.shape[0]} patches per image")
    n, c = patches.shape[1], patches.shape[2]
    out = patches.new_zeros((n, c, h, w))
    for k, (top, left, rh, rw) in enumerate(boxes):
        p = patches[k]
        if tuple(p.shape[-2:]) != (rh, rw):
            p = F.interpolate(p, size=(rh, rw), mode="bilinear", align_corners=False)
        out[..., top:top + rh, left:left + rw] = p
    return out


def regions_padded(images: torch.Tensor, boxes: list[Box]) -> list[torch.Tensor]:
    """Per box, the region of every image, centred on a canvas of the image's size (what the
    teacher sees of one region: how RDED scores a patch, and how its region labels are made)."""
    h, w = images.shape[-2:]
    return [pad_to(images[..., t:t + rh, l:l + rw], h, w) for (t, l, rh, rw) in boxes]
