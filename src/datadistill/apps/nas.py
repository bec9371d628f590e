"""Architecture-search proxy: does a synthetic set rank architectures as the real data does?

Protocol (the architecture-search experiment of the DC paper, Zhao, Mopuri & Bilen, ICLR 2021, and
of the DM paper, Zhao & Bilen, WACV 2023, on a small family of networks):
each ConvNet variant of a family is trained from scratch (the evaluation protocol,
`evaluate.evaluate` over `train.train_model`) once on the synthetic set and once on the real
training data (all of it, or a stratified subset of N images per class to bound the cost), and
each network is tested on the real **validation** split, never the test split: choosing an
architecture is a selection, and selections look only at validation data. Reported: each
variant's accuracy under both, the Spearman and Kendall rank correlations between the two
columns (`scipy.stats`), whether the variant that is best on the synthetic set is also best on
the real data (and its rank there), and the seconds each side took.

The family is a list of `make_net("convnet", ...)` keyword dicts. `default` varies one setting
at a time around the default ConvNet (width 128, depth 3, instance norm, ReLU, average pooling):
depth 1-4, width 32/64/128/256, norm none/batch/layer/instance/group, act relu/sigmoid/leakyrelu,
pool avg/max/none (15 networks). `small` does the same around a width-16, depth-2 ConvNet
(9 networks), for tests and quick CPU runs.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from ..data import DatasetSplits, ImageData, load_dataset
from ..errors import ConfigError
from ..evaluate import DEFAULT_LR, evaluate
from ..rng import make_generator, resolve_device
from ..synset import SyntheticSet

CONVNET_DEFAULT = {"width": 128, "depth": 3, "norm": "instance", "act": "relu", "pool": "avg"}
SMALL_BASE = {**CONVNET_DEFAULT, "width": 16, "depth": 2}


def _around(base: dict, changes: Sequence[tuple[str, object]]) -> list[dict]:
    """The base network, then one network per (key, value) change."""
    return [dict(base)] + [{**base, k: v} for k, v in changes]


FAMILIES: dict[str, list[dict]] = {
    "default": _around(CONVNET_DEFAULT, [
        ("depth", 1), ("depth", 2), ("depth", 4),
        ("width", 32), ("width", 64), ("width", 256),
        ("norm", "none"), ("norm", "batch"), ("norm", "layer"), ("norm", "group"),
        ("act", "sigmoid"), ("act", "leakyrelu"),
        ("pool", "max"), ("pool", "none"),
    ]),
    "small": _around(SMALL_BASE, [
        ("depth", 1), ("depth", 3),
        ("width", 8), ("width", 32),
        ("norm", "batch"), ("norm", "none"),
        ("act", "sigmoid"),
        ("pool", "max"),
    ]),
}
FAMILY_BASES = {"default": CONVNET_DEFAULT, "small": SMALL_BASE}


def family(name: str) -> list[dict]:
    """A copy of the named family's variant dicts."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown architecture family {name!r}; choose one of {', '.join(FAMILIES)}")
    return [dict(v) for v in FAMILIES[name]]


def variant_name(args: dict, base: dict | None = None) -> str:
    """`key=value` for each setting that differs from `base` (all settings without a base);
    `default` when nothing differs."""
    diff = {k: v for k, v in args.items() if base is None or base.get(k) != v}
    return ",".join(f"{k}={v}" for k, v in diff.items()) or "default"


# ------------------------------------------------------------------------------- pure metrics
def competition_ranks(values: Sequence[float]) -> list[int]:
    """Rank 1 = highest value; tied values share the best rank of the tie ("1224" ranking)."""
    v = list(values)
    return [1 + sum(1 for w in v if w > x) for x in v]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def rank_correlations(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b between two score lists (scipy.stats), with p-values.
    NaN when fewer than two scores or one list is constant (no ranking to compare)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"score lists differ in length: {a.shape[0]} vs {b.shape[0]}")
    nan = {"spearman": math.nan, "spearman_p": math.nan, "kendall": math.nan, "kendall_p": math.nan}
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on tiny samples; the numbers are still right
        rho = stats.spearmanr(a, b)
        tau = stats.kendalltau(a, b)
    return {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}


def best_agreement(syn_scores: Sequence[float], real_scores: Sequence[float]) -> dict:
    """Which variant each side would pick (the first of tied maxima), whether the pick on the
    synthetic side is best on the real side too (ties with the real best count as agreement),
    its rank on the real side (1 = best), and the regret: real best minus the real accuracy of
    the synthetic pick (percentage points)."""
    if len(syn_scores) != len(real_scores) or not syn_scores:
        raise ValueError("need two non-empty score lists of the same length")
    best_syn = int(np.argmax(syn_scores))
    best_real = int(np.argmax(real_scores))
    rank = competition_ranks(real_scores)[best_syn]
    return {
        "best_syn": best_syn,
        "best_real": best_real,
        "agree": rank == 1,
        "syn_best_real_rank": rank,
        "regret": float(max(real_scores) - real_scores[best_syn]),
    }


def stratified_subset(data: ImageData, per_class: int, generator: torch.Generator) -> ImageData:
    """`per_class` training images of every class (all of a class that has fewer), drawn without
    replacement from `generator`, ordered by class."""
    if per_class < 1:
        raise ConfigError(f"the real subset needs at least 1 image per class, got {per_class}")
    picks = []
    for idx in data.indices_per_class:
        perm = torch.randperm(idx.numel(), generator=generator)[:per_class]
        picks.append(idx[perm])
    return data.subset(torch.cat(picks))


# ------------------------------------------------------------------------------- the search
@dataclass
class VariantResult:
    name: str
    args: dict
    syn_accuracies: list[float]
    syn_mean: float
    syn_std: float
    syn_seconds: float  # wall seconds: training `runs` networks and testing them on val
    syn_train_flops: float  # per run
    real_accuracies: list[float]
    real_mean: float
    real_std: float
    real_seconds: float
    real_train_flops: float
    syn_rank: int = 0
    real_rank: int = 0


@dataclass
class NASResult:
    dataset: str
    method: str
    ipc: int
    family: str
    model: str
    split: str  # always "val": a selection never looks at the test split
    syn_images: int
    real_images: int
    real_subset: int | None  # images per class of the real side; None = the whole training split
    val_images: int
    val_subset: int | None  # images per class of the validation split used; None = all of it
    epochs_syn: int
    epochs_real: int
    runs: int
    aug_syn: str
    aug_real: str
    lr_syn: float
    lr_real: float
    seed: int
    device: str
    variants: list[VariantResult]
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float
    best_syn: str
    best_real: str
    agree: bool
    syn_best_real_rank: int
    regret: float
    syn_seconds: float
    real_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.real_seconds / self.syn_seconds if self.syn_seconds > 0 else math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        d["speedup"] = self.speedup
        for k in ("spearman", "spearman_p", "kendall", "kendall_p", "speedup"):
            d[k] = _nan_to_none(d[k])
        return d

    def table(self) -> str:
        head = (f"{'variant':<22}{'synthetic %':>14}{'rank':>6}{'real %':>14}{'rank':>6}"
                f"{'syn s':>9}{'real s':>9}")
        lines = [head, "-" * len(head)]
        for v in self.variants:
            lines.append(
                f"{v.name:<22}{v.syn_mean:>8.2f} +-{v.syn_std:>4.1f}{v.syn_rank:>6}"
                f"{v.real_mean:>8.2f} +-{v.real_std:>4.1f}{v.real_rank:>6}{v.syn_seconds:>9.1f}{v.real_seconds:>9.1f}"
            )
        fmt = lambda x: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"  # noqa: E731
        real_side = (f"{self.real_subset} real images per class ({self.real_images})" if self.real_subset
                     else f"the whole training split ({self.real_images} images)")
        lines += [
            "",
            f"accuracy on the validation split ({self.val_images} images; a selection, so not the test split); "
            f"{self.runs} run(s) per variant and side; "
            f"synthetic: {self.syn_images} images, {self.epochs_syn} epochs, aug {self.aug_syn}; "
            f"real: {real_side}, {self.epochs_real} epochs, aug {self.aug_real}",
            f"Spearman {fmt(self.spearman)} (p {fmt(self.spearman_p)}), Kendall {fmt(self.kendall)} "
            f"(p {fmt(self.kendall_p)}) over {len(self.variants)} variants",
            f"best on synthetic: {self.best_syn}; best on real: {self.best_real}; "
            + ("they agree" if self.agree else
               f"they disagree: the synthetic pick ranks {self.syn_best_real_rank} on real data "
               f"({self.regret:.2f} points below the real best)"),
            f"seconds: synthetic {self.syn_seconds:.1f}, real {self.real_seconds:.1f} ("
            + (f"the synthetic proxy is {self.speedup:.1f}x faster)" if self.speedup >= 1 else
               f"the synthetic proxy is not faster here: real/synthetic time {self.speedup:.2f})"),
        ]
        return "\n".join(lines)


def _resolve_variants(variants: str | Sequence[dict]) -> tuple[str, list[dict], dict | None]:
    if isinstance(variants, str):
        return variants, family(variants), FAMILY_BASES[variants]
    out = [dict(v) for v in variants]
    if not out:
        raise ConfigError("the architecture family is empty")
    return "custom", out, None


def architecture_search(
    syn: SyntheticSet,
    real_data: DatasetSplits | None = None,
    *,
    variants: str | Sequence[dict] = "default",
    real_subset: int | None = None,
    val_subset: int | None = None,
    epochs_syn: int = 300,
    epochs_real: int = 10,
    runs: int = 1,
    aug: str = "dsa",
    aug_real: str = "none",
    lr: float | None = None,
    lr_real: float = DEFAULT_LR,
    batch_size: int = 256,
    model: str = "convnet",
    seed: int = 0,
    data_root: str | None = None,
    device: str | torch.device = "auto",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> NASResult:
    """Rank the ConvNet variants of `variants` (a family name, or a list of `make_net` keyword
    dicts) by validation accuracy when trained on `syn` and when trained on real data.

    `real_data`: the splits of the set's dataset (default: loaded from `data_root`). Real side:
    the whole training split, or `real_subset` images per class drawn with a fixed generator.
    Synthetic side: `epochs_syn` epochs with augmentation `aug` at `lr` (default: the set's
    learned lr, else 0.01); real side: `epochs_real` epochs with `aug_real` at `lr_real`. Each
    variant is trained `runs` times per side (seeds as in `evaluate`); every network is tested on
    the validation split (all of it, or `val_subset` images per class drawn with a fixed
    generator, to bound the cost of testing)."""
    if runs < 1 or epochs_syn < 1 or epochs_real < 1:
        raise ConfigError("runs, epochs_syn and epochs_real must be >= 1")
    fam_name, fam, base = _resolve_variants(variants)
    names = [v.pop("name", None) or variant_name(v, base) for v in fam]
    if len(set(names)) != len(names):
        raise ConfigError(f"the architecture family has duplicate variants: {names}")
    spec = syn.spec
    if real_data is None:
        real_data = load_dataset(spec.name, data_root, image_size=spec.im_size, progress=progress)
    rspec = real_data.spec
    if rspec.num_classes != spec.num_classes or rspec.channels != spec.channels or tuple(rspec.im_size) != tuple(spec.im_size):
        raise ConfigError(f"the real data ({rspec.name}) does not match the set's dataset ({spec.name})")
    val = real_data.val
    if len(val) == 0:
        raise ConfigError(f"{rspec.name} has an empty validation split; architecture search selects on it")
    if val_subset is not None:
        val = stratified_subset(val, val_subset, make_generator(seed, "nas-val-subset"))
    train = real_data.train
    if real_subset is not None:
        train = stratified_subset(train, real_subset, make_generator(seed, "nas-real-subset"))
    dev = resolve_device(device)
    log = log or (lambda _m: None)
    notes = []
    if syn.soft:
        notes.append("the synthetic set has soft labels; the real side trains on hard labels")
    common = dict(model=model, runs=runs, test=val, split="val", device=dev, seed=seed,
                  batch_size=batch_size, progress=progress)

    rows: list[VariantResult] = []
    for name, args in zip(names, fam):
        t0 = time.perf_counter()
        rs = evaluate(syn, epochs=epochs_syn, lr=lr, aug=aug, model_args=args, **common)
        t1 = time.perf_counter()
        rr = evaluate(train, epochs=epochs_real, lr=lr_real, aug=aug_real, model_args=args, **common)
        t2 = time.perf_counter()
        rows.append(VariantResult(
            name=name, args=args, syn_accuracies=rs.accuracies, syn_mean=rs.mean, syn_std=rs.std,
            syn_seconds=t1 - t0, syn_train_flops=rs.flops.get("train_total", 0.0),
            real_accuracies=rr.accuracies, real_mean=rr.mean, real_std=rr.std,
            real_seconds=t2 - t1, real_train_flops=rr.flops.get("train_total", 0.0),
        ))
        log(f"{name}: synthetic {rs.mean:.2f}% ({t1 - t0:.1f} s), real {rr.mean:.2f}% ({t2 - t1:.1f} s)")
        lr_syn = rs.lr

    syn_scores = [r.syn_mean for r in rows]
    real_scores = [r.real_mean for r in rows]
    for r, a, b in zip(rows, competition_ranks(syn_scores), competition_ranks(real_scores)):
        r.syn_rank, r.real_rank = a, b
    corr = rank_correlations(syn_scores, real_scores)
    best = best_agreement(syn_scores, real_scores)
    if math.isnan(corr["spearman"]):
        notes.append("rank correlation undefined: fewer than two variants, or one side scored all variants the same")
    return NASResult(
        dataset=spec.name, method=str(syn.meta.get("method", "?")), ipc=syn.ipc, family=fam_name, model=model,
        split="val", syn_images=len(syn), real_images=len(train), real_subset=real_subset,
        val_images=len(val), val_subset=val_subset,
        epochs_syn=epochs_syn, epochs_real=epochs_real, runs=runs, aug_syn=aug, aug_real=aug_real,
        lr_syn=float(lr_syn), lr_real=float(lr_real), seed=seed, device=str(dev), variants=rows,
        spearman=corr["spearman"], spearman_p=corr["spearman_p"], kendall=corr["kendall"],
        kendall_p=corr["kendall_p"], best_syn=names[best["best_syn"]], best_real=names[best["best_real"]],
        agree=best["agree"], syn_best_real_rank=best["syn_best_real_rank"], regret=best["regret"],
        syn_seconds=float(sum(r.syn_seconds for r in rows)), real_seconds=float(sum(r.real_seconds for r in rows)),
        notes=notes,
    )
