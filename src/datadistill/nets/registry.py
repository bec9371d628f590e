"""A timm-style registry of network builders and `make_net`, the one way to build a network.

Adding an architecture is one decorated function::

    @register("mynet")
    def mynet(channels: int, num_classes: int, im_size: tuple[int, int], *, width: int = 64) -> Net:
        return MyNet(channels, num_classes, im_size, width=width)

The keyword-only parameters of a builder are its *variants*; `make_net` rejects any other
keyword with a `ConfigError` (a `ValueError`) that lists the valid ones.
"""
from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

Builder = Callable[..., nn.Module]

_REGISTRY: dict[str, Builder] = {}
Resolver = Callable[[tuple[int, int], dict[str, Any]], dict[str, Any]]
_SIZED: dict[str, Resolver] = {}


def register(name: str, *, sized: Resolver | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register `fn(channels, num_classes, im_size, **variant)` under `name`.

    `sized(im_size, variants)`: for a builder that derives a variant from the image size when it
    is left at its default (a ConvNet's depth None), the variants with that value filled in, as
    the builder fills it (see `sized_variants`)."""
    key = name.lower()

    def deco(fn: Builder) -> Builder:
        if key in _REGISTRY:
            raise ValueError(f"a network named {key!r} is already registered")
        _REGISTRY[key] = fn
        if sized is not None:
            _SIZED[key] = sized
        return fn

    return deco


def list_nets() -> list[str]:
    """Names of all registered networks, sorted."""
    return sorted(_REGISTRY)


def variants_of(name: str) -> dict[str, Any]:
    """The variant keywords a network accepts, with their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def sized_variants(name: str, im_size, model_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every variant of the network `name` as it is built at `im_size`: its defaults, overridden
    by `model_args`, with each value the builder derives from the image size filled in (a
    ConvNet's depth None is its depth at that size). Two settings that build the same network give
    the same dict, whichever of them spells a variant out: what identities of artifacts (experts,
    teachers) record and compare, so a folder made when a default was spelled differently, or
    before a variant existed, still matches the network it holds."""
    variants = {**variants_of(name), **(model_args or {})}
    sized = _SIZED.get(name.lower())
    return sized(normalize_im_size(im_size), variants) if sized is not None else variants


def make_net(
    name: str,
    channels: int,
    num_classes: int,
    im_size: int | tuple[int, int] | list[int],
    *,
    generator: torch.Generator | None = None,
    **variant: Any,
) -> nn.Module:
    """Build the registered network `name` on the CPU (move it with `.to(device)`).

    Args:
        name: a name from `list_nets()` (case-insensitive).
        channels: input channels (1 or 3 for the usual datasets).
        num_classes: number of output logits.
        im_size: input height and width, as `(H, W)` or one int for square images.
            28x28 inputs behave as 32x32 (the first convolution pads 2 more pixels).
        generator: when given, the initial weights are a pure function of its state (one
            draw from it seeds a private RNG); the global RNG is neither used nor changed.
            When None, the global RNG is used as PyTorch normally does.
        **variant: architecture options, e.g. `width=64, depth=4, norm="batch"` for convnet.

    Raises:
        ConfigError (a ValueError): unknown name, unknown variant keyword, invalid value.
    """
    fn = _lookup(name)
    allowed = variants_of(name)
    unknown = sorted(set(variant) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for network {name!r}; valid options: {valid}"
        )
    channels = positive_int("channels", channels)
    num_classes = positive_int("num_classes", num_classes)
    size = normalize_im_size(im_size)

    if generator is None:
        with torch.device("cpu"):
            return fn(channels, num_classes, size, **variant)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    # Only the CPU default generator is reseeded, inside a fork that restores it afterwards;
    # building under torch.device("cpu") keeps every initializer on that generator.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(seed)
        return fn(channels, num_classes, size, **variant)


def normalize_im_size(im_size: int | Iterable[int]) -> tuple[int, int]:
    """`32` or `(32, 32)` or `[32, 32]` -> `(32, 32)`; rejects anything else."""
    if isinstance(im_size, bool) or isinstance(im_size, (str, bytes)):
        raise ConfigError(f"im_size must be an int or (height, width), got {im_size!r}")
    if isinstance(im_size, int):
        size = (im_size, im_size)
    else:
        try:
            size = tuple(operator.index(v) for v in im_size)
        except TypeError:
            raise ConfigError(f"im_size must be an int or (height, width), got {im_size!r}") from None
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"im_size must be (height, width) with positive values, got {im_size!r}")
    return size  # type: ignore[return-value]


def check_choice(option: str, value: Any, choices: Iterable[str], aliases: dict[str, str] | None = None) -> str:
    """Return the canonical form of `value` or raise a ConfigError listing `choices`."""
    choices = tuple(choices)
    key = str(value).lower()
    if aliases and key in aliases:
        key = aliases[key]
    if key not in choices:
        raise ConfigError(f"invalid {option} {value!r}; valid choices: {', '.join(choices)}")
    return key


def positive_int(option: str, value: Any) -> int:
    """`value` as an int >= 1 (numpy ints accepted), or a ConfigError."""
    try:
        out = operator.index(value)
    except TypeError:
        out = 0
    if isinstance(value, bool) or out < 1:
        raise ConfigError(f"{option} must be a positive int, got {value!r}")
    return out


def _lookup(name: str) -> Builder:
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown network {name!r}; valid choices: {', '.join(list_nets())}")
    return _REGISTRY[key]
