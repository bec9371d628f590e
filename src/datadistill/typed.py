"""Values checked and converted against a dataclass field's type, with one clear error.

Configuration reaches the package as YAML (``config.yaml``, presets), as command-line text
(``--opt lr_lr=1e-5``) and as Python values. YAML 1.1 reads ``1e-5`` as the string "1e-5" and
``abc`` where a number belongs stays a string, so every value is converted to its field's type
once, where it enters (`coerce`, `build`), and a value that does not fit ends in a ConfigError
naming the field, the value and the type wanted.

Types understood: bool, int, float, str, ``X | None``, unions of those, ``list[X]`` /
``tuple[X, ...]``, ``dict[K, V]`` and Any. A string given for a non-string type is read as YAML
first (``"true"``, ``"[1, 2]"``, ``"{a: 1}"``); an int is accepted for a float; a float with an
integral value (``1e2``) for an int; a comma-separated string for a list.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

import yaml

from .errors import ConfigError

_BOOL_WORDS = {"true": True, "false": False}  # what the command line gives; YAML has read yes/no already


class _Mismatch(Exception):
    pass


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if tp is Any:
        return "any value"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "~") and type(None) in args:
            return None
        # the value's own type first (a str stays a str in `str | list[int]`), then conversions
        for a in args:
            if a in (bool, int, float, str) and type(value) is a:
                return value
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if isinstance(value, str):
            parsed = _yaml(value)
            value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        items = [_convert(v, args[0]) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = _yaml(value)
        if not isinstance(value, dict):
            raise _Mismatch
        args = typing.get_args(tp)
        return {(_convert(k, args[0]) if args else k): (_convert(v, args[1]) if args else v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            value = _number(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, str):
            value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # YAML read "64" as a number
            return str(value)
        raise _Mismatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def _number(text: str) -> Any:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        return float(text.strip())
    except ValueError:
        raise _Mismatch from None


def _yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(value: Any, tp: Any, name: str) -> Any:
    """`value` as type `tp`, or ConfigError "`name` must be <type>, got <value>"."""
    try:
        return _convert(value, tp)
    except (_Mismatch, RecursionError, ValueError, TypeError):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ConfigError(f"{name} must be {type_name(tp)}, got {shown}") from None


def field_types(klass: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of dataclass `klass`."""
    hints = typing.get_type_hints(klass)
    return {f.name: hints[f.name] for f in dataclasses.fields(klass)}


def build(klass: type, values: dict[str, Any], what: str, prefix: str = "") -> Any:
    """`klass(**values)` with every value converted to its field's type; ConfigError for an
    unknown key (listing the valid ones) or a value of the wrong type. `what` names the options
    in messages ("method option"), `prefix` goes before a field's name ("eval ")."""
    types_ = field_types(klass)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; valid: {sorted(types_) or 'none'}")
    return klass(**{k: coerce(v, types_[k], f"{prefix}{k}") for k, v in values.items()})
