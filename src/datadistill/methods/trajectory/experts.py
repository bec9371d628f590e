"""The expert store of trajectory matching (MTT, PAD, DATM): what an expert folder holds, its
identity and fingerprint, and the `Experts` artifact that reads it.

An *expert* is a network trained on the real training split; its *trajectory* is its flat
parameter vector (`nets.flat_params`) at the start and after every epoch. MTT (Cazenavette et
al., CVPR 2022) starts a student from an expert's parameters at epoch t and asks the synthetic
set to bring it, in a few steps, to where the expert was at epoch t + M. `training.py` makes
the folders (`datadistill experts`); this module describes and opens them.

A folder of experts::

    manifest.json            what they are (dataset, network, augmentation, ZCA, normalization,
                             epochs, lr, batch, seed), and per finished expert: file, test
                             accuracy, seconds, bytes
    zca.safetensors          the ZCA whitening the experts were trained under (only with ZCA)
    el2n.safetensors         PAD's difficulty scores (only with a curriculum)
    expert_0000.safetensors  tensor ``trajectory`` (epochs + 1, P) float32, plus metadata
    expert_0001.safetensors  ...

The manifest is the record of which experts are finished. `Experts` is an artifact
(`datadistill.artifacts`): a run that needs experts names the folder (`--experts DIR`), and
`Experts.check` says what differs from the run and the command that makes matching ones.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...artifacts import Artifact, dataset_differences, register_artifact
from ...augment import DEFAULT_STRATEGY, strategy_for
from ...config import PRESETS, apply_rules, load_preset_rules, merge_values, option
from ...data import DatasetSpec
from ...data.zca import DEFAULT_EPS
from ...errors import ConfigError, FormatError
from ...fileio import atomic_path
from .shards import check_manifest, verify_shard
from ...nets import make_net, param_layout, sized_variants
from ...gsam import GSAMSettings
from .difficulty import CURRICULA, Curriculum, ScoreSettings

EXPERT_OPTIMIZERS = ("sgd", "gsam")
SGD = {"kind": "sgd"}  # the manifest's optimizer entry of plain experts (absent in folders made before GSAM)


FORMAT = "datadistill.experts"
FORMAT_VERSION = "1"
SHARD_FORMAT = "datadistill.expert"
MANIFEST = "manifest.json"
ZCA_FILE = "zca.safetensors"
SCORES_FILE = "el2n.safetensors"



@dataclass
class ExpertSettings:
    """How the experts are trained. Defaults: the authors' buffer.py (see presets/mtt.yaml); the
    curriculum fields: PAD's buffer_CL.py (see presets/pad.yaml)."""

    dataset: str = option(help="mnist-5k, mnist, fashion_mnist, cifar10, cifar100, svhn, folder:PATH")
    num_experts: int = option(100, name="--experts", metavar="N", help="number of experts (overrides the preset)")
    epochs: int = option(50, help="epochs per expert (overrides the preset)")
    model: str = option("convnet", help="network (default convnet)")
    model_args: dict[str, Any] = option(factory=dict, name="--model-arg", metavar="KEY=VALUE",
                                        help="a network variant, e.g. width=64 (repeatable)")
    zca: bool = option(False, help="train on ZCA-whitened images (default: the preset's; CIFAR on)")
    zca_eps: float = option(DEFAULT_EPS, help="ZCA regularization (default 0.1)")
    lr_teacher: float = option(0.01, help="experts' SGD learning rate (default 0.01)")
    batch_size: int = option(256, help="experts' batch size (default 256)")
    dsa_strategy: str = option(DEFAULT_STRATEGY, metavar="OPS", help="DSA transforms joined by _ (none: no augmentation)")
    dsa_digit_rule: bool = option(True, help="drop flip on digit datasets (augment.strategy_for); "
                                             "--no-dsa-digit-rule: the strategy as given (the reference)")
    seed: int = option(0, help="seed (default 0); expert i depends only on it and i")
    # the experts' optimizer: plain SGD (MTT's buffer.py) or GSAM around it (DATM's buffer_FTD.py)
    optimizer: str = option("sgd", choices=EXPERT_OPTIMIZERS,
                            help="sgd (default: MTT's experts) or gsam (sharpness-aware, as DATM's experts: "
                                 "--rho, --gsam-alpha, --adaptive)")
    rho: float = option(GSAMSettings.rho, help="gsam: perturbation radius (default 2.0, DATM's)")
    gsam_alpha: float = option(GSAMSettings.alpha, help="gsam: weight of the orthogonal descent (default 0.4, DATM's)")
    adaptive: bool = option(GSAMSettings.adaptive, help="gsam: perturbation scaled by the weights (default on, DATM's)")
    # PAD's data scheduler ("none": every epoch on the whole training split, as MTT); its settings'
    # defaults from Curriculum (one place for the authors' values)
    curriculum: str = option("none", choices=CURRICULA,
                             help="el2n: PAD's data scheduler (easy samples first by EL2N, harder ones added, easiest "
                                  "removed later; presets/pad.yaml); none (default): all samples every epoch, as MTT")
    init_ratio: float = option(Curriculum.init_ratio, help="curriculum: share of each class (easiest) at epoch 0")
    add_end_epoch: int = option(Curriculum.add_end_epoch, help="curriculum: epoch by which all samples are in")
    rm_epoch_first: int = option(Curriculum.rm_epoch_first,
                                 help="curriculum: after this epoch the easiest --rm-ratio-first go")
    rm_easy_ratio_first: float = option(Curriculum.rm_easy_ratio_first, name="--rm-ratio-first",
                                        help="curriculum: share removed first")
    rm_epoch_second: int = option(Curriculum.rm_epoch_second,
                                  help="curriculum: after this epoch the easiest --rm-ratio-second go")
    rm_easy_ratio_second: float = option(Curriculum.rm_easy_ratio_second, name="--rm-ratio-second",
                                         help="curriculum: share removed second")
    scores: str | None = option(None, metavar="FILE",
                                help="curriculum: EL2N scores file (from `datadistill difficulty`; computed and written "
                                     "there if absent; default: computed into the experts folder)")
    score_nets: int = option(10, help="curriculum: EL2N networks averaged (default: the preset's)")
    score_epochs: int = option(20, help="curriculum: epochs before EL2N scoring (default: the preset's)")
    sources: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for name in ("num_experts", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"experts: {name} must be a positive integer, got {v!r}")
        if not self.lr_teacher > 0:
            raise ConfigError(f"experts: lr_teacher must be > 0, got {self.lr_teacher}")
        if not isinstance(self.zca, bool):
            raise ConfigError(f"experts: zca must be true or false, got {self.zca!r}")
        if not isinstance(self.dsa_digit_rule, bool):
            raise ConfigError(f"experts: dsa_digit_rule must be true or false, got {self.dsa_digit_rule!r}")
        if not self.zca_eps > 0:
            raise ConfigError(f"experts: zca_eps must be > 0, got {self.zca_eps}")
        if self.optimizer not in EXPERT_OPTIMIZERS:
            raise ConfigError(f"experts: optimizer must be one of {', '.join(EXPERT_OPTIMIZERS)}, got {self.optimizer!r}")
        if self.optimizer == "gsam":
            if not self.rho > 0:
                raise ConfigError(f"experts: rho must be > 0, got {self.rho}")
            if not 0 <= self.gsam_alpha <= 1:
                raise ConfigError(f"experts: gsam_alpha must be in [0, 1], got {self.gsam_alpha}")
            if not isinstance(self.adaptive, bool):
                raise ConfigError(f"experts: adaptive must be true or false, got {self.adaptive!r}")
        if self.curriculum not in CURRICULA:
            raise ConfigError(f"experts: curriculum must be one of {', '.join(CURRICULA)}, got {self.curriculum!r}")
        if self.curriculum != "none":
            self.curriculum_settings().validate()
            self.score_settings().validate()

    def curriculum_settings(self) -> Curriculum:
        return Curriculum(self.init_ratio, self.add_end_epoch, self.rm_epoch_first, self.rm_easy_ratio_first,
                          self.rm_epoch_second, self.rm_easy_ratio_second)

    def gsam_settings(self) -> GSAMSettings | None:
        """GSAM's settings (None: plain SGD)."""
        return GSAMSettings(self.rho, self.gsam_alpha, self.adaptive) if self.optimizer == "gsam" else None

    def score_settings(self) -> ScoreSettings:
        """EL2N scoring with the experts' network, batch size and seed."""
        return ScoreSettings(num_nets=self.score_nets, epochs=self.score_epochs, model=self.model,
                             model_args=dict(self.model_args), batch_size=self.batch_size, seed=self.seed)


def expert_settings(dataset: str, preset: str = "quick", **overrides: Any) -> ExpertSettings:
    """ExpertSettings for `dataset`: defaults < the `experts` rules of presets/mtt.yaml (then, with
    ``curriculum="el2n"``, those of presets/pad.yaml) < overrides (None values are ignored, so
    unset CLI flags keep the preset)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    rules = list((load_preset_rules("mtt").get("experts") or {}).get(preset) or [])
    if overrides.get("curriculum") not in (None, "none"):
        rules += (load_preset_rules("pad").get("experts") or {}).get(preset) or []
    values, sources = apply_rules(rules, dataset, 0)
    merge_values(values, {k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(ExpertSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown experts option(s) {unknown}; valid: {sorted(known - {'sources'})}")
    settings = ExpertSettings(**{**values, "dataset": dataset, "sources": sources})
    settings.validate()
    return settings


def resolved_model_args(model: str, model_args: dict | None, im_size) -> dict:
    """The network's full variant set as built at `im_size` (`nets.sized_variants`), as JSON
    stores it: {} and {"width": 128} compare equal for a ConvNet, and so do depth None and the
    depth it means at this size (folders made before the depth followed the size record 3)."""
    return json.loads(json.dumps(sized_variants(model, im_size, model_args), default=str))


def identity_of(settings: ExpertSettings, spec: DatasetSpec, train_images: int) -> dict:
    """Everything a trajectory depends on (what must match to resume a folder)."""
    strategy = (strategy_for(spec.name, settings.dsa_strategy, settings.dsa_digit_rule)
                if settings.dsa_strategy not in ("", "none") else "none")
    return {
        "dataset": spec.to_dict(),
        "train_images": int(train_images),
        "model": settings.model.lower(),
        "model_args": resolved_model_args(settings.model, settings.model_args, spec.im_size),
        "augmentation": {"kind": "dsa" if strategy != "none" else "none", "strategy": strategy,
                         "mode": "single", "per_sample": True},
        "zca": {"enabled": settings.zca, "eps": settings.zca_eps if settings.zca else None,
                "fitted_on": "training split, [0, 1] pixels (normalization folded in)" if settings.zca else None},
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "epochs": settings.epochs,
        "lr_teacher": settings.lr_teacher,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "lr_decay": None,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        # only with GSAM or a curriculum, so folders of plain (MTT) experts keep their identity and fingerprint
        **({"optimizer": {"kind": "gsam", "rho": settings.rho, "alpha": settings.gsam_alpha,
                          "adaptive": settings.adaptive}} if settings.optimizer == "gsam" else {}),
        **({"curriculum": {"kind": settings.curriculum, **asdict(settings.curriculum_settings())}}
           if settings.curriculum != "none" else {}),
    }


def fingerprint_of(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_name(i: int) -> str:
    return f"expert_{i:04d}.safetensors"


def read_manifest(directory: Path) -> dict | None:
    """The experts folder's manifest (None when there is none), every field the loaders use
    checked; see `Artifact.read_manifest`."""
    m = Experts.read_manifest(directory)
    if m is not None:
        check_manifest(Path(directory) / MANIFEST, m)
    return m


def save_zca(path: Path, zca: dict[str, torch.Tensor], fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in zca.items()}, str(tmp),
                  metadata={"format": "datadistill.zca", "experts": fingerprint})


def load_zca(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            zca = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: unreadable ZCA file ({e}); delete the experts folder and train again") from e
    if set(zca) != {"mean", "transform", "inverse"}:
        raise FormatError(f"{path}: a ZCA file holds mean, transform and inverse; found {sorted(zca)}")
    return zca


def jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


@register_artifact
class Experts(Artifact):
    """A folder of finished experts (an artifact: `datadistill experts` makes it, `--experts DIR`
    names it). Trajectories stay on disk: `params(i, epoch)` reads one row."""

    kind: ClassVar[str] = "experts"
    description: ClassVar[str] = "expert trajectories"
    command: ClassVar[str] = "datadistill experts"
    format_version: ClassVar[str] = FORMAT_VERSION

    def __init__(self, directory: Path, manifest: dict, files: list[Path]):
        super().__init__(directory, manifest)
        self.files = files

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "Experts":
        return open_experts(directory)

    @classmethod
    def make_hint(cls, cfg) -> str:
        return f"datadistill experts --dataset {cfg.dataset} --out EXPERTS_DIR{' --zca' if cfg.zca else ''}"

    def check(self, cfg, spec: DatasetSpec) -> None:
        check_experts(self, spec, cfg.model, cfg.model_args, cfg.zca)

    @property
    def num_experts(self) -> int:
        return len(self.files)

    @property
    def epochs(self) -> int:
        return int(self.manifest["epochs"])

    @property
    def num_params(self) -> int:
        return int(self.manifest["num_params"])

    @property
    def zca(self) -> dict[str, torch.Tensor] | None:
        if not self.manifest["zca"]["enabled"]:
            return None
        return load_zca(self.directory / ZCA_FILE)

    def params(self, i: int, epoch: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Expert i's flat parameter vector after `epoch` epochs (0: its initialization)."""
        if not 0 <= epoch <= self.epochs:
            raise IndexError(f"epoch {epoch} is outside the experts' 0..{self.epochs}")
        with safe_open(str(self.files[i]), framework="pt", device="cpu") as f:
            row = f.get_slice("trajectory")[epoch : epoch + 1]
        return row.reshape(-1).to(device)

    def trajectory(self, i: int) -> torch.Tensor:
        """Expert i's whole trajectory, (epochs + 1, P)."""
        with safe_open(str(self.files[i]), framework="pt", device="cpu") as f:
            return f.get_tensor("trajectory")


def open_experts(directory: str | os.PathLike) -> Experts:
    """The finished experts of a folder, each shard's header checked and its data against its checksum."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FormatError(
            f"{directory}: no experts there (no {MANIFEST}); create them with "
            f"`datadistill experts --dataset DATASET --out {directory}`"
        )
    entries = sorted(manifest.get("experts", []), key=lambda e: e["index"])
    if not entries:
        raise FormatError(f"{directory}: the folder holds no finished expert yet; run `datadistill experts` to completion")
    want = (int(manifest["epochs"]) + 1, int(manifest["num_params"]))
    files = []
    for e in entries:
        path = directory / e["file"]
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                shape = tuple(f.get_slice("trajectory").get_shape())
        except (SafetensorError, OSError, ValueError) as err:
            raise FormatError(f"{path}: unreadable expert shard ({err}); delete it and run `datadistill experts` again") from err
        if meta.get("format") != SHARD_FORMAT or meta.get("experts") != manifest["fingerprint"]:
            raise FormatError(f"{path}: this shard does not belong to the experts of {directory / MANIFEST}")
        if shape != want:
            raise FormatError(f"{path}: trajectory has shape {shape}, the manifest says {want}")
        verify_shard(path)
        files.append(path)
    return Experts(directory, manifest, files)


def load_experts(
    directory: str | os.PathLike,
    dataset_spec: DatasetSpec,
    model: str,
    model_args: dict | None = None,
    zca: bool = False,
) -> Experts:
    """The experts of `directory`, after checking that they were trained on `dataset_spec` (name,
    shape, classes, normalization) with the network `model(**model_args)` and the same ZCA choice.
    Raises ConfigError naming every difference."""
    ex = open_experts(directory)
    check_experts(ex, dataset_spec, model, model_args, zca)
    return ex


def check_experts(ex: Experts, dataset_spec: DatasetSpec, model: str, model_args: dict | None, zca: bool) -> None:
    """ConfigError naming every difference between the experts `ex` and a run on `dataset_spec`
    with the network `model(**model_args)` and ZCA `zca`, with the command that makes matching ones."""
    directory = ex.directory
    m = ex.manifest
    diffs = dataset_differences(DatasetSpec.from_dict(m["dataset"]), dataset_spec, "experts")
    if str(m["model"]).lower() != str(model).lower():
        diffs.append(f"model: experts {m['model']!r}, this run {model!r}")
    else:
        mine = resolved_model_args(model, model_args, dataset_spec.im_size)
        theirs = resolved_model_args(m["model"], m["model_args"], m["dataset"]["im_size"])
        for k in sorted(set(mine) | set(theirs)):
            if mine.get(k) != theirs.get(k):
                diffs.append(f"model {k}: experts {theirs.get(k)!r}, this run {mine.get(k)!r}")
    if bool(m["zca"]["enabled"]) != bool(zca):
        diffs.append(f"ZCA: experts {'on' if m['zca']['enabled'] else 'off'}, this run {'on' if zca else 'off'}")
    if diffs:
        hint = (f"datadistill experts --dataset {dataset_spec.name} --model {model}"
                + "".join(f" --model-arg {k}={v}" for k, v in (model_args or {}).items())
                + (" --zca" if zca else " --no-zca") + " --out NEW_DIR")
        raise ConfigError(f"the experts in {directory} do not match this run: {'; '.join(diffs)}. "
                          f"Train matching experts with `{hint}`")
    net = make_net(model, dataset_spec.channels, dataset_spec.num_classes, dataset_spec.im_size, **(model_args or {}))
    layout = [[s.name, list(s.shape)] for s in param_layout(net)]
    if layout != m["param_layout"]:
        raise ConfigError(f"the experts in {directory} have another parameter layout than {model} here "
                          "(a different datadistill version?); train them again")


def stored_zca(
    directory: str | os.PathLike, dataset_spec: DatasetSpec, model: str, model_args: dict | None = None
) -> dict[str, torch.Tensor]:
    """The ZCA whitening the experts of `directory` were trained under: a run that matches them
    must whiten its data with exactly this one. The experts are checked as by `load_experts` with
    ZCA on (a ConfigError names what differs, e.g. experts trained without ZCA)."""
    zca = load_experts(directory, dataset_spec, model, model_args, zca=True).zca
    assert zca is not None
    return zca
