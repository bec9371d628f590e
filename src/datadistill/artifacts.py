"""Artifacts: prerequisites that are made once and reused by many runs.

Expert trajectories (MTT, PAD), and the teacher networks and difficulty scores of the methods to
come, are not part of a run: a command makes them into a folder, and runs name that folder. They
all have one small interface, `Artifact`:

- a **folder with a manifest** (``manifest.json``): ``format`` (``datadistill.<kind>``),
  ``format_version``, ``fingerprint`` (a digest of everything the contents depend on: dataset,
  network, settings), the package version that made it, and whatever the kind records besides;
- a **command that makes it**, resumable (`make_hint` names it, for error messages);
- a **loader** (`open`) that reads and checks the folder, and `check(cfg, spec)`, which says
  whether it fits a run and, when it does not, what differs and what to run instead;
- a **fingerprint** that the run records in ``config.yaml`` (``artifact_fingerprints``), so that a
  run folder cannot resume on other experts than the ones it started with.

A method declares what it needs (``requires = ("experts",)`` on its Distiller class); the run
setup (`run.setup.prepare`) resolves ``cfg.artifacts[kind]`` (``--experts DIR``; one flag per
registered kind) generically, refuses an artifact the method does not use, and hands the opened
artifacts to the method. A method may also name artifacts it can use without needing them
(``accepts = ("teacher",)``: a coreset relabelled by a teacher when one is given). Registering a
kind is an import: ``@register_artifact`` on its class.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ConfigError, FormatError

if TYPE_CHECKING:
    from .config import DistillConfig
    from .data import DatasetSpec

MANIFEST = "manifest.json"
_ARTIFACTS: dict[str, type["Artifact"]] = {}


class Artifact(ABC):
    """A made-once prerequisite in a folder. Subclasses set `kind`, `description` and
    `format_version`, and implement `open`, `check` and `make_hint`."""

    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    command: ClassVar[str] = ""  # the command that makes one, e.g. "datadistill experts"
    format_version: ClassVar[str] = "1"

    def __init__(self, directory: Path, manifest: dict):
        self.directory = Path(directory)
        self.manifest = manifest

    @classmethod
    def format_tag(cls) -> str:
        return f"datadistill.{cls.kind}"

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @classmethod
    @abstractmethod
    def open(cls, directory: str | os.PathLike) -> "Artifact":
        """Read and check the folder (FormatError when it is not a finished artifact of this kind)."""

    @abstractmethod
    def check(self, cfg: "DistillConfig", spec: "DatasetSpec") -> None:
        """Raise ConfigError naming every difference between the artifact and the run `cfg` on
        `spec`, and the command that makes a matching one."""

    @classmethod
    @abstractmethod
    def make_hint(cls, cfg: "DistillConfig") -> str:
        """The command that makes an artifact of this kind for `cfg`."""

    @classmethod
    def read_manifest(cls, directory: str | os.PathLike) -> dict | None:
        """The folder's manifest, None when there is none; FormatError when it is not one of this
        kind or of another format version."""
        path = Path(directory) / MANIFEST
        if not path.exists():
            return None
        try:
            m = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise FormatError(f"{path}: unreadable {cls.kind} manifest ({e})") from e
        if not isinstance(m, dict) or m.get("format") != cls.format_tag():
            raise FormatError(f"{path}: not a datadistill {cls.kind} manifest (no '{cls.format_tag()}' format tag)")
        if m.get("format_version") != cls.format_version:
            raise FormatError(f"{path}: {cls.kind} format version {m.get('format_version')!r}; this datadistill "
                              f"reads {cls.format_version}")
        if not isinstance(m.get("fingerprint"), str):
            raise FormatError(f"{path}: the {cls.kind} manifest has no fingerprint")
        return m


def dataset_differences(theirs: "DatasetSpec", mine: "DatasetSpec", who: str) -> list[str]:
    """What differs between the dataset an artifact was made on (`theirs`) and a run's (`mine`):
    name, channels, image size, classes, normalization. `who` names the artifact in the lines."""
    diffs = []
    if theirs.name != mine.name:
        diffs.append(f"dataset: {who} {theirs.name!r}, this run {mine.name!r}")
    pairs = {
        "channels": (theirs.channels, mine.channels),
        "image size": (tuple(theirs.im_size), tuple(mine.im_size)),
        "classes": (theirs.num_classes, mine.num_classes),
        "normalization mean": (tuple(theirs.mean), tuple(float(v) for v in mine.mean)),
        "normalization std": (tuple(theirs.std), tuple(float(v) for v in mine.std)),
    }
    return diffs + [f"dataset {k}: {who} {a}, this run {b}" for k, (a, b) in pairs.items() if a != b]


def register_artifact(cls: type[Artifact]) -> type[Artifact]:
    """Class decorator: make `cls.kind` known to the spine (a `--<kind> DIR` flag, `requires`)."""
    if not cls.kind:
        raise TypeError(f"{cls.__name__} has no kind")
    _ARTIFACTS[cls.kind] = cls
    return cls


def _load_builtin() -> None:
    from . import methods, teacher  # noqa: F401  (importing them registers the artifacts they define)


def get_artifact(kind: str) -> type[Artifact]:
    _load_builtin()
    if kind not in _ARTIFACTS:
        raise ConfigError(f"unknown artifact kind {kind!r}; known: {', '.join(sorted(_ARTIFACTS)) or 'none'}")
    return _ARTIFACTS[kind]


def available_artifacts() -> dict[str, type[Artifact]]:
    """kind -> class of every registered artifact kind."""
    _load_builtin()
    return dict(sorted(_ARTIFACTS.items()))


def resolve_artifacts(method_cls: Any, cfg: "DistillConfig", spec: "DatasetSpec") -> dict[str, Artifact]:
    """Open and check the artifacts that `method_cls.requires` names, and those of
    `method_cls.accepts` that were given, from `cfg.artifacts`. ConfigError when a required one is
    missing (with the command that makes it), one does not fit the run, or one was given although
    the method does not use it."""
    given = dict(cfg.artifacts or {})
    optional = tuple(getattr(method_cls, "accepts", ()))
    unused = sorted(set(given) - set(method_cls.requires) - set(optional))
    if unused:
        flags = ", ".join(f"--{k}" for k in unused)
        raise ConfigError(f"method {cfg.method} does not use {flags}; drop it (the methods that do: "
                          f"{_users(unused[0])})")
    out: dict[str, Artifact] = {}
    for kind in method_cls.requires:
        cls = get_artifact(kind)
        if not given.get(kind):
            raise ConfigError(f"{cfg.method} needs {cls.description}: make them first with "
                              f"`{method_cls.make_hint(kind, cfg)}` and pass --{kind} DIR")
        art = cls.open(given[kind])
        art.check(cfg, spec)
        out[kind] = art
    for kind in optional:
        if given.get(kind) and kind not in out:
            art = get_artifact(kind).open(given[kind])
            art.check(cfg, spec)
            out[kind] = art
    return out


def _users(kind: str) -> str:
    from .methods import available_methods, get_method

    return ", ".join(m for m in available_methods()
                     if kind in get_method(m).requires or kind in get_method(m).accepts) or "none"
