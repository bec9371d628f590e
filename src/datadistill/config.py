"""Typed run configuration, preset lookup, and validation with clear errors.

A resolved config is built in three layers, later ones winning:
dataclass defaults < the preset's rules (``presets/<method>.yaml``) < what the user passed.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from .augment import DEFAULT_STRATEGY
from .errors import ConfigError
from .numerics import check_precision
from .typed import build

PRESETS = ("quick", "paper")
INITS = ("real", "noise")
RELABEL_MODES = ("stored", "teacher")


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING, **flag: Any):
    """A config field with its command-line help (and, in `flag`, ``name=`` for a flag other
    than ``--field-name``, ``choices=``, ``metavar=``): the CLI generates its flags from these."""
    return field(default=default, default_factory=factory, metadata={"help": help, **flag})


@dataclass
class EvalConfig:
    """The evaluation protocol: train a fresh network `runs` times on the set, test each once."""

    models: list[str] = option(factory=lambda: ["convnet"], metavar="A,B",
                               help="comma-separated networks to evaluate on (default convnet)")
    runs: int = option(1, help="evaluation runs per network (0 skips the evaluation)")
    epochs: int | None = option(None, help="epochs per run (default 1000 with DSA, 300 without, as the DC/DSA/DM papers)")
    lr: float | None = option(None, help="learning rate (default: the set's learned lr if it has one, else 0.01)")
    batch_size: int = option(256, help="minibatch size (default 256)")
    momentum: float = option(0.9, help="SGD momentum (default 0.9)")
    weight_decay: float = option(5e-4, help="SGD weight decay (default 5e-4)")
    aug: str = option("dsa", choices=("dsa", "dc", "none"),
                      help="training augmentation: dsa (default), dc (the DC paper's, MNIST family only) or none")
    dsa_strategy: str = option(DEFAULT_STRATEGY, metavar="OPS", help="DSA transforms joined by _ (default: all six)")
    dsa_digit_rule: bool = option(True, help="drop flip from DSA on digit datasets (augment.strategy_for); "
                                             "--no-eval-dsa-digit-rule: the strategy as given, as the reference code")
    dc_rotate: str = option("bilinear", choices=("bilinear", "spline"),
                            help="aug dc's rotation: bilinear (default) or spline (the reference's scipy spline)")
    precision: str = option("fp32", choices=("fp32", "bf16"),
                            help="fp32 (default) or bf16: autocast of the evaluation's forward passes (numerics.py)")
    compile: bool = option(False, help="torch.compile the training steps (off by default: changes rounding and "
                                       "compiles first; pays for long trainings, docs/speed.md)")
    channels_last: bool = option(False, help="train the networks in the channels-last memory layout, one at a time "
                                             "(off by default; slower on the CPUs measured, docs/speed.md)")
    batched: bool | str = option("auto", choices=("auto", "true", "false"),
                                 help="train a network's runs together: auto (default: on a GPU), true, false")
    gain: bool = option(False, help="also evaluate a random real subset of the same size and class balance, and "
                                    "report the gain over it")
    # -- soft labels (train.Objective) and the student's schedule -----------------------------------
    labels: str = option("auto", choices=("auto", "hard", "teacher"),
                         help="auto (the set's own labels, hard or soft, or its teacher's where it records them), "
                              "hard (the classes the images were made for where recorded, else the arg-max of soft "
                              "labels) or teacher (every augmented batch labelled by the teacher)")
    teacher: str | None = option(None, metavar="DIR", help="teacher folder for labels teacher (datadistill teacher)")
    loss: str = option("ce", choices=("ce", "kl", "soft_ce", "mse_gt"),
                       help="ce (default), kl (with temperature), soft_ce, or mse_gt (MSE to the targets' logits "
                            "plus ce_weight x cross-entropy with the ground truth)")
    temperature: float = option(1.0, help="temperature of kl / soft_ce")
    ce_weight: float = option(0.0, help="mse_gt: weight of the cross-entropy with the ground truth")
    mix: str = option("none", choices=("none", "cutmix", "mixup"), help="batch mixing after the augmentation")
    mix_beta: float = option(1.0, help="Beta(b, b) of the mixing ratio")
    optimizer: str = option("sgd", choices=("sgd", "adamw"), help="the student's optimizer")
    schedule: str = option("step", choices=("step", "cosine"),
                           help="step (x0.1 at half the epochs, default) or cosine")
    lr_grid: list[float] = option(factory=list, metavar="A,B",
                                  help="choose the lr from these on the validation split when the set has no "
                                       "learned lr and lr is not given (e.g. 0.001,0.005,0.01,0.05,0.1)")
    protocol: str = option("datadistill", help="the name of the protocol these settings are (protocols/*.yaml)")

    def __post_init__(self) -> None:
        if isinstance(self.batched, str) and self.batched.lower() in ("true", "false"):  # the command line's
            self.batched = self.batched.lower() == "true"

    def resolved_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 1000 if self.aug == "dsa" else 300

    @property
    def soft(self) -> bool:
        """Whether training needs `train.Objective` (teacher labels, a soft-label loss, mixing)."""
        return self.labels == "teacher" or self.loss != "ce" or self.mix != "none"


@dataclass
class DistillConfig:
    """Everything a distillation run depends on. Written to the run folder as config.yaml."""

    method: str = option("dm", help="distillation method (default dm)")
    dataset: str = option("mnist-5k", help="mnist-5k (default, offline), mnist, fashion_mnist, cifar10, cifar100, "
                                           "svhn, folder:PATH")
    ipc: int = option(10, help="images per class (default 10)")
    preset: str = option("quick", choices=PRESETS,
                         help="quick (minutes on a CPU, default) or paper (the paper's protocol)")
    init: str = option("real", choices=INITS, help="start from random real images or Gaussian noise")
    iterations: int = option(1000, help="outer iterations (overrides the preset)")
    seed: int = option(0, help="run seed (default 0)")
    device: str = option("auto", help="auto (default), cpu, cuda or cuda:N")
    data_root: str | None = option(None, metavar="DIR", help="folder with <dataset>/ files (default: "
                                                            "$DATADISTILL_DATA or ~/.cache/datadistill)")
    image_size: int | None = option(None, help="image side: resize to it (imagenet and its subsets, mhist: decode at "
                                               "it; imagenet: 32, 64, 128 or 224)")
    storage: str = option("auto", choices=("auto", "memory", "disk"),
                          help="where the training images live: auto (default: on disk when the dataset as float32 "
                               "would exceed 4 GiB or a quarter of the memory), memory (--in-memory) or disk "
                               "(--out-of-core: the uint8 store, read a batch at a time); both give the same set")
    cache: str | None = option(None, metavar="DIR", help="folder of the out-of-core image store (default "
                                                         "$DATADISTILL_CACHE or <data-root>/<dataset>/.cache)")
    model: str = option("convnet", help="network used for distillation (default convnet)")
    model_args: dict[str, Any] = option(factory=dict, name="--model-arg", metavar="KEY=VALUE",
                                        help="a variant of the distillation network, e.g. width=64 (repeatable)")
    # kind -> folder of the made-once prerequisites the method needs (artifacts.py): {"experts": DIR};
    # one flag per registered kind (--experts DIR)
    artifacts: dict[str, str] = field(default_factory=dict)
    # kind -> the fingerprint of that artifact, recorded by the run setup (a resume must see the same)
    artifact_fingerprints: dict[str, str] = field(default_factory=dict)
    # what the run setup chose because it was not given, recorded for config.yaml (e.g. the ConvNet
    # depth picked from the image size); informational, a resume may differ
    resolved: dict[str, Any] = field(default_factory=dict)
    zca: bool = option(False, help="ZCA-whiten the training images before distilling (default: the preset's)")
    lr_img: float = option(1.0, help="learning rate of the synthetic images")
    momentum_img: float = option(0.5, help="momentum of the synthetic images' SGD")
    batch_real: int = option(256, help="real images per class per iteration")
    dsa_strategy: str = option(DEFAULT_STRATEGY, metavar="OPS",
                               help="DSA transforms while distilling, joined by _ (none: no DSA)")
    dsa_digit_rule: bool = option(True, help="drop flip from DSA on digit datasets while distilling "
                                             "(augment.strategy_for); --no-dsa-digit-rule: as given, as the reference")
    checkpoint_every: int = option(50, help="iterations between checkpoints")
    val_every: int = option(0, help="iterations between validation-accuracy checks (0: only at the end)")
    val_epochs: int = option(300, help="epochs of the validation network")
    method_args: dict[str, Any] = option(factory=dict, name="--opt", metavar="KEY=VALUE",
                                         help="a method-specific option, checked against the method's options "
                                              "(repeatable; docs/methods/)")
    precision: str = option("fp32", choices=("fp32", "bf16"),
                            help="fp32 (default) or bf16: autocast of the loss's forward passes (dm, datadam) or of the "
                                 "first-order parts (dc, dsa: real-batch gradients, inner loop)")
    relabel: str = option("stored", choices=RELABEL_MODES,
                          help="with a teacher (--teacher DIR): stored (default: the teacher's soft labels saved with "
                               "the set, per image, or per region for rded) or teacher (hard labels saved; the "
                               "evaluation relabels every batch with the teacher)")
    eval: EvalConfig = field(default_factory=EvalConfig)
    sources: list[str] = field(default_factory=list)  # where the preset values come from

    @property
    def experts(self) -> str | None:
        """The experts folder (``artifacts["experts"]``; the name configs had before artifacts)."""
        return self.artifacts.get("experts")

    def validation_protocol(self) -> EvalConfig:
        """How the run checks its set on the validation split: the evaluation protocol with one
        run of `val_epochs` epochs (of the distillation network, `model` / `model_args`)."""
        return dataclasses.replace(self.eval, models=[self.model], runs=1, epochs=self.val_epochs, gain=False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        d = dict(d)
        _artifacts_from_old_keys(d)
        ev = d.pop("eval", {}) or {}
        if not isinstance(ev, dict):
            raise ConfigError(f"eval must be a mapping of evaluation settings, got {ev!r}")
        d["eval"] = build(EvalConfig, ev, "eval option", "eval ")
        cfg = build(cls, d, "config option")
        validate(cfg)
        return cfg


def _artifacts_from_old_keys(d: dict) -> None:
    """A top-level ``experts: DIR`` (config.yaml before artifacts, and the ``experts=`` keyword)
    becomes ``artifacts: {experts: DIR}``."""
    if "experts" in d:
        folder = d.pop("experts")
        if folder is not None:
            d["artifacts"] = {**(d.get("artifacts") or {}), "experts": folder}


def validate(cfg: DistillConfig) -> None:
    """Check values that can be checked without the data. Raises ConfigError."""
    check_precision(cfg.precision)
    check_method(cfg.method, cfg.precision)
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.init not in INITS:
        raise ConfigError(f"unknown init {cfg.init!r}; choose 'real' or 'noise'")
    if cfg.relabel not in RELABEL_MODES:
        raise ConfigError(f"unknown relabel {cfg.relabel!r}; choose 'stored' or 'teacher'")
    if not isinstance(cfg.ipc, int) or cfg.ipc < 1:
        raise ConfigError(f"ipc must be a positive integer, got {cfg.ipc!r}")
    if cfg.iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {cfg.iterations}")
    if cfg.val_every < 0:
        raise ConfigError(f"val_every must be >= 0 (0: validate only at the end), got {cfg.val_every}")
    if cfg.val_epochs < 1:
        raise ConfigError(f"val_epochs must be >= 1, got {cfg.val_epochs}")
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
    if not isinstance(cfg.artifacts, dict):
        raise ConfigError(f"artifacts must map a kind to a folder, e.g. {{experts: DIR}}, got {cfg.artifacts!r}")
    for kind, folder in cfg.artifacts.items():
        if not isinstance(folder, str) or not folder:
            raise ConfigError(f"{kind} must be a folder path given as a string, got {folder!r}")
    check_protocol(cfg.eval)
    from .nets import list_nets  # every network named, checked before any work

    if not cfg.eval.models:
        raise ConfigError("eval models is empty; name at least one network, e.g. --eval-models convnet")
    for m in [cfg.model, *cfg.eval.models]:
        if str(m).lower() not in list_nets():
            raise ConfigError(f"unknown network {m!r}; valid choices: {', '.join(list_nets())}")
    check_precision(cfg.eval.precision)
    for switch in ("compile", "channels_last", "dsa_digit_rule"):
        if not isinstance(getattr(cfg.eval, switch), bool):
            raise ConfigError(f"eval {switch} must be true or false, got {getattr(cfg.eval, switch)!r}")
    if not isinstance(cfg.dsa_digit_rule, bool):
        raise ConfigError(f"dsa_digit_rule must be true or false, got {cfg.dsa_digit_rule!r}")


def check_method(method: str, precision: str = "fp32") -> None:
    """ConfigError unless `method` is registered (methods/registry.py is the one list of methods)
    and can distil at `precision`."""
    from .methods import available_methods, get_method
    from .methods.base import refuse_precision

    if method not in available_methods():
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(available_methods())}")
    refuse_precision(get_method(method), precision)


def preset_file(method: str) -> str:
    return method.replace("-", "_") + ".yaml"


def preset_files() -> list[str]:
    """The preset files shipped in datadistill/presets, as method names."""
    return sorted(p.name[: -len(".yaml")].replace("_", "-")
                  for p in resources.files("datadistill.presets").iterdir() if p.name.endswith(".yaml"))


def check_protocol(p: EvalConfig) -> None:
    """ConfigError for an evaluation protocol whose values cannot run (names the field)."""
    for name in ("aug", "labels", "loss", "mix", "optimizer", "schedule", "dc_rotate"):
        choices = next(f.metadata["choices"] for f in dataclasses.fields(EvalConfig) if f.name == name)
        if getattr(p, name) not in choices:
            raise ConfigError(f"eval {name} must be one of {', '.join(choices)}, got {getattr(p, name)!r}")
    if p.epochs is not None and p.epochs < 1:
        raise ConfigError(f"eval epochs must be >= 1, got {p.epochs}")
    if p.runs < 0:
        raise ConfigError(f"eval runs must be >= 0, got {p.runs}")
    if p.lr is not None and not p.lr > 0:
        raise ConfigError(f"eval lr must be > 0, got {p.lr}")
    if not p.temperature > 0:
        raise ConfigError(f"eval temperature must be > 0, got {p.temperature}")
    if not p.mix_beta > 0:
        raise ConfigError(f"eval mix_beta must be > 0, got {p.mix_beta}")
    if any(not v > 0 for v in p.lr_grid):
        raise ConfigError(f"eval lr_grid must hold positive learning rates, got {p.lr_grid}")
    if p.labels == "teacher" and not p.teacher:
        raise ConfigError("eval labels teacher needs a teacher folder (--teacher DIR, made by `datadistill teacher`)")


def load_preset_rules(method: str) -> dict:
    """The parsed ``presets/<method>.yaml``; {} for a method without a preset file (it runs on the
    dataclass defaults)."""
    try:
        text = resources.files("datadistill.presets").joinpath(preset_file(method)).read_text()
    except FileNotFoundError:
        return {}
    return yaml.safe_load(text)


def rule_matches(match: dict | None, dataset: str, ipc: int) -> bool:
    """Whether a preset rule's ``match`` (dataset name(s), IPC(s); absent: always) fits. A dataset
    pattern with ``*`` matches like a shell glob, case-insensitively (``folder:*imagenet*``: a folder
    dataset whose path names ImageNet)."""
    if not match:
        return True
    if "dataset" in match:
        want = match["dataset"]
        want = want if isinstance(want, list) else [want]
        base = dataset.split(":", 1)[0]
        if dataset not in want and base not in want and not any(
                any(ch in str(w) for ch in "*?[") and fnmatch.fnmatch(dataset.lower(), str(w).lower()) for w in want):
            return False
    if "ipc" in match:
        want = match["ipc"]
        want = want if isinstance(want, list) else [want]
        if ipc not in want:
            return False
    return True


def merge_values(dst: dict, src: dict) -> None:
    """Merge `src` into `dst` in place, nested mappings key by key (``model_args`` as a whole)."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and k != "model_args":
            merge_values(dst[k], v)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            dst[k] = {**dst[k], **v}
        else:
            dst[k] = v


def preset_values(method: str, preset: str, dataset: str, ipc: int) -> tuple[dict, list[str]]:
    """The values a preset sets for this dataset and IPC, and the sources of the rules used."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    presets = load_preset_rules(method).get("presets")
    if presets is None:  # no preset file: the dataclass defaults
        return {}, []
    rules = presets.get(preset)
    if rules is None:
        raise ConfigError(f"method {method!r} has no {preset!r} preset")
    return apply_rules(rules, dataset, ipc)


def apply_rules(rules: list[dict], dataset: str, ipc: int) -> tuple[dict, list[str]]:
    """The values of the rules that match `dataset` and `ipc`, merged in order (a later rule wins),
    and the sources of those rules. A rule: ``{match: {...}, set: {...}, source: "..."}``."""
    values: dict = {}
    sources: list[str] = []
    for rule in rules:
        if rule_matches(rule.get("match"), dataset, ipc):
            merge_values(values, rule.get("set", {}))
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
    check_method(method)
    values, sources = preset_values(method, preset, dataset, ipc)
    d = DistillConfig().to_dict()
    merge_values(d, values)
    user = {k: v for k, v in overrides.items() if v is not None}
    _artifacts_from_old_keys(user)
    if "eval" in user:
        user["eval"] = {k: v for k, v in user["eval"].items() if v is not None}
    if "relabel" in user and not (user.get("artifacts") or {}).get("teacher"):  # else nothing would use it
        raise ConfigError(f"relabel {user['relabel']!r} says how a teacher's labels are kept; give the teacher "
                          f"(--teacher DIR) or drop --relabel")
    merge_values(d, user)
    d.update(method=method, dataset=dataset, ipc=ipc, preset=preset, sources=sources)
    return DistillConfig.from_dict(d)


def save_yaml(cfg: DistillConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def load_yaml(text: str, source: str = "config.yaml") -> DistillConfig:
    """The config of a config.yaml's text; ConfigError naming `source` and what is wrong."""
    fix = "fix the file, or use another --out"
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where} ({getattr(e, 'problem', None) or 'parse error'}); {fix}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{source} does not hold a mapping of options; {fix}")
    try:
        return DistillConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}; {fix}") from e
