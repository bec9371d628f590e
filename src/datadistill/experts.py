"""Expert trajectories for trajectory matching (MTT, PAD): train them, store them, load them.

An *expert* is a network trained on the real training split; its *trajectory* is its flat
parameter vector (`nets.flat_params`) at the start and after every epoch. MTT (Cazenavette et
al., CVPR 2022) starts a student from an expert's parameters at epoch t and asks the synthetic
set to bring it, in a few steps, to where the expert was at epoch t + M.

Training follows the authors' ``buffer.py``: SGD with lr_teacher 0.01, no momentum, no weight
decay, no lr decay, batch 256, DSA augmentation with per-sample random values (one transform per
batch, as their ``DiffAugment`` in mode 'S'), ConvNet. It goes through the one training loop,
`train.train_model`, with an `on_epoch_end` callback that records the parameters.

A folder of experts::

    manifest.json            what they are (dataset, network, augmentation, ZCA, normalization,
                             epochs, lr, batch, seed), and per finished expert: file, test
                             accuracy, seconds, bytes
    zca.safetensors          the ZCA whitening the experts were trained under (only with ZCA)
    expert_0000.safetensors  tensor ``trajectory`` (epochs + 1, P) float32, plus metadata
    expert_0001.safetensors  ...

Each shard is written atomically, then the manifest is rewritten atomically; the manifest is
the record of which experts are finished. Running again on the folder trains only the experts
it does not list (a shard without a manifest entry, e.g. from a run killed between the two
writes, is trained again and replaced; leftover temporary files are removed). Expert i draws
all its randomness from ``make_generator(seed, "expert", i)``, so which experts were trained
in which run does not matter. The experts' test accuracy is a report only: nothing selects on it.

PAD's experts (``curriculum="el2n"``, `datadistill experts --curriculum el2n`) learn under a data
scheduler (`difficulty.Curriculum`): each epoch trains on a per-class share of the training split
ordered by EL2N difficulty (easy first), which grows to all of it and later drops the easiest
samples. The scores are computed once (or read from `--scores FILE`) and copied into the folder
(``el2n.safetensors``); the manifest's ``curriculum`` entry holds the scheduler's settings, the
scores' digest and settings, and the per-epoch schedule (stage, share, samples used). The
experts' SGD has no momentum, weight decay or lr decay, so training epoch by epoch on a changing
subset (one `train_model` call per epoch) is the same loop as one call over all epochs.

Under torchrun (`dist.init_from_env`), the experts still to train are split over the processes
(`dist.shard`); process 0 alone prepares the folder (ZCA, scores, manifest) before a barrier and
lists the other processes' shards in the manifest after one. Each expert draws only from its own
generator, so the files are those of a single-process run. Without a process group nothing changes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import dist
from ._version import __version__
from .augment import DEFAULT_STRATEGY, DSA, strategy_for
from .config import PRESETS, _matches, _merge, load_preset_rules
from .data import DatasetSpec, DatasetSplits, ImageData, load_dataset
from .data.zca import DEFAULT_EPS, fit_zca, whiten
from .difficulty import (
    CURRICULA,
    Curriculum,
    Scores,
    ScoreSettings,
    class_orders,
    compute_scores,
    curriculum_indices,
    describe_schedule,
    load_scores,
    read_scores,
    save_scores,
    schedule_table,
)
from .errors import ConfigError, FormatError
from .fileio import atomic_path, write_json
from .nets import flat_params, make_net, param_layout, variants_of
from .rng import make_generator, resolve_device
from .train import accuracy, train_model

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

    dataset: str
    num_experts: int = 100
    epochs: int = 50
    model: str = "convnet"
    model_args: dict[str, Any] = field(default_factory=dict)
    zca: bool = False
    zca_eps: float = DEFAULT_EPS
    lr_teacher: float = 0.01
    batch_size: int = 256
    dsa_strategy: str = DEFAULT_STRATEGY  # "none": no augmentation
    dsa_digit_rule: bool = True  # drop flip on digit datasets (augment.strategy_for); False: as given (the reference)
    seed: int = 0
    # PAD's data scheduler ("none": every epoch on the whole training split, as MTT)
    curriculum: str = "none"  # none | el2n
    # its settings, defaults from Curriculum (one place for the authors' values)
    init_ratio: float = Curriculum.init_ratio
    add_end_epoch: int = Curriculum.add_end_epoch
    rm_epoch_first: int = Curriculum.rm_epoch_first
    rm_easy_ratio_first: float = Curriculum.rm_easy_ratio_first
    rm_epoch_second: int = Curriculum.rm_epoch_second
    rm_easy_ratio_second: float = Curriculum.rm_easy_ratio_second
    scores: str | None = None  # EL2N scores file to use (computed there if absent); None: the folder's
    score_nets: int = 10  # EL2N: networks averaged
    score_epochs: int = 20  # EL2N: epochs each network trains before scoring
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
        if self.curriculum not in CURRICULA:
            raise ConfigError(f"experts: curriculum must be one of {', '.join(CURRICULA)}, got {self.curriculum!r}")
        if self.curriculum != "none":
            self.curriculum_settings().validate()
            self.score_settings().validate()

    def curriculum_settings(self) -> Curriculum:
        return Curriculum(self.init_ratio, self.add_end_epoch, self.rm_epoch_first, self.rm_easy_ratio_first,
                          self.rm_epoch_second, self.rm_easy_ratio_second)

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
    values: dict = {}
    sources: list[str] = []
    for rule in rules:
        if _matches(rule.get("match"), dataset, 0):
            _merge(values, rule.get("set", {}))
            if rule.get("source"):
                sources.append(str(rule["source"]))
    _merge(values, {k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(ExpertSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown experts option(s) {unknown}; valid: {sorted(known - {'sources'})}")
    settings = ExpertSettings(**{**values, "dataset": dataset, "sources": sources})
    settings.validate()
    return settings


# ------------------------------------------------------------------------------------ identity
def resolved_model_args(model: str, model_args: dict | None) -> dict:
    """The network's full variant set: its defaults overridden by `model_args` (so that {} and
    {"width": 128} compare equal for a ConvNet)."""
    return {**variants_of(model), **(model_args or {})}


def _identity(settings: ExpertSettings, spec: DatasetSpec, train_images: int) -> dict:
    """Everything a trajectory depends on (what must match to resume a folder)."""
    strategy = (strategy_for(spec.name, settings.dsa_strategy, settings.dsa_digit_rule)
                if settings.dsa_strategy not in ("", "none") else "none")
    return {
        "dataset": spec.to_dict(),
        "train_images": int(train_images),
        "model": settings.model.lower(),
        "model_args": resolved_model_args(settings.model, settings.model_args),
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
        # only with a curriculum, so folders of plain (MTT) experts keep their identity and fingerprint
        **({"curriculum": {"kind": settings.curriculum, **asdict(settings.curriculum_settings())}}
           if settings.curriculum != "none" else {}),
    }


def _fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_name(i: int) -> str:
    return f"expert_{i:04d}.safetensors"


# ------------------------------------------------------------------------------------ training
@dataclass
class ExpertsReport:
    directory: Path
    num_experts: int
    trained_now: list[int]
    skipped: list[int]
    test_accuracies: list[float]
    seconds: list[float]
    disk_bytes: int
    epochs: int
    num_params: int
    curriculum: dict | None = None  # the manifest's curriculum entry (PAD's experts), else None

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.test_accuracies)) if self.test_accuracies else math.nan

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.test_accuracies)) if self.test_accuracies else math.nan

    def summary(self) -> str:
        mb = self.disk_bytes / 2**20
        per = float(np.mean(self.seconds)) if self.seconds else math.nan
        cur = f", {self.curriculum['kind']} curriculum" if self.curriculum else ""
        return (
            f"{self.num_experts} experts of {self.epochs} epochs{cur} in {self.directory} "
            f"({len(self.trained_now)} trained now, {len(self.skipped)} already there): test accuracy "
            f"{self.accuracy_mean:.2f} +- {self.accuracy_std:.2f} % (population std over the experts; a report, "
            f"nothing selects on it), {per:.1f} s per expert, {mb:.1f} MiB on disk "
            f"({self.num_params:,} parameters x {self.epochs + 1} checkpoints per expert)"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["directory"] = str(self.directory)
        d.update(accuracy_mean=self.accuracy_mean, accuracy_std=self.accuracy_std)
        return d


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def _read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: unreadable experts manifest ({e})") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise FormatError(f"{path}: not a datadistill experts manifest (no '{FORMAT}' format tag)")
    if m.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: experts format version {m.get('format_version')!r}; this datadistill reads {FORMAT_VERSION}"
        )
    return m


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of a killed run (atomic writes that never reached their rename)."""
    for p in directory.glob(".*.tmp"):
        if p.name.startswith((".expert_", f".{MANIFEST}.", f".{ZCA_FILE}.", f".{SCORES_FILE}.")):
            p.unlink(missing_ok=True)


def _save_zca(path: Path, zca: dict[str, torch.Tensor], fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in zca.items()}, str(tmp),
                  metadata={"format": "datadistill.zca", "experts": fingerprint})


def _load_zca(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            zca = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: unreadable ZCA file ({e}); delete the experts folder and train again") from e
    if set(zca) != {"mean", "transform", "inverse"}:
        raise FormatError(f"{path}: a ZCA file holds mean, transform and inverse; found {sorted(zca)}")
    return zca


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _curriculum_diff(theirs: Any, mine: Any) -> str:
    """What differs between two curriculum entries, briefly (the schedule is a long table)."""
    if not isinstance(theirs, dict) or not isinstance(mine, dict):
        return (f"curriculum: folder {theirs['kind'] if isinstance(theirs, dict) else 'none'}, "
                f"asked {mine['kind'] if isinstance(mine, dict) else 'none'}")
    out = []
    for k in sorted(set(theirs) | set(mine)):
        if theirs.get(k) == mine.get(k):
            continue
        if k == "scores":
            a, b = theirs.get(k) or {}, mine.get(k) or {}
            out.append(f"EL2N scores: folder {a.get('digest')} ({a.get('settings')}), asked {b.get('digest')} "
                       f"({b.get('settings')})")
        elif k == "schedule":
            out.append("curriculum schedule differs")
        else:
            out.append(f"curriculum {k}: folder {theirs.get(k)!r}, asked {mine.get(k)!r}")
    return "; ".join(out)


def _check_same_experts(existing: dict, identity: dict, out: Path, with_scores: bool) -> None:
    """Raise ConfigError naming every difference between the folder's experts and the asked ones.
    `with_scores` False leaves the curriculum's scores and schedule out (they are known later)."""
    keys = list(identity) + (["curriculum"] if "curriculum" in existing and "curriculum" not in identity else [])
    diffs = []
    for k in keys:
        mine, theirs = _jsonable(identity.get(k)), existing.get(k)
        if k == "curriculum":
            if not with_scores:
                mine = {a: b for a, b in mine.items() if a not in ("scores", "schedule")} if mine else mine
                theirs = {a: b for a, b in theirs.items() if a not in ("scores", "schedule")} if theirs else theirs
            if mine != theirs:
                diffs.append(_curriculum_diff(theirs, mine))
        elif mine != theirs:
            diffs.append(f"{k}: folder {theirs!r}, asked {identity[k]!r}")
    if diffs:
        raise ConfigError(
            f"{out} holds experts trained with other settings ({'; '.join(diffs)}); use another --out, "
            "or the same settings to add experts to it"
        )


def _scores_for(settings: ExpertSettings, out: Path, train: ImageData, dev: torch.device, progress: bool,
                log: Callable[[str], None]) -> Scores:
    """The EL2N scores the curriculum orders by: `settings.scores` (read, or computed and written
    there when the file does not exist), else the folder's copy, else computed now."""
    folder_copy = out / SCORES_FILE
    if settings.scores:
        path = Path(settings.scores)
        if path.exists():
            s = load_scores(path, train)
            log(f"EL2N scores: {path} ({len(s.values)} samples)")
            return s
        s = compute_scores(train, settings.score_settings(), device=dev, progress=progress, log=log)
        save_scores(path, s)
        log(f"EL2N scores computed in {s.seconds:.0f} s, written to {path}")
        return s
    if folder_copy.exists():
        s = load_scores(folder_copy, train)
        asked = _jsonable(asdict(settings.score_settings()))
        if s.settings != asked:
            log(f"EL2N scores: the folder's ({folder_copy}, {s.settings.get('num_nets')} networks x "
                f"{s.settings.get('epochs')} epochs) are kept; the experts there were trained with them")
        return s
    s = compute_scores(train, settings.score_settings(), device=dev, progress=progress, log=log)
    log(f"EL2N scores computed in {s.seconds:.0f} s ({settings.score_nets} networks x {settings.score_epochs} epochs)")
    return s


def _curriculum_entry(settings: ExpertSettings, scores: Scores, orders: list[torch.Tensor]) -> dict:
    schedule = schedule_table(orders, settings.epochs, settings.curriculum_settings())
    return {"kind": settings.curriculum, **asdict(settings.curriculum_settings()),
            "scores": {"file": SCORES_FILE, "digest": scores.digest, "settings": scores.settings,
                       "data_fingerprint": scores.data_fingerprint},
            "schedule": schedule}


def _entry_from_shard(out: Path, i: int, fingerprint: str) -> dict | None:
    """The manifest entry of expert i from its shard's metadata (written by another process)."""
    path = out / shard_name(i)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    if meta.get("experts") != fingerprint or meta.get("index") != str(i):
        return None
    return {"index": i, "file": path.name, "test_accuracy": float(meta["test_accuracy"]),
            "seconds": float(meta["seconds"]), "bytes": path.stat().st_size}


def _prepare_folder(settings: ExpertSettings, out: Path, data: DatasetSplits, identity: dict, probe: torch.nn.Module,
                    dev: torch.device, progress: bool, log: Callable[[str], None]) -> dict:
    """Check the folder's experts against `identity`, compute or take the EL2N scores (curriculum),
    fit or keep the ZCA, write and return the manifest, with the finished experts whose shards exist.
    Adds the curriculum's scores and schedule to `identity`."""
    existing = _read_manifest(out)
    if existing is not None:
        _check_same_experts(existing, identity, out, with_scores=False)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    if settings.curriculum != "none":
        scores = _scores_for(settings, out, data.train, dev, progress, log)
        identity["curriculum"] = _curriculum_entry(
            settings, scores, class_orders(scores.values, data.train.labels, data.spec.num_classes))
        if existing is not None:
            _check_same_experts(existing, identity, out, with_scores=True)
        copy = out / SCORES_FILE
        if not copy.exists() or read_scores(copy).digest != scores.digest:
            save_scores(copy, scores)
    fingerprint = existing["fingerprint"] if existing is not None else _fingerprint(identity)
    if settings.zca and (existing is None or not (out / ZCA_FILE).exists()):
        t0 = time.perf_counter()
        _save_zca(out / ZCA_FILE, fit_zca(data.train, eps=settings.zca_eps), fingerprint)
        log(f"fitted ZCA whitening on {len(data.train)} training images in {time.perf_counter() - t0:.1f} s")
    manifest = existing or {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "fingerprint": fingerprint,
        **_jsonable(identity),
        "num_params": sum(p.numel() for p in probe.parameters()),
        "param_layout": [[s.name, list(s.shape)] for s in param_layout(probe)],
        "zca_file": ZCA_FILE if settings.zca else None,
        "experts": [],
        "sources": settings.sources,
    }
    manifest["num_experts"] = settings.num_experts
    manifest["experts"] = sorted((e for e in manifest["experts"] if (out / e["file"]).exists()),
                                 key=lambda e: e["index"])
    write_json(out / MANIFEST, manifest)
    return manifest


def train_experts(
    settings: ExpertSettings,
    out: str | os.PathLike,
    *,
    data: DatasetSplits | None = None,
    data_root: str | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    log: Callable[[str], None] = _log,
) -> ExpertsReport:
    """Train `settings.num_experts` experts into the folder `out` (resuming it if it exists).

    Under torchrun the experts still to train are split over the processes (see the module doc)."""
    settings.validate()
    out = Path(out)
    dev = dist.process_device(resolve_device(device))
    dist.init_from_env(dev)
    main = dist.is_main()
    if data is None:
        data = load_dataset(settings.dataset, data_root, progress=progress)
    spec = data.spec
    identity = _identity(settings, spec, len(data.train))
    probe = make_net(settings.model, spec.channels, spec.num_classes, spec.im_size, **settings.model_args)
    num_params = sum(p.numel() for p in probe.parameters())
    # Process 0 prepares the folder (an error there is raised on every process); all then read it.
    manifest = dist.from_main(lambda: _prepare_folder(settings, out, data, identity, probe, dev, progress, log))
    fingerprint = manifest["fingerprint"]
    done = {int(e["index"]) for e in manifest["experts"]}
    curriculum = settings.curriculum_settings() if settings.curriculum != "none" else None
    train, test = data.train, data.test
    orders = None
    if curriculum is not None:
        orders = class_orders(load_scores(out / SCORES_FILE, train).values, train.labels, spec.num_classes)
    if settings.zca:
        zca = _load_zca(out / ZCA_FILE)
        train, test = whiten(train, zca), whiten(test, zca)

    if curriculum is not None and main:
        log(f"curriculum ({settings.curriculum}): {describe_schedule(manifest['curriculum']['schedule'], len(train))}")
    strategy = identity["augmentation"]["strategy"]
    dsa = DSA(strategy) if strategy != "none" else None
    aug = (lambda x, g: dsa(x, dsa.sample(x.shape[0], g, siamese=False))) if dsa is not None else None
    x, y = train.images.to(dev), train.labels.to(dev)
    tx, ty = test.images.to(dev), test.labels.to(dev)
    trained, skipped = [], sorted(i for i in done if i < settings.num_experts)
    todo = [i for i in range(settings.num_experts) if i not in done]
    mine = dist.shard(todo)
    if skipped and main:
        log(f"{out}: {len(skipped)} expert(s) already trained, {len(todo)} to go")
    if dist.world_size() > 1:
        log(f"process {dist.rank()} of {dist.world_size()}: experts {mine}")
    for i in tqdm(mine, desc=f"experts {spec.name}", disable=not progress, unit="expert"):
        g = make_generator(settings.seed, "expert", i)
        net = make_net(settings.model, spec.channels, spec.num_classes, spec.im_size, generator=g,
                       **settings.model_args).to(dev)
        checkpoints = [flat_params(net).float().cpu()]
        kw = dict(lr=settings.lr_teacher, generator=g, batch_size=settings.batch_size, momentum=0.0, weight_decay=0.0,
                  decay_at=(), aug=aug, progress=progress,
                  on_epoch_end=lambda ep, n: checkpoints.append(flat_params(n).float().cpu()))
        if orders is None:
            seconds = train_model(net, x, y, epochs=settings.epochs, desc=f"expert {i}", **kw).seconds
        else:  # one epoch at a time on the scheduler's subset (plain SGD: the same loop)
            seconds = 0.0
            for e in range(settings.epochs):
                idx = curriculum_indices(orders, e, curriculum).to(dev)
                seconds += train_model(net, x[idx], y[idx], epochs=1, desc=f"expert {i} epoch {e}", **kw).seconds
        acc = accuracy(net, tx, ty)
        traj = torch.stack(checkpoints)
        path = out / shard_name(i)
        meta = {"format": SHARD_FORMAT, "format_version": FORMAT_VERSION, "index": str(i),
                "experts": fingerprint, "epochs": str(settings.epochs), "num_params": str(num_params),
                "test_accuracy": repr(acc), "seconds": repr(seconds)}
        with atomic_path(path) as tmp:
            save_file({"trajectory": traj.contiguous()}, str(tmp), metadata=meta)
        trained.append(i)
        if main:
            manifest["experts"].append({"index": i, "file": path.name, "test_accuracy": acc, "seconds": seconds,
                                        "bytes": path.stat().st_size})
            manifest["experts"].sort(key=lambda e: e["index"])
            write_json(out / MANIFEST, manifest)
        log(f"expert {i}: test accuracy {acc:.2f} % after {settings.epochs} epochs ({seconds:.1f} s)")

    # -- process 0 lists the other processes' experts; everyone reports the finished folder --------
    dist.barrier()
    if dist.world_size() > 1:
        if main:
            listed = {e["index"] for e in manifest["experts"]}
            for i in todo:
                if i not in listed and (entry := _entry_from_shard(out, i, fingerprint)) is not None:
                    manifest["experts"].append(entry)
            manifest["experts"].sort(key=lambda e: e["index"])
            write_json(out / MANIFEST, manifest)
        dist.barrier()
        manifest = _read_manifest(out) or manifest
    listed = [e for e in manifest["experts"] if e["index"] < settings.num_experts]
    disk = sum(e["bytes"] for e in manifest["experts"]) + ((out / ZCA_FILE).stat().st_size if settings.zca else 0)
    if curriculum is not None:
        disk += (out / SCORES_FILE).stat().st_size
    return ExpertsReport(
        directory=out, num_experts=len(listed), trained_now=trained, skipped=skipped,
        test_accuracies=[e["test_accuracy"] for e in listed], seconds=[e["seconds"] for e in listed],
        disk_bytes=disk, epochs=settings.epochs, num_params=num_params, curriculum=manifest.get("curriculum"),
    )


# ------------------------------------------------------------------------------------ loading
@dataclass
class Experts:
    """A folder of finished experts. Trajectories stay on disk: `params(i, epoch)` reads one row."""

    directory: Path
    manifest: dict
    files: list[Path]

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
        return _load_zca(self.directory / ZCA_FILE)

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
    """The finished experts of a folder, with each shard's header checked (no data read)."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
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
    m = ex.manifest
    theirs = DatasetSpec.from_dict(m["dataset"])
    diffs = []
    if theirs.name != dataset_spec.name:
        diffs.append(f"dataset: experts {theirs.name!r}, this run {dataset_spec.name!r}")
    pairs = {
        "channels": (theirs.channels, dataset_spec.channels),
        "image size": (tuple(theirs.im_size), tuple(dataset_spec.im_size)),
        "classes": (theirs.num_classes, dataset_spec.num_classes),
        "normalization mean": (tuple(theirs.mean), tuple(float(v) for v in dataset_spec.mean)),
        "normalization std": (tuple(theirs.std), tuple(float(v) for v in dataset_spec.std)),
    }
    diffs += [f"dataset {k}: experts {a}, this run {b}" for k, (a, b) in pairs.items() if a != b]
    if str(m["model"]).lower() != str(model).lower():
        diffs.append(f"model: experts {m['model']!r}, this run {model!r}")
    else:
        mine = json.loads(json.dumps(resolved_model_args(model, model_args), default=str))
        for k in sorted(set(mine) | set(m["model_args"])):
            if mine.get(k) != m["model_args"].get(k):
                diffs.append(f"model {k}: experts {m['model_args'].get(k)!r}, this run {mine.get(k)!r}")
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
    return ex


def stored_zca(
    directory: str | os.PathLike, dataset_spec: DatasetSpec, model: str, model_args: dict | None = None
) -> dict[str, torch.Tensor]:
    """The ZCA whitening the experts of `directory` were trained under: a run that matches them
    must whiten its data with exactly this one. The experts are checked as by `load_experts` with
    ZCA on (a ConfigError names what differs, e.g. experts trained without ZCA)."""
    zca = load_experts(directory, dataset_spec, model, model_args, zca=True).zca
    assert zca is not None
    return zca
