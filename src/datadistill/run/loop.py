"""The distillation loop: checkpoints, resume, metrics, progress, validation, evaluation.

`run_distillation(cfg, out)` prepares the run (`setup.prepare`: data, artifacts, distiller,
starting set), then calls `distiller.step(it)` for each outer iteration, writing the run folder
(`folder.py`: what each file holds) as it goes. A run given a teacher (``--teacher DIR``: SRe2L,
RDED, a coreset) relabels every set it saves with it (`methods.decoupled.relabel`).

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import dist
from ..config import DistillConfig
from ..data import DatasetSplits
from ..evaluate import EvalResult, evaluate
from ..memstats import available_bytes, peak_memory
from ..rng import resolve_device
from ..synset import SyntheticSet
from ..checkpoints import restore
from ..methods.decoupled import Relabeller
from ..errors import DivergedError
from .folder import CHECKPOINT, GRID_FINAL, GRID_INIT, RunFolder, default_out  # noqa: F401  (default_out: the API's name)
from .setup import load_data, prepare


@dataclass
class RunResult:
    synset: SyntheticSet
    out: Path | None
    evals: list[EvalResult] = field(default_factory=list)
    resumed_from: int = 0
    distill_seconds: float = 0.0
    peak_memory_mb: float = 0.0


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def _quiet(msg: str) -> None:
    """The log of processes other than 0."""


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident memory of the process (CPU), in MiB."""
    rec = peak_memory(device)
    return rec.get("peak_cuda_mb", rec["peak_rss_mb"])


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
    folder = RunFolder(out) if out is not None else None
    device = dist.process_device(resolve_device(cfg.device))
    dist.init_from_env(device)
    main = dist.is_main()
    if not main:
        progress = False
        log = _quiet
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if folder is not None:  # before any work: a folder holding another run is refused
        dist.from_main(lambda: folder.check_same_run(cfg))
    if data is None:
        data = load_data(cfg, progress)
    t_start = time.perf_counter()  # distillation time includes init (where coresets select)
    run = prepare(cfg, data=data, device=device, progress=progress)
    if folder is not None and cfg.artifact_fingerprints:  # and not on other artifacts' contents
        dist.from_main(lambda: folder.check_same_run(cfg))
    distiller, zca, data = run.distiller, run.zca, run.data
    relabeller = Relabeller.for_run(cfg, run.artifacts, device)  # with a teacher: its labels for every saved set
    start = 0
    state = dist.from_main(lambda: folder.read_checkpoint() if folder is not None else None)  # sent to all
    if state is not None:  # checked before anything is logged or written
        start = restore(distiller, state, folder / CHECKPOINT)
    procs = f", {dist.world_size()} processes" if dist.active() else ""
    log(f"{cfg.method} on {cfg.dataset}, IPC {cfg.ipc}, preset {cfg.preset}, {cfg.iterations} iterations, "
        f"device {device}{procs}" + (f" -> {out}" if out is not None else ""))
    for note in distiller.setup_notes():
        log(note)
    if state is not None:
        log(f"resuming {out} from iteration {start}")
    if folder is not None and main:
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.remove_stale_temporaries()  # left by a run killed while writing
        folder.write_config(cfg)
        folder.write_grid(run.syn0, GRID_INIT, keep=True)
        folder.truncate_metrics(start)

    def current_set(done: int) -> SyntheticSet:
        syn = distiller.synthetic_set()
        syn.zca = zca
        syn.meta.update(
            method=cfg.method, ipc=cfg.ipc, seed=cfg.seed, iterations=done, dataset=cfg.dataset,
            init=cfg.init, config=cfg.to_dict(),
        )
        return relabeller(syn) if relabeller is not None else syn

    def checkpoint(done: int) -> None:
        if folder is None or not main:
            return
        folder.save_set(current_set(done))
        folder.write_checkpoint(done, distiller.state_dict())

    metrics = folder.open_metrics() if folder is not None and main else None
    try:
        bar = tqdm(range(start, cfg.iterations), desc=f"{cfg.method} {cfg.dataset} ipc{cfg.ipc}",
                   disable=not progress, unit="it", initial=start, total=cfg.iterations)
        for it in bar:
            t0 = time.perf_counter()
            try:
                rec = distiller.step(it)
            except DivergedError as e:  # say whether there is a checkpoint to come back to
                raise DivergedError(f"{e}{folder.checkpoint_note() if folder is not None else ''}") from e
            rec = {"it": it + 1, **{k: float(v) for k, v in rec.items()}, "seconds": time.perf_counter() - t0,
                   **peak_memory(device)}
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
    result = RunResult(syn, out if out is None else Path(out), resumed_from=start, distill_seconds=distill_seconds)
    if folder is not None and main:
        if start >= cfg.iterations and not folder.has_set():
            checkpoint(cfg.iterations)
        folder.save_set(syn)
        folder.write_grid(syn, GRID_FINAL)
    if cfg.iterations > 0 and (start < cfg.iterations or folder is None
                               or not folder.final_validation_written(cfg.iterations)):
        val = _validate(syn, cfg, data, device, progress=progress)  # minutes at the paper presets: a bar
        log(f"final validation accuracy ({cfg.model}, {cfg.val_epochs} epochs, 1 run): {val:.2f}%")
        if folder is not None and main:
            folder.append_metrics({"it": cfg.iterations, "val_acc": val, "distill_seconds": distill_seconds})

    if cfg.eval.runs > 0:
        for model in cfg.eval.models:
            res = evaluate(syn, cfg.eval, model=model, test=data.test, device=device, seed=cfg.seed, progress=progress)
            result.evals.append(res)
        if folder is not None and main:
            folder.write_evals(result.evals)
    result.peak_memory_mb = peak_memory_mb(device)
    return result


def dry_run(cfg: DistillConfig, *, data: DatasetSplits | None = None, progress: bool = True,
            log: Callable[[str], None] = _log) -> dict:
    """What `datadistill distill --dry-run` reports: the run set up as `run_distillation` would
    (data, artifacts, the method and its starting set), then the peak memory it is estimated to
    reach, and nothing distilled or written. The estimate is the setup's peak plus the method's
    estimate of one iteration (`Distiller.memory_estimate`: trajectory matching's unroll, per
    mode); a method without one runs one iteration, whose result is discarded, and reports the
    measured peak instead."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if data is None:
        data = load_data(cfg, progress)
    run = prepare(cfg, data=data, device=device, progress=progress)
    for note in run.distiller.setup_notes():
        log(note)
    setup = peak_memory(device)
    setup_mb = setup.get("peak_cuda_mb", setup["peak_rss_mb"])
    avail, source = available_bytes(device)
    rec: dict = {"method": cfg.method, "dataset": cfg.dataset, "ipc": cfg.ipc, "device": str(device),
                 "setup": setup, "available_mib": round(avail / 2**20, 1), "available_source": source}
    est = run.distiller.memory_estimate()
    if est is not None:
        rec["iteration"] = est
        rec["estimated_peak_mib"] = round(setup_mb + est["iteration_mib"], 1)
        rec["fits"] = est["iteration_mib"] <= avail / 2**20  # what is available after the setup
    else:
        run.distiller.step(0)
        measured = peak_memory(device)
        rec["iteration"] = {"how": "measured on one iteration (discarded)", **measured}
        rec["estimated_peak_mib"] = measured.get("peak_cuda_mb", measured["peak_rss_mb"])
    return rec


def _validate(syn: SyntheticSet, cfg: DistillConfig, data: DatasetSplits, device: torch.device,
              progress: bool = False) -> float:
    """Accuracy on the validation split (never the test split) of one network trained on `syn`."""
    res = evaluate(syn, cfg.validation_protocol(), model=cfg.model, model_args=cfg.model_args, test=data.val,
                   split="val", device=device, seed=cfg.seed + 7919, progress=progress)
    return res.mean
