"""The distillation loop: run folder, checkpoints, resume, metrics, progress, evaluation.

A run folder holds:
  config.yaml          the resolved configuration (what the run depends on)
  synset.safetensors   the synthetic set (at the last checkpoint, then the final one)
  checkpoint.pt        everything needed to resume (written atomically every `checkpoint_every`)
  metrics.jsonl        one JSON object per line: loss and seconds per iteration, validation accuracy
  grid_init.png        the starting set, classes as rows
  grid_final.png       the final set
  eval.json            the evaluation of the final set on the real test split

Running again on the same folder resumes from checkpoint.pt and ends with the same synthetic set
as an uninterrupted run (same seed, same device). A killed run loses at most `checkpoint_every`
iterations; every file is replaced atomically, so none is ever half-written.

Under torchrun (`torchrun --nproc-per-node K -m datadistill distill ...`, docs/distributed.md) every
process runs this loop on the same data and holds the same synthetic set; the methods split their
per-class work and sum the gradients. Process 0 alone reads the run folder (and sends the
checkpoint to the others), writes it, logs and shows progress; the validation and evaluation are
called on every process (evaluate splits its runs over them).
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import dist
from .config import DistillConfig, load_yaml, save_yaml
from .data import DatasetSplits, load_dataset
from .data.zca import fit_zca, whiten
from .errors import ConfigError, DistillError, FormatError
from .evaluate import EvalResult, evaluate
from .experts import stored_zca
from .fileio import atomic_path, write_json, write_text
from .methods import get_method, initial_synset
from .rng import make_generator, resolve_device
from .synset import SyntheticSet

CHECKPOINT_FORMAT = "datadistill.checkpoint/1"
# Settings that may differ when resuming: they do not change the synthetic set's trajectory.
# settings a resumed run may change; `sources` is the presets' citation text, which documents the
# settings rather than being one (a reworded preset must not strand a run of hours)
RESUMABLE_CHANGES = {"iterations", "eval", "device", "val_every", "val_epochs", "checkpoint_every", "data_root",
                     "sources"}


@dataclass
class RunResult:
    synset: SyntheticSet
    out: Path | None
    evals: list[EvalResult] = field(default_factory=list)
    resumed_from: int = 0
    distill_seconds: float = 0.0
    peak_memory_mb: float = 0.0


def default_out(cfg: DistillConfig) -> Path:
    name = cfg.dataset.replace("folder:", "folder-").replace("/", "_").strip("_.")
    return Path("runs") / f"{name}-{cfg.method}-ipc{cfg.ipc}"


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def _quiet(msg: str) -> None:
    """The log of processes other than 0."""


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident memory of the process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_same_run(saved: DistillConfig, cfg: DistillConfig, out: Path) -> None:
    a, b = saved.to_dict(), cfg.to_dict()
    diffs = [k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k)]
    if diffs:
        detail = ", ".join(f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in diffs)
        raise ConfigError(
            f"{out} holds a run with other settings ({detail}); use another --out, or the same settings to resume"
        )


def _read_metrics(path: Path, upto: int) -> list[str]:
    """Complete lines of metrics.jsonl whose iteration is <= upto (a killed run may leave a torn line)."""
    keep = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("it", 0) <= upto:
                keep.append(line)
    return keep


def _read_checkpoint(ckpt_path: Path | None) -> dict | None:
    if ckpt_path is None or not ckpt_path.exists():
        return None
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many types for a bad file)
        raise FormatError(f"{ckpt_path}: checkpoint is unreadable ({e}); delete it to start over") from e
    if state.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{ckpt_path}: not a datadistill checkpoint")
    return state


def _fingerprint(*tensors: torch.Tensor) -> list[float]:
    """A cheap summary of tensors' contents: per tensor its size, sum and sum of squares (no copy
    of the whole tensor in float64)."""
    out: list[float] = []
    for t in tensors:
        rows = t.detach().reshape(t.shape[0], -1).float() if t.dim() else t.detach().reshape(1, 1).float()
        out += [float(t.numel()), float(rows.sum(1).double().sum()),
                float(torch.linalg.vector_norm(rows, dim=1).double().square().sum())]
    return out


def _check_same_data(data: DatasetSplits, syn0: SyntheticSet) -> None:
    """Every process must distil the same training images from the same starting set (up to float
    rounding of the summary, which may differ between CPUs)."""
    if not dist.active():
        return
    mine = _fingerprint(data.train.images, data.train.labels, syn0.images)
    bad = [r for r, f in enumerate(dist.all_gather_objects(mine))
           if len(f) != len(mine) or not all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(f, mine))]
    if bad:
        raise DistillError(
            f"process {dist.rank()}: the training data or starting set differs from that of process(es) {bad}; "
            "every machine needs the same dataset files (and datadistill version)"
        )


def run_distillation(
    cfg: DistillConfig,
    out: str | Path | None = None,
    *,
    data: DatasetSplits | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _log,
) -> RunResult:
    """Distill per `cfg`, writing the run folder `out` (None: keep everything in memory).

    Launched by torchrun, joins the process group (gloo on CPU, NCCL on CUDA with one GPU per
    process) and splits the method's work; process 0 alone writes `out` and logs."""
    out = Path(out) if out is not None else None
    device = dist.process_device(resolve_device(cfg.device))
    dist.init_from_env(device)
    main = dist.is_main()
    if not main:
        progress = False
        log = _quiet
    method_cls = get_method(cfg.method)
    ckpt_path = out / "checkpoint.pt" if out else None

    def check_folder() -> None:
        if out is not None and (out / "config.yaml").exists():
            _check_same_run(load_yaml((out / "config.yaml").read_text()), cfg, out)

    dist.from_main(check_folder)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_root, image_size=cfg.image_size, progress=progress)
    t_start = time.perf_counter()  # distillation time includes init (where coresets select)
    zca = None
    if cfg.zca:  # distil in whitened space; val/test stay as they are (evaluate whitens them with syn.zca)
        # Computed by process 0 and sent to the others: every process whitens with the same matrix.
        zca = dist.from_main(lambda: stored_zca(cfg.experts, data.spec, cfg.model, cfg.model_args)
                             if cfg.experts else fit_zca(data.train))
        data = DatasetSplits(whiten(data.train, zca), data.val, data.test)
    distiller = method_cls(cfg, data, device)
    syn0 = initial_synset(data.train, cfg.ipc, cfg.init, make_generator(cfg.seed, "init"))
    syn0.zca = zca
    _check_same_data(data, syn0)
    distiller.init(syn0)
    procs = f", {dist.world_size()} processes" if dist.active() else ""
    log(f"{cfg.method} on {cfg.dataset}, IPC {cfg.ipc}, preset {cfg.preset}, {cfg.iterations} iterations, "
        f"device {device}{procs}" + (f" -> {out}" if out is not None else ""))

    start = 0
    state = dist.from_main(lambda: _read_checkpoint(ckpt_path))  # process 0's file, sent to all
    if state is not None:
        distiller.load_state_dict(state["distiller"])
        start = int(state["iteration"])
        log(f"resuming {out} from iteration {start}")
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", save_yaml(cfg))
        if not (out / "grid_init.png").exists():
            syn0.save_grid(out / "grid_init.png")
        write_text(out / "metrics.jsonl", "".join(line + "\n" for line in _read_metrics(out / "metrics.jsonl", start)))

    def current_set(done: int) -> SyntheticSet:
        syn = distiller.synthetic_set()
        syn.zca = zca
        syn.meta.update(
            method=cfg.method, ipc=cfg.ipc, seed=cfg.seed, iterations=done, dataset=cfg.dataset,
            init=cfg.init, config=cfg.to_dict(),
        )
        return syn

    def checkpoint(done: int) -> None:
        if out is None or not main:
            return
        current_set(done).save(out / "synset.safetensors")
        with atomic_path(ckpt_path) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, "iteration": done, "distiller": distiller.state_dict()}, tmp)

    metrics = open(out / "metrics.jsonl", "a") if out is not None and main else None
    try:
        bar = tqdm(range(start, cfg.iterations), desc=f"{cfg.method} {cfg.dataset} ipc{cfg.ipc}",
                   disable=not progress, unit="it", initial=start, total=cfg.iterations)
        for it in bar:
            t0 = time.perf_counter()
            rec = distiller.step(it)
            rec = {"it": it + 1, **{k: float(v) for k, v in rec.items()}, "seconds": time.perf_counter() - t0}
            bar.set_postfix(loss=f"{rec['loss']:.4g}")
            done = it + 1
            if cfg.val_every and done % cfg.val_every == 0 and done < cfg.iterations:
                rec["val_acc"] = _validate(current_set(done), cfg, data, device)
                log(f"iteration {done}: validation accuracy {rec['val_acc']:.2f}%")
            if metrics is not None:
                metrics.write(json.dumps(rec) + "\n")
                metrics.flush()
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                checkpoint(done)
    finally:
        if metrics is not None:
            metrics.close()
    distill_seconds = time.perf_counter() - t_start

    syn = current_set(max(start, cfg.iterations))
    result = RunResult(syn, out, resumed_from=start, distill_seconds=distill_seconds)
    if out is not None and main:
        if start >= cfg.iterations and not (out / "synset.safetensors").exists():
            checkpoint(cfg.iterations)
        syn.save(out / "synset.safetensors")
        syn.save_grid(out / "grid_final.png")
    if cfg.iterations > 0 and start < cfg.iterations:
        val = _validate(syn, cfg, data, device)
        log(f"final validation accuracy ({cfg.model}, {cfg.val_epochs} epochs, 1 run): {val:.2f}%")
        if out is not None and main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"it": cfg.iterations, "val_acc": val, "distill_seconds": distill_seconds}) + "\n")

    if cfg.eval.runs > 0:
        for model in cfg.eval.models:
            res = evaluate(
                syn, model=model, runs=cfg.eval.runs, epochs=cfg.eval.resolved_epochs(), lr=cfg.eval.lr,
                aug=cfg.eval.aug, test=data.test, device=device, seed=cfg.seed, batch_size=cfg.eval.batch_size,
                momentum=cfg.eval.momentum, weight_decay=cfg.eval.weight_decay, progress=progress,
                **cfg.eval.aug_options(), **cfg.eval.switches(),
            )
            result.evals.append(res)
            log(res.summary())
        if out is not None and main:
            write_json(out / "eval.json", result.evals[0].to_dict())
            if len(result.evals) > 1:
                write_json(out / "eval_table.json", [r.to_dict() for r in result.evals])
    result.peak_memory_mb = peak_memory_mb(device)
    return result


def _validate(syn: SyntheticSet, cfg: DistillConfig, data: DatasetSplits, device: torch.device) -> float:
    """Accuracy on the validation split (never the test split) of one network trained on `syn`."""
    res = evaluate(
        syn, model=cfg.model, runs=1, epochs=cfg.val_epochs, aug=cfg.eval.aug, test=data.val, split="val",
        device=device, seed=cfg.seed + 7919, batch_size=cfg.eval.batch_size, model_args=cfg.model_args,
        progress=False, **cfg.eval.aug_options(), **cfg.eval.switches(),
    )
    return res.mean
