"""What each method adds over a random subset, under hard and soft labels (issue 18).

On MNIST and the CIFAR-10 subset of ../shared/data, at IPC 10 with the quick presets: sets of DM,
DSA, MTT and PAD, and the random and herding coresets, each evaluated under two protocols
(`--protocol datadistill`: hard labels, DSA, the lr chosen on validation; `--protocol ddranking`:
the teacher's labels on the fly, KL, cutmix), with DD-Ranking's scores (HLR, IOR, LRS, ARS) for
each. One ConvNet-BN teacher per dataset (`datadistill teacher`, quick preset) and one full-data
baseline per dataset (`datadistill baseline`, for HLR).

Jobs, each in its own process, results in benchmarks/results/soft_labels.json after every job:
  teacher   DATASET                  the teacher (runs/soft/teacher-DATASET), its accuracy and cost
  baseline  DATASET                  ConvNet on the full training split (runs/soft/baseline-DATASET.json)
  experts   DATASET KIND             MTT's (plain) and PAD's (el2n) quick experts for the CIFAR-10 subset
                                     and MNIST (runs/soft/experts-DATASET-KIND)
  set       DATASET METHOD           the distillation (runs/soft/DATASET-METHOD-ipc10, resumable)
  eval      DATASET METHOD PROTOCOL  the evaluation and the scores of one set under one protocol (each
                                     evaluation kept in runs/soft/scores-DATASET-PROTOCOL as it ends, named
                                     by its images and settings: a cut-off job continues from there, and
                                     the random subset's evaluations, the same for every hard-labelled set
                                     of a dataset, run once for all of them)

The evaluation budget is reduced to fit a 2-core CPU and stated in every row: 300 epochs and
3 runs for both protocols (the datadistill protocol's paper budget is 1,000 epochs, DD-Ranking's
300), and the lr grid of both protocols {0.001, 0.005, 0.01, 0.05, 0.1}: about 1.5 CPU hours
an evaluation job. `--short` evaluates at SHORT instead (3 runs of 50 epochs at lr 0.01, no lr
grid; decoupled.py's --short budget with 3 runs instead of 1), a sixteenth of the cost; its eval rows are separate rows of the same file (the teacher, baseline,
experts and sets are shared), and the plot and README say which budget a figure is from.

Usage: python benchmarks/soft_labels.py [--data-root DIR] [--resume] [--only I,J]   (many hours on
       a 2-core CPU: run it in parts with --only from a pinned worktree)
       python benchmarks/soft_labels.py --short ...   (the evaluations at the SHORT budget)
       python benchmarks/soft_labels.py --smoke   (tiny budgets and networks: checks the code path;
                                                    its numbers mean nothing)
       python benchmarks/soft_labels.py --plot    (results/soft_labels.png from the JSON: each set's
                                                    gain over random, IOR, per protocol; also written
                                                    after every run)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from common import REPO, check_flags, data_root_arg, redraw, results_file, rss_mb, run_jobs, save_figure
from summarize import budget_label

NAME = "soft_labels"
IPC = 10
DATASETS = ("mnist", "cifar10")
METHODS = ("random", "herding", "dm", "dsa", "mtt", "pad")
PROTOCOLS = ("datadistill", "ddranking")
EVAL = {"runs": 3, "epochs": 300}
SHORT = {"runs": 3, "epochs": 50, "lr": 0.01}

SMOKE_NET = {"width": 8, "depth": 1}
SMOKE = {
    "teacher": {"epochs": 1, "model_args": SMOKE_NET},
    "baseline": {"epochs": 1},
    "experts": {"num_experts": 1, "epochs": 2, "model_args": SMOKE_NET, "zca": False, "score_nets": 1,
                "score_epochs": 0, "add_end_epoch": 1, "rm_epoch_first": 1, "rm_epoch_second": 1},
    "set": {"iterations": 1, "model_args": SMOKE_NET, "zca": False, "val_epochs": 1, "batch_real": 8},
    "trajectory": {"syn_steps": 2, "batch_syn": 20, "max_start_epoch": 1, "expert_epochs": 1},
    "eval": {"runs": 1, "epochs": 1, "lr_grid": [0.01]},
}


def _root(job: dict) -> Path:
    return REPO / "runs" / ("soft-smoke" if job.get("smoke") else "soft")


def _path(job: dict, *parts: str) -> Path:
    return _root(job) / "-".join(parts)


def job_teacher(job: dict) -> dict:
    from datadistill.teacher import teacher_settings, train_teacher

    settings = teacher_settings(job["dataset"], "quick", **(SMOKE["teacher"] if job.get("smoke") else {}))
    t0 = time.perf_counter()
    m = train_teacher(settings, _path(job, "teacher", job["dataset"]), data_root=job["data_root"], progress=False)
    return {"job": "teacher", "dataset": job["dataset"], "test_accuracy": m["test_accuracy"],
            "val_accuracy": m["val_accuracy"], "seconds": m["seconds"], "bytes": m["bytes"], "model": m["model"],
            "settings": m["settings"], "wall_seconds_this_run": time.perf_counter() - t0, "peak_rss_mb": rss_mb()}


def job_baseline(job: dict) -> dict:
    from datadistill.baseline import full_data_baseline
    from datadistill.fileio import write_json

    kw = SMOKE["baseline"] if job.get("smoke") else {}
    res = full_data_baseline(job["dataset"], model="convnet", data_root=job["data_root"], progress=False, **kw)
    dest = _path(job, "baseline", job["dataset"]).with_suffix(".json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, res.to_dict())
    return {"job": "baseline", "dataset": job["dataset"], "test_mean": res.test_mean, "test_std": res.test_std,
            "epochs": res.epochs, "train_seconds": res.train_seconds, "file": str(dest), "peak_rss_mb": rss_mb()}


def job_experts(job: dict) -> dict:
    from datadistill.methods.trajectory import expert_settings, train_experts

    over = dict(SMOKE["experts"]) if job.get("smoke") else {}
    if job["kind"] == "el2n":
        over["curriculum"] = "el2n"
    settings = expert_settings(job["dataset"], "quick", **over)
    rep = train_experts(settings, _path(job, "experts", job["dataset"], job["kind"]), data_root=job["data_root"],
                        progress=False)
    return {"job": "experts", "dataset": job["dataset"], "kind": job["kind"], "num_experts": rep.num_experts,
            "epochs": rep.epochs, "accuracy_mean": rep.accuracy_mean, "seconds": sum(rep.seconds),
            "disk_mib": rep.disk_bytes / 2**20, "peak_rss_mb": rss_mb()}


def _set_config(job: dict):
    from datadistill.config import resolve_config

    over: dict = {"data_root": job["data_root"], "eval": {"runs": 0}}
    method = job["method"]
    if job.get("smoke"):
        over.update(SMOKE["set"])
        if method in ("random", "herding"):
            over.pop("iterations")
            over.pop("batch_real")
    if method in ("mtt", "pad"):
        over["experts"] = str(_path(job, "experts", job["dataset"], "el2n" if method == "pad" else "plain"))
        if job.get("smoke"):
            over["method_args"] = dict(SMOKE["trajectory"])
    return resolve_config(method, job["dataset"], IPC, "quick", **over)


def job_set(job: dict) -> dict:
    from datadistill.run import peak_memory_mb, run_distillation
    from datadistill.rng import resolve_device

    cfg = _set_config(job)
    out = _path(job, job["dataset"], job["method"], f"ipc{IPC}")
    res = run_distillation(cfg, out, progress=False, log=lambda m: print(m, file=sys.stderr))
    return {"job": "set", "dataset": job["dataset"], "method": job["method"], "folder": str(out),
            "iterations": cfg.iterations, "distill_seconds": res.distill_seconds, "soft_labels": res.synset.soft,
            "peak_memory_mb": peak_memory_mb(resolve_device("auto")), "config": cfg.to_dict()}


def job_eval(job: dict) -> dict:
    import json

    import numpy as np

    from datadistill.data import load_dataset
    from datadistill.protocols import load_protocol
    from datadistill.scores import rank_scores
    from datadistill.synset import SyntheticSet

    syn = SyntheticSet.load(_path(job, job["dataset"], job["method"], f"ipc{IPC}"))
    budget = SMOKE["eval"] if job.get("smoke") else (SHORT if job.get("budget") == "short" else EVAL)
    teacher = str(_path(job, "teacher", job["dataset"])) if job["protocol"] == "ddranking" else None
    protocol = load_protocol(job["protocol"], teacher=teacher, **budget)
    if syn.zca is not None and protocol.labels == "teacher":
        return {"job": "eval", **{k: job[k] for k in ("dataset", "method", "protocol")},
                "skipped": "the set is ZCA-whitened; the teacher labels normalized images"}
    full = json.loads(_path(job, "baseline", job["dataset"]).with_suffix(".json").read_text())["test_mean"]
    data = load_dataset(job["dataset"], job["data_root"], progress=False)
    t0 = time.perf_counter()
    s = rank_scores(syn, protocol, "convnet", full, test=data.test, train=data.train, val=data.val,
                    cache=_path(job, "scores", job["dataset"], job["protocol"]))
    acc = s["accuracies"]
    return {"job": "eval", "dataset": job["dataset"], "method": job["method"], "protocol": job["protocol"],
            "budget": budget, "accuracy": {"mean": float(np.mean(acc["set"])), "std": float(np.std(acc["set"])),
                                           "runs": len(acc["set"]), "accuracies": acc["set"]},
            "random_mean": float(np.mean(acc["random"])), "scores": s,
            "seconds": time.perf_counter() - t0, "peak_rss_mb": rss_mb()}


JOBS = {"teacher": job_teacher, "baseline": job_baseline, "experts": job_experts, "set": job_set, "eval": job_eval}


def plan(data_root: str, smoke: bool, short: bool = False) -> list[dict]:
    base = {"data_root": data_root, "smoke": smoke}
    datasets = ("mnist-5k",) if smoke else DATASETS
    jobs = []
    for d in datasets:
        jobs += [{"job": "teacher", "dataset": d, **base}, {"job": "baseline", "dataset": d, **base}]
        jobs += [{"job": "experts", "dataset": d, "kind": k, **base} for k in ("plain", "el2n")]
        jobs += [{"job": "set", "dataset": d, "method": m, **base} for m in METHODS]
        jobs += [{"job": "eval", "dataset": d, "method": m, "protocol": p, **base,
                  **({"budget": "short"} if short else {})} for m in METHODS for p in PROTOCOLS]
    return jobs


def plot(doc: dict, dest: Path) -> Path:
    """One panel per dataset and evaluation budget: each method's gain over the random subset under
    the same protocol (DD-Ranking's IOR, mean over the evaluation runs with their spread as error
    bars), one bar per protocol. Evaluations not yet run are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [r for r in doc["results"] if r.get("job") == "eval" and "scores" in r]
    panels = list(dict.fromkeys((r["dataset"], budget_label(r.get("budget"))) for r in evals))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.6), squeeze=False)
    width = 0.8 / len(PROTOCOLS)
    for ax, (dataset, budget) in zip(axes[0], panels):
        mine = [r for r in evals if r["dataset"] == dataset and budget_label(r.get("budget")) == budget]
        methods = [m for m in METHODS if any(r["method"] == m for r in mine)]
        for k, protocol in enumerate(PROTOCOLS):
            rows = {r["method"]: r for r in mine if r["protocol"] == protocol}
            xs = [i + (k - (len(PROTOCOLS) - 1) / 2) * width for i, m in enumerate(methods) if m in rows]
            ior = [rows[m]["scores"]["ior"] for m in methods if m in rows]
            ax.bar(xs, [s["mean"] for s in ior], width, yerr=[s.get("std", 0.0) for s in ior], capsize=2,
                   label=protocol)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_title(f"{dataset}, IPC {IPC}, {budget}", fontsize=9)
        ax.set_ylabel("accuracy gain over random (points)")
        ax.legend(title="protocol", fontsize=8)
    return save_figure(fig, dest)


def main(argv: list[str]) -> Path | None:
    check_flags(argv)
    smoke = "--smoke" in argv
    dest = results_file(NAME, argv)
    if "--plot" in argv:
        return redraw(plot, dest)
    data_root = data_root_arg(argv)
    run_jobs(NAME, plan(data_root, smoke, "--short" in argv), JOBS, argv,
             label_keys=("job", "dataset", "method", "kind", "protocol", "budget"), dest=dest,
             extra=lambda rows: {"smoke": smoke, "eval_budget": EVAL, "short_budget": SHORT})
    redraw(plot, dest)


if __name__ == "__main__":
    main(sys.argv)
