"""The teacher: a network trained once on the full training split, which soft-label evaluation
(and the decoupled methods) ask for the class distribution of any image.

`datadistill teacher --dataset D --model convnet_bn --out DIR` trains it (resumable: a checkpoint
after every epoch; progress bar), or imports a state dict (`--from FILE`, read with
``torch.load(weights_only=True)``). The folder is an artifact (`artifacts.py`)::

    manifest.json        format datadistill.teacher, fingerprint, dataset spec, network and its
                         variant, settings, test and validation accuracy, sha256 of the weights
    teacher.safetensors  the state dict
    checkpoint.pt        while training only (removed when the teacher is finished)

Defaults and presets: ``presets/artifacts/teacher.yaml`` (the paper preset follows DD-Ranking's
training of its ConvNet teachers; the quick one is sized for a CPU). Batch-norm networks
(``convnet_bn``, ``resnet18_bn``) are what the soft-label methods use.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ._version import __version__
from .artifacts import Artifact, dataset_differences, register_artifact
from .augment import DEFAULT_STRATEGY
from .config import PRESETS, apply_rules, merge_values, option
from .data import DatasetSpec, DatasetSplits, load_dataset
from .errors import ConfigError, FormatError
from .evaluate import make_augment
from .fileio import atomic_path, write_json
from .nets import make_net, sized_variants, variants_of
from .rng import make_generator, resolve_device
from .train import OPTIMIZERS, SCHEDULES, accuracy, train_model
from .typed import build

FORMAT_VERSION = "1"
WEIGHTS = "teacher.safetensors"
CHECKPOINT = "checkpoint.pt"


@dataclass
class TeacherSettings:
    """How the teacher is trained (flags of `datadistill teacher` are generated from these)."""

    dataset: str = option(help="mnist-5k, mnist, fashion_mnist, cifar10, cifar100, svhn, folder:PATH")
    model: str = option("convnet_bn", help="network (default convnet_bn, the soft-label methods' teacher)")
    model_args: dict[str, Any] = option(factory=dict, name="--model-arg", metavar="KEY=VALUE",
                                        help="a network variant, e.g. width=64 (repeatable)")
    epochs: int = option(50, help="training epochs (overrides the preset)")
    lr: float = option(0.01, help="learning rate")
    batch_size: int = option(256, help="minibatch size")
    momentum: float = option(0.9, help="SGD momentum")
    weight_decay: float = option(5e-4, help="weight decay")
    optimizer: str = option("sgd", choices=OPTIMIZERS, help="sgd (default), adamw, or gsam (sharpness-aware SGD with gsam.py's defaults)")
    schedule: str = option("step", choices=SCHEDULES, help="step (x0.1 at half the epochs, default) or cosine")
    aug: str = option("dsa", choices=("dsa", "none"), help="training augmentation: dsa (default) or none")
    dsa_strategy: str = option(DEFAULT_STRATEGY, metavar="OPS", help="DSA transforms joined by _")
    seed: int = option(0, help="seed (default 0)")
    sources: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"teacher {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"teacher lr must be > 0, got {self.lr}")


def teacher_settings(dataset: str, preset: str = "quick", **overrides: Any) -> TeacherSettings:
    """Defaults < the rules of presets/artifacts/teacher.yaml for `preset` < overrides (None ignored)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("datadistill.presets").joinpath("artifacts", "teacher.yaml").read_text()
    rules = (yaml.safe_load(text).get("presets") or {}).get(preset) or []
    values, sources = apply_rules(rules, dataset, 0)
    merge_values(values, {k: v for k, v in overrides.items() if v is not None})
    settings = build(TeacherSettings, {**values, "dataset": dataset, "sources": sources}, "teacher option",
                     "teacher ")
    settings.validate()
    return settings


def _identity(settings: TeacherSettings, spec: DatasetSpec, train_images: int, *, sized: bool = True) -> dict:
    """What a teacher depends on. The network's variants as built at the image size
    (`nets.sized_variants`); `sized=False`: as this package wrote them from the commit on which a
    ConvNet's depth followed the image size until this one (depth None), so that a checkpoint of
    then still resumes."""
    s = {k: v for k, v in asdict(settings).items() if k not in ("sources", "dataset")}
    s["model_args"] = (sized_variants(settings.model, spec.im_size, settings.model_args) if sized
                       else {**variants_of(settings.model), **settings.model_args})
    return {"dataset": spec.to_dict(), "train_images": int(train_images), **json.loads(json.dumps(s, default=str))}


def _same_teacher(existing: dict, identity: dict) -> bool:
    """Whether the manifest `existing` is of the teacher `identity` describes, its network's
    variants compared as built (a folder that recorded depth 3 or depth None for a 32-pixel
    ConvNet holds the same network)."""
    stored = {k: existing.get(k) for k in identity}
    if isinstance(stored.get("model_args"), dict) and isinstance(stored.get("dataset"), dict):
        stored["model_args"] = sized_variants(str(existing.get("model")), stored["dataset"]["im_size"],
                                              stored["model_args"])
    return _digest(stored) == _digest(identity)


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@register_artifact
class Teacher(Artifact):
    """A finished teacher folder."""

    kind: ClassVar[str] = "teacher"
    description: ClassVar[str] = "a teacher network"
    command: ClassVar[str] = "datadistill teacher"
    format_version: ClassVar[str] = FORMAT_VERSION

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "Teacher":
        directory = Path(directory)
        m = cls.read_manifest(directory)
        if m is None:
            raise FormatError(f"{directory}: no teacher there (no manifest.json); make one with "
                              f"`datadistill teacher --dataset DATASET --out {directory}`")
        for key in ("dataset", "model", "model_args", "sha256", "file"):
            if key not in m:
                raise FormatError(f"{directory / 'manifest.json'}: the teacher manifest has no {key!r}")
        path = directory / m["file"]
        if not path.is_file():
            raise FormatError(f"{path}: the teacher's weights are missing; make the teacher again")
        if _sha256(path) != m["sha256"]:
            raise FormatError(f"{path}: the weights do not match the manifest's checksum (corrupted or replaced); "
                              "make the teacher again")
        return cls(directory, m)

    @classmethod
    def make_hint(cls, cfg) -> str:
        return f"datadistill teacher --dataset {cfg.dataset} --out TEACHER_DIR"

    @property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.from_dict(self.manifest["dataset"])

    def check(self, cfg, spec: DatasetSpec) -> None:
        self.check_spec(spec)

    def check_spec(self, spec: DatasetSpec) -> None:
        diffs = dataset_differences(self.spec, spec, "teacher")
        if diffs:
            raise ConfigError(f"the teacher in {self.directory} does not fit: {'; '.join(diffs)}. Make one with "
                              f"`datadistill teacher --dataset {spec.name} --out NEW_DIR`")

    def network(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The teacher in eval mode, frozen, on `device`."""
        spec = self.spec
        net = make_net(self.manifest["model"], spec.channels, spec.num_classes, spec.im_size,
                       **self.manifest["model_args"])
        try:
            state = load_file(str(self.directory / self.manifest["file"]))
            net.load_state_dict(state)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise FormatError(f"{self.directory / self.manifest['file']}: not the weights of "
                              f"{self.manifest['model']} ({e})") from e
        return net.to(device).eval().requires_grad_(False)


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def _finish(out: Path, net: torch.nn.Module, identity: dict, settings: TeacherSettings | None, data: DatasetSplits,
            device: torch.device, seconds: float, imported_from: str | None) -> dict:
    """Write the weights, measure the teacher on validation and test, write the manifest."""
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp),
                  metadata={"format": "datadistill.teacher"})
    val = accuracy(net, data.val.images.to(device), data.val.labels.to(device)) if len(data.val) else float("nan")
    test = accuracy(net, data.test.images.to(device), data.test.labels.to(device))
    manifest = {
        "format": Teacher.format_tag(), "format_version": FORMAT_VERSION, "package_version": __version__,
        "fingerprint": _digest(identity), **identity,
        "settings": asdict(settings) if settings is not None else None, "imported_from": imported_from,
        "val_accuracy": val, "test_accuracy": test, "seconds": seconds, "file": WEIGHTS,
        "sha256": _sha256(out / WEIGHTS), "bytes": (out / WEIGHTS).stat().st_size,
    }
    write_json(out / "manifest.json", manifest)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return manifest


def train_teacher(settings: TeacherSettings, out: str | os.PathLike, *, data: DatasetSplits | None = None,
                  data_root: str | None = None, device: str | torch.device = "auto", progress: bool = True,
                  log: Callable[[str], None] = _log) -> dict:
    """Train the teacher of `settings` into `out` (resuming its checkpoint); returns the manifest.
    A finished folder with the same settings is kept as it is; one with other settings is refused."""
    settings.validate()
    out = Path(out)
    dev = resolve_device(device)
    if data is None:
        data = load_dataset(settings.dataset, data_root, progress=progress)
    spec = data.spec
    identity = _identity(settings, spec, len(data.train))
    existing = Teacher.read_manifest(out) if out.exists() else None
    if existing is not None:
        if not _same_teacher(existing, identity):
            raise ConfigError(f"{out} holds a teacher made with other settings; use another --out, or the same "
                              "settings to keep it")
        log(f"{out}: the teacher is already trained (test accuracy {existing['test_accuracy']:.2f} %)")
        return existing
    out.mkdir(parents=True, exist_ok=True)
    g = make_generator(settings.seed, "teacher")
    net = make_net(settings.model, spec.channels, spec.num_classes, spec.im_size, generator=g,
                   **settings.model_args).to(dev)
    resume = None
    if (out / CHECKPOINT).exists():
        try:
            ck = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
            if not isinstance(ck, dict) or ck.get("fingerprint") not in (
                    _digest(identity), _digest(_identity(settings, spec, len(data.train), sized=False))):
                raise FormatError("other settings")
            net.load_state_dict(ck["model"])
            resume = ck["train"]
        except Exception as e:  # noqa: BLE001  (a bad checkpoint is not worth keeping)
            raise FormatError(f"{out / CHECKPOINT}: not a checkpoint of this teacher ({e}); delete it to start "
                              "over") from e
        log(f"resuming the teacher in {out} after epoch {resume['epoch']}")

    def save_state(state: dict) -> None:
        with atomic_path(out / CHECKPOINT) as tmp:
            torch.save({"fingerprint": _digest(identity), "model": net.state_dict(), "train": state}, tmp)

    augment = make_augment(settings.aug, spec.name, settings.dsa_strategy)
    t0 = time.perf_counter()
    train_model(net, data.train.images.to(dev), data.train.labels.to(dev), epochs=settings.epochs, lr=settings.lr,
                generator=g, batch_size=settings.batch_size, momentum=settings.momentum,
                weight_decay=settings.weight_decay, aug=augment, progress=progress, desc=f"teacher {settings.model}",
                optimizer=settings.optimizer, schedule=settings.schedule, resume=resume, on_epoch_state=save_state)
    manifest = _finish(out, net, identity, settings, data, dev, time.perf_counter() - t0, None)
    log(f"teacher {settings.model} on {spec.name}: test accuracy {manifest['test_accuracy']:.2f} %, validation "
        f"{manifest['val_accuracy']:.2f} % ({manifest['seconds']:.0f} s) -> {out}")
    return manifest


def import_teacher(state_file: str | os.PathLike, dataset: str, model: str, out: str | os.PathLike, *,
                   model_args: dict | None = None, data: DatasetSplits | None = None, data_root: str | None = None,
                   device: str | torch.device = "auto", progress: bool = True) -> dict:
    """A teacher folder from a state dict saved elsewhere (read with weights_only=True: a file that
    needs code to unpickle is refused)."""
    from .interop.files import load_pt

    path = Path(state_file)
    if not path.is_file():
        raise FormatError(f"{path}: no such file (a state dict saved with torch.save)")
    state = load_pt(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    dev = resolve_device(device)
    if data is None:
        data = load_dataset(dataset, data_root, progress=progress)
    spec = data.spec
    net = make_net(model, spec.channels, spec.num_classes, spec.im_size, **(model_args or {}))
    try:
        net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{path}: these weights are not those of {model} on {spec.name} ({first}); give the "
                          "network they belong to with --model / --model-arg") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"dataset": spec.to_dict(), "train_images": len(data.train), "model": model,
                "model_args": sized_variants(model, spec.im_size, model_args), "imported_sha256": _sha256(path)}
    return _finish(out, net.to(dev).eval(), identity, None, data, dev, 0.0, str(path))
