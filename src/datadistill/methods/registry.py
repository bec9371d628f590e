"""Method name -> Distiller class: the one list of methods.

Registering is an import: a module that defines a method decorates its Distiller class with
``@register_method("name")``, and `datadistill.methods` imports the built-in method modules, so
that every name is known once the package is imported. A method of your own registers the same
way from your module (import it before resolving a config); it needs no preset file (without one
it runs on its dataclass defaults)."""
from __future__ import annotations

from ..errors import ConfigError

_METHODS: dict[str, type] = {}


def register_method(name: str):
    def deco(cls):
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type:
    if name not in _METHODS:
        raise ConfigError(f"method {name!r} is not available; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def available_methods() -> list[str]:
    return sorted(_METHODS)
