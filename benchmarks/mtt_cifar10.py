"""MTT (trajectory matching) on the CIFAR-10 subset of ../shared/data (4,653 training images after
the validation split) at IPC 1 and 10 with the quick preset, against its starting point (the random
real images it is initialized from) and DM at its quick preset.

Jobs, each in a fresh Python process (so peak memory belongs to one job), results written to
benchmarks/results/mtt_cifar10.json after every job:

1. experts: `datadistill experts --dataset cifar10 --preset quick --epochs 8` (4 experts of 8
   epochs, ZCA: the quick preset before it went to 20 epochs, see 6.) into
   runs/experts-cifar10-quick (resumed if there): expert test accuracy, seconds per expert, disk
   size. IPC 10 on them starts at epochs <= 6.
2. per IPC, MTT with unroll=plain for the whole quick budget, then 3 evaluation runs (quick
   protocol: ConvNet, 300 epochs with DSA at the learned lr) and 3 of the starting set (the same
   whitened real images, lr 0.01): accuracy mean/std, seconds per iteration, learned lr.
3. per IPC and unroll mode (plain, checkpoint), a probe of 5 iterations without evaluation:
   seconds per iteration and peak memory above what the process held before distilling (RSS
   high-water mark on a CPU, max_memory_allocated on a GPU). The checkpoint mode computes the
   same gradient (tests/test_mtt.py), so only its cost is measured.
4. per IPC, DM at its quick preset (no ZCA), 3 evaluation runs.
5. IPC 10 again with lr_img 1000 and an initial step size of 0.01 (see plan()), 3 evaluation runs.
6. today's quick preset: the same 4 experts trained 20 epochs (runs/experts-cifar10-quick-e20), and
   IPC 10 on them with start epochs up to 18, 3 evaluation runs.

Usage: python benchmarks/mtt_cifar10.py [--data-root DIR]   (2.5 to 3 hours on a 2-core CPU)
"""
from __future__ import annotations

import sys
import time

from common import REPO, data_root_arg, rss_mb, run_jobs

NAME = "mtt_cifar10"
EXPERTS = REPO / "runs" / "experts-cifar10-quick"
EXPERTS_20 = REPO / "runs" / "experts-cifar10-quick-e20"
EVAL_RUNS = 3
PROBE_ITERATIONS = 5


def _acc(ev) -> dict:
    return {"mean": ev.mean, "std": ev.std, "runs": ev.runs, "accuracies": ev.accuracies, "lr": ev.lr,
            "epochs": ev.epochs, "aug": ev.aug}


def job_experts(job: dict) -> dict:
    from datadistill.methods.trajectory import expert_settings, train_experts

    settings = expert_settings("cifar10", "quick", **job.get("settings", {}))
    t0 = time.perf_counter()
    rep = train_experts(settings, job["experts"], data_root=job["data_root"], device="auto", progress=False)
    return {"job": "experts", "settings": {k: v for k, v in vars(settings).items()}, **rep.to_dict(),
            "seconds_per_expert": sum(rep.seconds) / max(1, len(rep.seconds)),
            "disk_mib": rep.disk_bytes / 2**20, "wall_seconds_this_run": time.perf_counter() - t0,
            "peak_rss_mb": rss_mb()}


def _mtt_config(job: dict, **over):
    from datadistill.config import resolve_config

    return resolve_config("mtt", "cifar10", job["ipc"], "quick", experts=job["experts"], data_root=job["data_root"],
                          **over)


def job_mtt(job: dict) -> dict:
    import torch

    from datadistill.data import load_dataset
    from datadistill.evaluate import evaluate
    from datadistill.run import peak_memory_mb, prepare, run_distillation

    over = dict(job.get("overrides", {}))
    cfg = _mtt_config(job, **{**over, "eval": {"runs": 0},
                              "method_args": {**over.get("method_args", {}), "unroll": "plain"}})
    data = load_dataset("cifar10", cfg.data_root, progress=False)
    before = rss_mb()
    res = run_distillation(cfg, None, data=data, progress=False, log=lambda m: print(m, file=sys.stderr))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kw = dict(model="convnet", runs=EVAL_RUNS, epochs=cfg.eval.resolved_epochs(), aug=cfg.eval.aug, test=data.test,
              device=dev, seed=cfg.seed, progress=False)
    ev = evaluate(res.synset, **kw)  # lr None: the learned lr
    row = {"job": "mtt", "method": "mtt", "dataset": "cifar10", "ipc": cfg.ipc, "preset": "quick", "unroll": "plain",
           "overrides": over, "iterations": cfg.iterations, "distill_seconds": res.distill_seconds,
           "seconds_per_iteration": res.distill_seconds / max(1, cfg.iterations), "learned_lr": res.synset.lr,
           "accuracy": _acc(ev), "peak_memory_mb_process": peak_memory_mb(dev), "rss_before_distill_mb": before,
           "config": cfg.to_dict()}
    if not job.get("eval_init", True):
        return row
    syn0 = prepare(cfg, data=data, progress=False).syn0  # the starting set, whitened as the run's
    ev0 = evaluate(syn0, **kw)  # lr None: 0.01 (the set carries no learned lr)
    return {**row, "init_accuracy": _acc(ev0)}


def job_probe(job: dict) -> dict:
    import torch

    from datadistill.data import load_dataset
    from datadistill.run import prepare

    over = job.get("overrides", {})
    cfg = _mtt_config(job, iterations=PROBE_ITERATIONS, eval={"runs": 0},
                      method_args={**over.get("method_args", {}), "unroll": job["unroll"]})
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("cifar10", cfg.data_root, progress=False)
    d = prepare(cfg, data=data, device=dev, progress=False).distiller
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
    else:
        base = rss_mb()
    secs = []
    for it in range(cfg.iterations):
        t0 = time.perf_counter()
        d.step(it)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        secs.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else rss_mb()
    o = d.opts
    return {
        "job": "probe", "method": "mtt", "ipc": cfg.ipc, "unroll": o.unroll,
        "segment": (o.segment or max(1, round(o.syn_steps ** 0.5))) if o.unroll == "checkpoint" else None,
        "syn_steps": o.syn_steps, "batch_syn": o.batch_syn, "iterations": cfg.iterations,
        "seconds_per_iteration": sum(secs[1:]) / max(1, len(secs) - 1), "seconds": secs,
        "memory_before_mb": base, "peak_memory_mb": peak, "peak_above_before_mb": peak - base,
        "memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "CPU RSS high-water mark",
    }


def job_dm(job: dict) -> dict:
    from common import run_one

    out = run_one({"method": "dm", "dataset": "cifar10", "ipc": job["ipc"], "preset": "quick",
                   "eval_runs": EVAL_RUNS, "eval_init": False, "data_root": job["data_root"]})
    return {"job": "dm", **out}


JOBS = {"experts": job_experts, "mtt": job_mtt, "probe": job_probe, "dm": job_dm}


def plan(data_root: str) -> list[dict]:
    # Jobs 0-9 ran on the quick preset of their day: 8-epoch experts, IPC 10 starting at epochs <= 6
    # (the settings are spelled out so that they still run as they did); jobs 10-11 are today's
    # quick preset (20-epoch experts, starts <= 18).
    base = {"data_root": data_root, "experts": str(EXPERTS)}
    start6 = {"method_args": {"max_start_epoch": 6}}
    jobs = [{"job": "experts", "settings": {"epochs": 8}, **base}]
    jobs.append({"job": "mtt", "ipc": 1, **base})
    jobs.append({"job": "mtt", "ipc": 10, "overrides": start6, **base})
    for ipc in (1, 10):
        for unroll in ("plain", "checkpoint"):
            jobs.append({"job": "probe", "ipc": ipc, "unroll": unroll, **({"overrides": start6} if ipc == 10 else {}),
                         **base})
    for ipc in (1, 10):
        jobs.append({"job": "dm", "ipc": ipc, **base})
    # IPC 10 with the image and step-size learning rates of the authors' CIFAR-10 IPC 10 ZCA command
    # as other MTT code bases quote it (lr_img 1000, lr_teacher 0.01) instead of the table's 100 and
    # 0.001, to test whether the table's start (0.001; the plain row learns 0.0095) wastes the
    # 100-iteration budget. Measured: no (44.31 vs 44.25 %). Same budget otherwise; the starting
    # images are evaluated in job 2
    jobs.append({"job": "mtt", "ipc": 10, "overrides": {"lr_img": 1000.0,
                                                        "method_args": {"lr_teacher": 0.01, "max_start_epoch": 6}},
                 "eval_init": False, **base})
    # The 8-epoch experts reach 42.65 % and the IPC 10 set trained on them 44.25 %: matching
    # segments of a trajectory that never gets better than DM's 47.23 % bounds what MTT can learn.
    # Same 4 experts trained 20 epochs (380 SGD steps each; the paper's 50 epochs are 9,800), and
    # IPC 10 drawing its start epochs from all of them (max_start_epoch 18 = 20 - expert_epochs).
    long = {"data_root": data_root, "experts": str(EXPERTS_20)}
    jobs.append({"job": "experts", "settings": {"epochs": 20}, **long})
    jobs.append({"job": "mtt", "ipc": 10, "overrides": {"method_args": {"max_start_epoch": 18}}, "eval_init": False,
                 **long})
    return jobs


def main(argv: list[str]) -> None:
    data_root = data_root_arg(argv)
    run_jobs(NAME, plan(data_root), JOBS, argv, label_keys=("job", "ipc", "unroll"))


if __name__ == "__main__":
    main(sys.argv)
