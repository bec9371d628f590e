"""How hard each training sample is (EL2N), and the data scheduler built on it (PAD's experts).

EL2N (Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021): for a sample (x, y),

    EL2N(x, y) = E_w || softmax(f_w(x)) - onehot(y) ||_2

the expectation taken over networks w trained for a few epochs from independent initializations
(the paper: 10 networks, scored at epoch 20 of 200 on CIFAR-10). Low is easy, high is hard.
`score_el2n` trains `num_nets` networks with the one training loop (`train.train_model`: SGD,
momentum 0.9, weight decay 5e-4, no lr decay within these few epochs), scores every training
sample with each network in eval mode and averages. Network i draws everything from
``make_generator(seed, "el2n", i)``.

Scores are stored per training sample (`save_scores`: a safetensors file with a ``scores`` tensor
(N,) and metadata) together with a fingerprint of the training split they were computed on (its
images, labels and dataset spec); `load_scores` refuses them for any other split, so a file is
reusable for every experts folder of the same dataset and never silently applied to another.

The data scheduler (Li et al., "Prioritize Alignment in Dataset Distillation", 2024, PAD; the
authors' ``buffer/buffer_CL.py``, github.com/NUS-HPC-AI-Lab/PAD) orders each class by difficulty,
easiest first, and gives the expert of epoch e (counted from 0, as their loop does) a per-class
share of it:

    e <= add_end_epoch                       the easiest p(e) of each class,
                                             p(e) = min(1, init_ratio + (1 - init_ratio) e / add_end_epoch)
    add_end_epoch < e <= rm_epoch_first      all samples
    rm_epoch_first < e <= rm_epoch_second    all but the easiest rm_easy_ratio_first of each class
    rm_epoch_second < e                      all but the easiest rm_easy_ratio_second of each class

"The easiest share s of a class of n samples" is its floor(s n) lowest-scored samples (ties broken
by sample index); the authors hard-code 5,000 samples per class (full CIFAR-10), here every class
uses its own count, so any number of samples per class works.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..._version import __version__
from ...data import ImageData
from ...errors import ConfigError, FormatError
from ...fileio import atomic_path, check_out_file, safetensors_format
from ...nets import make_net
from ...rng import make_generator
from ...train import train_model

SCORES_FORMAT = "datadistill.el2n"
SCORES_FORMAT_VERSION = "1"
CURRICULA = ("none", "el2n")
_EPS = 1e-9  # floor(s * n) tolerant of binary rounding (0.8 * 5 = 4.000000000000001 or 3.9999...)


# ------------------------------------------------------------------------------------ EL2N
def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """|| softmax(logits) - onehot(labels) ||_2 per row: (N, K), (N,) -> (N,)."""
    p = torch.softmax(logits.float(), dim=1)
    onehot = torch.nn.functional.one_hot(labels.long(), p.shape[1]).to(p.dtype)
    return (p - onehot).norm(dim=1)


@dataclass
class ScoreSettings:
    """How EL2N scores are computed (defaults: the Data Diet paper's 10 networks at epoch 20)."""

    num_nets: int = 10
    epochs: int = 20
    model: str = "convnet"
    model_args: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    seed: int = 0

    def validate(self) -> None:
        if isinstance(self.num_nets, bool) or not isinstance(self.num_nets, int) or self.num_nets < 1:
            raise ConfigError(f"EL2N scoring: the number of networks must be a positive integer, got {self.num_nets!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"EL2N scoring: epochs must be an integer >= 0, got {self.epochs!r}")
        if not self.lr > 0:
            raise ConfigError(f"EL2N scoring: lr must be > 0, got {self.lr}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"EL2N scoring: batch_size must be a positive integer, got {self.batch_size!r}")


@torch.no_grad()
def _net_el2n(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    was = net.training
    net.eval()
    out = torch.cat([el2n(net(images[s : s + chunk]), labels[s : s + chunk]) for s in range(0, len(images), chunk)])
    net.train(was)
    return out.cpu()


def score_el2n(
    train: ImageData,
    settings: ScoreSettings,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """EL2N score of every sample of `train` (float32 (N,), CPU), averaged over `settings.num_nets`
    networks trained `settings.epochs` epochs on `train`."""
    settings.validate()
    spec = train.spec
    x, y = train.images.to(device), train.labels.to(device)
    total = torch.zeros(len(train), dtype=torch.float64)
    for i in range(settings.num_nets):
        t0 = time.perf_counter()
        g = make_generator(settings.seed, "el2n", i)
        net = make_net(settings.model, spec.channels, spec.num_classes, spec.im_size, generator=g,
                       **settings.model_args).to(device)
        if settings.epochs:
            train_model(net, x, y, epochs=settings.epochs, lr=settings.lr, generator=g, batch_size=settings.batch_size,
                        momentum=settings.momentum, weight_decay=settings.weight_decay, decay_at=(),
                        progress=progress, desc=f"el2n net {i}")
        total += _net_el2n(net, x, y).double()
        if log is not None:
            log(f"EL2N network {i + 1}/{settings.num_nets}: {settings.epochs} epochs, {time.perf_counter() - t0:.1f} s")
    return (total / settings.num_nets).float()


# ------------------------------------------------------------------------------------ storage
def data_fingerprint(train: ImageData) -> str:
    """A hash of the split's dataset spec, images and labels (which samples, in which order)."""
    h = hashlib.sha256(json.dumps(train.spec.to_dict(), sort_keys=True, default=str).encode())
    for part in train.images.split(4096):  # a chunk at a time (the same bytes in order: the same hash), so
        h.update(part.detach().float().cpu().contiguous().numpy().tobytes())  # an out-of-core split is never whole
    h.update(train.labels.detach().long().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def scores_digest(scores: torch.Tensor) -> str:
    """A hash of the score values (what an experts folder records of the scores it used)."""
    return hashlib.sha256(scores.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass
class Scores:
    values: torch.Tensor  # (N,) float32, one per training sample
    data_fingerprint: str
    dataset: str
    settings: dict
    seconds: float = math.nan

    @property
    def digest(self) -> str:
        return scores_digest(self.values)


def save_scores(path: str | os.PathLike, scores: Scores) -> Path:
    path = Path(path)
    meta = {"format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "package_version": __version__,
            "data_fingerprint": scores.data_fingerprint, "dataset": scores.dataset,
            "settings": json.dumps(scores.settings, sort_keys=True, default=str), "seconds": repr(scores.seconds),
            "kind": "EL2N (Paul et al. 2021): mean over networks of ||softmax(f(x)) - onehot(y)||_2; low = easy"}
    with atomic_path(path) as tmp:
        save_file({"scores": scores.values.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
    return path


def read_scores(path: str | os.PathLike) -> Scores:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            values = f.get_tensor("scores")
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a readable difficulty-scores file ({e})") from e
    if meta.get("format") != SCORES_FORMAT:
        raise FormatError(f"{path}: not a datadistill EL2N scores file (no '{SCORES_FORMAT}' format tag)")
    if meta.get("format_version") != SCORES_FORMAT_VERSION:
        raise FormatError(f"{path}: scores format version {meta.get('format_version')!r}; "
                          f"this datadistill reads {SCORES_FORMAT_VERSION}")
    if values.ndim != 1:
        raise FormatError(f"{path}: scores must be one value per sample, found shape {tuple(values.shape)}")
    return Scores(values, meta["data_fingerprint"], meta.get("dataset", "?"), json.loads(meta.get("settings", "{}")),
                  float(meta.get("seconds", "nan")))


def load_scores(path: str | os.PathLike, train: ImageData) -> Scores:
    """The scores of `path`, after checking they were computed on exactly this training split."""
    s = read_scores(path)
    if len(s.values) != len(train) or s.data_fingerprint != data_fingerprint(train):
        raise ConfigError(
            f"the difficulty scores in {path} were computed on another training split ({s.dataset!r}, "
            f"{len(s.values)} samples; this one: {train.spec.name!r}, {len(train)} samples, or other images); "
            f"compute scores for this one with `datadistill difficulty --dataset {train.spec.name} --out NEW_FILE`"
        )
    return s


def compute_scores(train: ImageData, settings: ScoreSettings, *, device="cpu", progress=False, log=None) -> Scores:
    t0 = time.perf_counter()
    values = score_el2n(train, settings, device=device, progress=progress, log=log)
    return Scores(values, data_fingerprint(train), train.spec.name, asdict(settings), time.perf_counter() - t0)


def check_scores_path(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, a scores destination that is a folder, cannot be written, or is a
    file of another kind (a synthetic set, a checkpoint) that writing the scores would destroy."""
    return check_out_file(path, what, kind="an EL2N scores file",
                          replaces=lambda p: safetensors_format(p) == SCORES_FORMAT)


def ensure_scores(path: str | os.PathLike, train: ImageData, settings: ScoreSettings, *, device="cpu",
                  progress=False, log=None) -> tuple[Scores, bool]:
    """The scores in `path` if it holds scores of this training split with these settings, else
    computed and written there. Returns (scores, whether they were computed now). A file of
    another kind at `path` is refused (OutputError), never overwritten."""
    path = check_scores_path(path, "the scores file")
    if path.exists():
        try:
            old = load_scores(path, train)
        except (ConfigError, FormatError):
            old = None
        if old is not None and old.settings == json.loads(json.dumps(asdict(settings), default=str)):
            return old, False
    s = compute_scores(train, settings, device=device, progress=progress, log=log)
    save_scores(path, s)
    return s, True


# ------------------------------------------------------------------------------------ the data scheduler
@dataclass
class Curriculum:
    """The data scheduler of PAD's experts (defaults: the authors' readme command)."""

    init_ratio: float = 0.75
    add_end_epoch: int = 20
    rm_epoch_first: int = 40
    rm_easy_ratio_first: float = 0.1
    rm_epoch_second: int = 60
    rm_easy_ratio_second: float = 0.2

    def validate(self) -> None:
        if not 0 < self.init_ratio <= 1:
            raise ConfigError(f"curriculum: init_ratio must be in (0, 1], got {self.init_ratio}")
        for name in ("rm_easy_ratio_first", "rm_easy_ratio_second"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ConfigError(f"curriculum: {name} must be in [0, 1), got {v}")
        for name in ("add_end_epoch", "rm_epoch_first", "rm_epoch_second"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"curriculum: {name} must be an integer >= 0, got {v!r}")
        if not self.add_end_epoch <= self.rm_epoch_first <= self.rm_epoch_second:
            raise ConfigError(
                "curriculum: the stages must come in order, add_end_epoch <= rm_epoch_first <= rm_epoch_second; got "
                f"{self.add_end_epoch}, {self.rm_epoch_first}, {self.rm_epoch_second}"
            )

    def stage(self, epoch: int) -> tuple[str, float, float]:
        """(stage, share kept from the easy end, share dropped from the easy end) at `epoch` (from 0).

        Stage "add" keeps the easiest `keep` of each class; the others keep all but the easiest `drop`."""
        if epoch <= self.add_end_epoch:
            keep = 1.0 if self.add_end_epoch == 0 else min(
                1.0, self.init_ratio + (1 - self.init_ratio) * epoch / self.add_end_epoch)
            return "add", keep, 0.0
        if epoch <= self.rm_epoch_first:
            return "all", 1.0, 0.0
        if epoch <= self.rm_epoch_second:
            return "remove_first", 1.0 - self.rm_easy_ratio_first, self.rm_easy_ratio_first
        return "remove_second", 1.0 - self.rm_easy_ratio_second, self.rm_easy_ratio_second


def class_orders(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Per class, its sample indices sorted by score, easiest (lowest) first; ties by index."""
    scores, labels = scores.detach().cpu(), labels.detach().cpu()
    if scores.shape != labels.shape:
        raise ConfigError(f"{scores.numel()} difficulty scores for {labels.numel()} training samples")
    orders = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        orders.append(idx[torch.sort(scores[idx], stable=True).indices])
    return orders


def curriculum_indices(orders: list[torch.Tensor], epoch: int, curriculum: Curriculum) -> torch.Tensor:
    """The training-sample indices the expert trains on at `epoch` (sorted ascending)."""
    stage, keep, drop = curriculum.stage(epoch)
    parts = []
    for order in orders:
        n = order.numel()
        if stage == "add":
            parts.append(order[: math.floor(keep * n + _EPS)])
        else:
            parts.append(order[math.floor(drop * n + _EPS):])
    return torch.sort(torch.cat(parts)).values


def schedule_table(orders: list[torch.Tensor], epochs: int, curriculum: Curriculum) -> list[dict]:
    """One row per epoch: epoch, stage, nominal share of each class, and the number of samples used."""
    rows = []
    for e in range(epochs):
        stage, keep, drop = curriculum.stage(e)
        rows.append({"epoch": e, "stage": stage, "share": round(keep, 6),
                     "samples": int(curriculum_indices(orders, e, curriculum).numel())})
    return rows


def describe_schedule(rows: list[dict], total: int) -> str:
    """One line: the stages and their epoch ranges, with sample counts."""
    parts, start = [], 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["stage"] != rows[start]["stage"]:
            a, b = rows[start], rows[i - 1]
            span = f"epoch {a['epoch']}" if a is b else f"epochs {a['epoch']}-{b['epoch']}"
            counts = f"{a['samples']}" if a["samples"] == b["samples"] else f"{a['samples']}->{b['samples']}"
            parts.append(f"{span} {a['stage']} ({counts} of {total} samples)")
            start = i
    return "; ".join(parts)
