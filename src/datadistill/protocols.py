"""Named evaluation protocols: ``presets/protocols/<name>.yaml``, each a set of `EvalConfig`
settings with the source they follow (and where that source selects on the test split, which we
never do). `datadistill evaluate RUN --protocol NAME` runs one and prints every setting that
differs from datadistill's own."""
from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any

import yaml

from .config import EvalConfig, check_protocol
from .errors import ConfigError
from .typed import build

OURS = "datadistill"


def protocol_names() -> list[str]:
    folder = resources.files("datadistill.presets").joinpath("protocols")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def protocol_source(name: str) -> dict:
    """The parsed YAML of protocol `name` (name, source, settings)."""
    if name not in protocol_names():
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(protocol_names())}")
    text = resources.files("datadistill.presets").joinpath("protocols", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def load_protocol(name: str, **overrides: Any) -> EvalConfig:
    """EvalConfig defaults < protocol `name`'s settings < `overrides` (None values ignored)."""
    doc = protocol_source(name)
    values = {**(doc.get("settings") or {}), "protocol": name}
    values.update({k: v for k, v in overrides.items() if v is not None})
    p = build(EvalConfig, values, "eval option", "eval ")
    check_protocol(p)
    return p


def differences(p: EvalConfig, base: EvalConfig | None = None) -> list[str]:
    """`field: ours -> theirs` for every setting of `p` that differs from `base` (default: ours)."""
    base = base if base is not None else load_protocol(OURS)
    skip = {"protocol", "runs", "models", "precision", "compile", "channels_last", "batched", "gain", "teacher"}
    return [f"{f.name}: {getattr(base, f.name)!r} -> {getattr(p, f.name)!r}" for f in dataclasses.fields(EvalConfig)
            if f.name not in skip and getattr(base, f.name) != getattr(p, f.name)]
