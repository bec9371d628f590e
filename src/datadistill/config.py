"""Typed run configuration, preset lookup, and validation with clear errors.

A resolved config is built in three layers, later ones winning:
dataclass defaults < the preset's rules (``presets/<method>.yaml``) < what the user passed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from .errors import ConfigError
from .numerics import check_precision



def _methods_with_presets() -> tuple[str, ...]:
    """A method exists for the config when it has a presets file (one source of truth)."""
    names = [p.name[: -len(".yaml")] for p in resources.files("datadistill.presets").iterdir() if p.name.endswith(".yaml")]
    return tuple(sorted(n.replace("_", "-") for n in names))


METHODS = _methods_with_presets()
PRESETS = ("quick", "paper")
INITS = ("real", "noise")


@dataclass
class EvalConfig:
    """The evaluation protocol: train a fresh network `runs` times on the set, test each once."""

    models: list[str] = field(default_factory=lambda: ["convnet"])
    runs: int = 1
    epochs: int | None = None  # None: 1000 with DSA, 300 without (as the DC/DSA/DM papers)
    lr: float | None = None  # None: the set's learned lr if it has one, else 0.01
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    aug: str = "dsa"  # dsa | none
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_digit_rule: bool = True  # drop flip on digit datasets (augment.strategy_for); False: as given (the reference)
    dc_rotate: str = "bilinear"  # aug dc's rotation: bilinear | spline (the reference's scipy spline; augment_eval)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the forward passes; numerics.py)
    compile: bool = False  # torch.compile each training step's forward and loss (train.py)
    channels_last: bool = False  # train in the channels-last memory layout, one run at a time (train.py)

    def switches(self) -> dict:
        """The training loop's switches as `evaluate` keyword arguments (precision, compile,
        channels_last): what every evaluation of a run passes on."""
        return {"precision": self.precision, "compile": self.compile, "channels_last": self.channels_last}

    def aug_options(self) -> dict:
        """The evaluation augmentation's settings as `evaluate` keyword arguments (besides `aug`)."""
        return {"dsa_strategy": self.dsa_strategy, "dsa_digit_rule": self.dsa_digit_rule, "dc_rotate": self.dc_rotate}

    def resolved_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 1000 if self.aug == "dsa" else 300


@dataclass
class DistillConfig:
    """Everything a distillation run depends on. Written to the run folder as config.yaml."""

    method: str = "dm"
    dataset: str = "mnist-5k"
    ipc: int = 10
    preset: str = "quick"
    init: str = "real"
    iterations: int = 1000
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    image_size: int | None = None
    model: str = "convnet"
    model_args: dict[str, Any] = field(default_factory=dict)
    experts: str | None = None  # folder of expert trajectories (trajectory matching: mtt)
    zca: bool = False  # ZCA-whiten the training images before distilling (data/zca.py)
    lr_img: float = 1.0
    momentum_img: float = 0.5
    batch_real: int = 256
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # "none" switches DSA off
    dsa_digit_rule: bool = True  # drop flip on digit datasets (augment.strategy_for); False: as given (the reference)
    checkpoint_every: int = 50
    val_every: int = 0  # 0: validate only at the end
    val_epochs: int = 300
    method_args: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # fp32 | bf16: autocast of the loss's forward passes (DM, DataDAM; numerics.py)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sources: list[str] = field(default_factory=list)  # where the preset values come from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        d = dict(d)
        ev = d.pop("eval", {}) or {}
        _check_keys(cls, d, "config")
        _check_keys(EvalConfig, ev, "eval")
        cfg = cls(**d, eval=EvalConfig(**ev))
        validate(cfg)
        return cfg


def _check_keys(klass, d: dict, where: str) -> None:
    known = {f.name for f in dataclasses.fields(klass)} - {"eval"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {where} option(s) {unknown}; valid: {sorted(known)}")


def validate(cfg: DistillConfig) -> None:
    """Check values that can be checked without the data. Raises ConfigError."""
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.init not in INITS:
        raise ConfigError(f"unknown init {cfg.init!r}; choose 'real' or 'noise'")
    if not isinstance(cfg.ipc, int) or cfg.ipc < 1:
        raise ConfigError(f"ipc must be a positive integer, got {cfg.ipc!r}")
    if cfg.iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {cfg.iterations}")
    if cfg.checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    if cfg.batch_real < 1:
        raise ConfigError(f"batch_real must be >= 1, got {cfg.batch_real}")
    if not cfg.lr_img > 0:
        raise ConfigError(f"lr_img must be > 0, got {cfg.lr_img}")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"unknown device {cfg.device!r}; use auto, cpu, cuda or cuda:N")
    if not isinstance(cfg.zca, bool):
        raise ConfigError(f"zca must be true or false, got {cfg.zca!r}")
    if cfg.experts is not None and not isinstance(cfg.experts, str):
        raise ConfigError(f"experts must be a folder path given as a string, got {cfg.experts!r}")
    if cfg.eval.runs < 0:
        raise ConfigError(f"eval runs must be >= 0, got {cfg.eval.runs}")
    if cfg.eval.aug not in ("dsa", "dc", "none"):
        raise ConfigError(f"unknown eval augmentation {cfg.eval.aug!r}; use dsa, dc or none")
    if cfg.eval.dc_rotate not in ("bilinear", "spline"):
        raise ConfigError(f"unknown eval dc_rotate {cfg.eval.dc_rotate!r}; use bilinear or spline")
    if cfg.eval.epochs is not None and cfg.eval.epochs < 1:
        raise ConfigError(f"eval epochs must be >= 1, got {cfg.eval.epochs}")
    check_precision(cfg.precision)
    check_precision(cfg.eval.precision)
    for switch in ("compile", "channels_last", "dsa_digit_rule"):
        if not isinstance(getattr(cfg.eval, switch), bool):
            raise ConfigError(f"eval {switch} must be true or false, got {getattr(cfg.eval, switch)!r}")
    if not isinstance(cfg.dsa_digit_rule, bool):
        raise ConfigError(f"dsa_digit_rule must be true or false, got {cfg.dsa_digit_rule!r}")


def load_preset_rules(method: str) -> dict:
    """The parsed ``presets/<method>.yaml``."""
    name = method.replace("-", "_") + ".yaml"
    try:
        text = resources.files("datadistill.presets").joinpath(name).read_text()
    except FileNotFoundError as e:
        raise ConfigError(f"no presets for method {method!r} (missing presets/{name})") from e
    return yaml.safe_load(text)


def _matches(match: dict | None, dataset: str, ipc: int) -> bool:
    if not match:
        return True
    if "dataset" in match:
        want = match["dataset"]
        want = want if isinstance(want, list) else [want]
        base = dataset.split(":", 1)[0]
        if dataset not in want and base not in want:
            return False
    if "ipc" in match:
        want = match["ipc"]
        want = want if isinstance(want, list) else [want]
        if ipc not in want:
            return False
    return True


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and k != "model_args":
            _merge(dst[k], v)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            dst[k] = {**dst[k], **v}
        else:
            dst[k] = v


def preset_values(method: str, preset: str, dataset: str, ipc: int) -> tuple[dict, list[str]]:
    """The values a preset sets for this dataset and IPC, and the sources of the rules used."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    rules = load_preset_rules(method).get("presets", {}).get(preset)
    if rules is None:
        raise ConfigError(f"method {method!r} has no {preset!r} preset")
    values: dict = {}
    sources: list[str] = []
    for rule in rules:
        if _matches(rule.get("match"), dataset, ipc):
            _merge(values, rule.get("set", {}))
            if rule.get("source"):
                sources.append(str(rule["source"]))
    return values, sources


def resolve_config(
    method: str = "dm",
    dataset: str = "mnist-5k",
    ipc: int = 10,
    preset: str = "quick",
    **overrides: Any,
) -> DistillConfig:
    """Defaults < preset < overrides. `overrides` may include `eval={...}` and `method_args={...}`;
    None values are ignored (so CLI flags that were not given do not override the preset)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    values, sources = preset_values(method, preset, dataset, ipc)
    d = DistillConfig().to_dict()
    _merge(d, values)
    user = {k: v for k, v in overrides.items() if v is not None}
    if "eval" in user:
        user["eval"] = {k: v for k, v in user["eval"].items() if v is not None}
    _merge(d, user)
    d.update(method=method, dataset=dataset, ipc=ipc, preset=preset, sources=sources)
    return DistillConfig.from_dict(d)


def save_yaml(cfg: DistillConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def load_yaml(text: str) -> DistillConfig:
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config.yaml is not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError("config.yaml does not hold a mapping of options")
    return DistillConfig.from_dict(d)
