"""Reduced-precision switch: bf16 autocast for the forward passes of evaluation training and of the
losses that are plain forward passes (DM, DataDAM).

`precision="fp32"` (the default everywhere) changes nothing. `precision="bf16"` runs the forward
pass under ``torch.autocast(device_type, dtype=torch.bfloat16)``: convolutions and matrix products
take bf16 inputs (fp32 accumulation), losses and reductions stay fp32, parameters, synthetic images,
gradients and optimizer state stay fp32, and the backward pass runs outside the autocast region
(as PyTorch's AMP guide asks). No loss scaling is needed: bf16 has fp32's exponent range.

Gradient and trajectory matching (DC, DSA, MTT, PAD) differentiate through gradients of the
network inside their loss (second-order terms); they refuse bf16 rather than run a backward pass
under autocast. Whether bf16 is faster is measured by `benchmarks/speed.py` (its `bf16` fields),
what it costs in accuracy by `benchmarks/precision.py` (docs/speed.md): on the 2-core CPU with
native bf16, nothing measurable for DM and DataDAM on MNIST, at 1.8x the distillation speed. The
default stays fp32: bf16 is fast only on hardware with native bf16 (elsewhere it is emulated).
"""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device | None = None) -> None:
    """ConfigError for an unknown precision, or for bf16 on a CUDA device without bf16 support."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device is not None and device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp32")


def upcast(t: torch.Tensor) -> torch.Tensor:
    """`t` in fp32 if it is in a reduced precision (bf16/fp16, e.g. made under autocast), else as is
    (fp32 and fp64 stay what they are)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def autocast(device: torch.device, precision: str):
    """The context for a forward pass at `precision` on `device` (a no-op for fp32). Called once
    per minibatch: callers run `check_precision` once beforehand (it asks the CUDA driver)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        check_precision(precision)  # raises: unknown (without the device query)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
