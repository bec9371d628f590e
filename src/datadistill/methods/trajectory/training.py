"""Training expert trajectories (`datadistill experts`): the folder described in `experts.py`.

Training follows the authors' ``buffer.py``: SGD with lr_teacher 0.01, no momentum, no weight
decay, no lr decay, batch 256, DSA augmentation with per-sample random values (one transform per
batch, as their ``DiffAugment`` in mode 'S'), ConvNet. ``optimizer="gsam"`` (`datadistill experts
--optimizer gsam`) wraps that SGD in GSAM (`gsam.py`), as DATM's ``buffer_FTD.py`` trains its
experts; the manifest's ``optimizer`` entry says which (and GSAM's settings, part of the folder's
identity; a folder without the entry holds SGD experts). It goes through the one training loop,
`train.train_model`, with an `on_epoch_end` callback that records the parameters.

Each shard is written atomically, then the manifest is rewritten atomically. Running again on the
folder trains only the experts it does not list (a shard without a manifest entry, e.g. from a run
killed between the two writes, is trained again and replaced; leftover temporary files are
removed). Expert i draws all its randomness from ``make_generator(seed, "expert", i)``, so which
experts were trained in which run does not matter. The experts' test accuracy is a report only:
nothing selects on it.

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

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from ... import dist
from ..._version import __version__
from ...augment import DSA
from ...data import DatasetSplits, ImageData, load_dataset
from ...data.zca import fit_zca, whiten
from ...errors import ConfigError
from ...fileio import write_json
from .shards import save_shard
from ...nets import flat_params, make_net, param_layout
from ...rng import make_generator, resolve_device
from ...train import accuracy, train_model
from .difficulty import (
    Scores,
    class_orders,
    compute_scores,
    curriculum_indices,
    describe_schedule,
    load_scores,
    read_scores,
    save_scores,
    schedule_table,
)
from .experts import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SCORES_FILE,
    SGD,
    SHARD_FORMAT,
    ZCA_FILE,
    ExpertSettings,
    fingerprint_of,
    identity_of,
    jsonable,
    load_zca,
    read_manifest,
    resolved_model_args,
    save_zca,
    shard_name,
)


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


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of a killed run (atomic writes that never reached their rename)."""
    for p in directory.glob(".*.tmp"):
        if p.name.startswith((".expert_", f".{MANIFEST}.", f".{ZCA_FILE}.", f".{SCORES_FILE}.")):
            p.unlink(missing_ok=True)


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
    keys = list(identity) + [k for k in ("curriculum", "optimizer") if k in existing and k not in identity]
    diffs = []
    for k in keys:
        mine, theirs = jsonable(identity.get(k)), existing.get(k)
        if k == "model_args" and isinstance(theirs, dict):  # as built: depth None and its value compare equal
            theirs = resolved_model_args(existing.get("model", ""), theirs, existing["dataset"]["im_size"])
        if k == "optimizer":
            mine, theirs = mine or SGD, theirs or SGD
        if k == "curriculum":
            if not with_scores:
                mine = {a: b for a, b in mine.items() if a not in ("scores", "schedule")} if mine else mine
                theirs = {a: b for a, b in theirs.items() if a not in ("scores", "schedule")} if theirs else theirs
            if mine != theirs:
                diffs.append(_curriculum_diff(theirs, mine))
        elif mine != theirs:
            diffs.append(f"{k}: folder {theirs!r}, asked {identity.get(k, mine)!r}")
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
        asked = jsonable(asdict(settings.score_settings()))
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
    existing = read_manifest(out)
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
    fingerprint = existing["fingerprint"] if existing is not None else fingerprint_of(identity)
    if settings.zca and (existing is None or not (out / ZCA_FILE).exists()):
        t0 = time.perf_counter()
        save_zca(out / ZCA_FILE, fit_zca(data.train, eps=settings.zca_eps), fingerprint)
        log(f"fitted ZCA whitening on {len(data.train)} training images in {time.perf_counter() - t0:.1f} s")
    manifest = existing or {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "fingerprint": fingerprint,
        "optimizer": SGD,
        **jsonable(identity),
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
    identity = identity_of(settings, spec, len(data.train))
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
        zca = load_zca(out / ZCA_FILE)
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
                  decay_at=(), aug=aug, progress=progress, optimizer=settings.optimizer, gsam=settings.gsam_settings(),
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
        save_shard(path, traj, meta)
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
        manifest = read_manifest(out) or manifest
    listed = [e for e in manifest["experts"] if e["index"] < settings.num_experts]
    disk = sum(e["bytes"] for e in manifest["experts"]) + ((out / ZCA_FILE).stat().st_size if settings.zca else 0)
    if curriculum is not None:
        disk += (out / SCORES_FILE).stat().st_size
    return ExpertsReport(
        directory=out, num_experts=len(listed), trained_now=trained, skipped=skipped,
        test_accuracies=[e["test_accuracy"] for e in listed], seconds=[e["seconds"] for e in listed],
        disk_bytes=disk, epochs=settings.epochs, num_params=num_params, curriculum=manifest.get("curriculum"),
    )


