"""Explicit random generators derived from the run seed. Nothing here touches the global RNG."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends only on `seed` and `keys` (stable across runs and platforms)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(k) for k in keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded from `seed` and `keys`."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *keys))
    return g


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev
