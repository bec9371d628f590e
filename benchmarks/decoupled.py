"""Decoupled distillation against its control (issue 20): SRe2L and RDED on one teacher, random real
images relabelled by the same teacher, and DM and MTT, under one soft-label protocol, plus their
hard-label accuracy; the teacher's cost, distillation seconds and peak memory per method.

On MNIST and the CIFAR-10 subset of ../shared/data, at IPC 10 (and IPC 50 on the CIFAR-10 subset),
with the quick presets. One ConvNet-BN teacher per dataset (`datadistill teacher`, quick preset)
in runs/soft/teacher-DATASET: the folder benchmarks/soft_labels.py makes, so a checkout that ran
it reuses that teacher (same settings: train_teacher keeps it). The DM and MTT rows evaluate the
sets soft_labels.py distils (runs/soft/DATASET-dm-ipc10, -mtt-ipc10) and say so where those are
absent.

Protocols (the evaluation budget of soft_labels.py, stated in every row: 300 epochs, 3 runs; the
soft protocol chooses the lr on validation from {0.001, 0.005, 0.01, 0.05, 0.1}):
  soft  `--protocol ddranking` with the teacher: every cutmixed batch labelled by the teacher, KL
  hard  `--protocol datadistill --labels hard --lr 0.01`: the class each image was made for, DSA,
        cross-entropy, at the DC/DSA/DM papers' lr 0.01 instead of the grid (five trainings fewer per
        set, on a CPU shared by other benchmarks)

Jobs, each in its own process, results in benchmarks/results/decoupled.json after every job:
  teacher  DATASET                 the teacher, its accuracy and training seconds
  set      DATASET METHOD IPC      the distillation (runs/decoupled/DATASET-METHOD-ipcIPC, resumable)
  eval     DATASET METHOD IPC P    one set under protocol P

Usage: python benchmarks/decoupled.py [--data-root DIR] [--resume] [--only I,J]   (hours on a
       2-core CPU: run it in parts with --only)
       python benchmarks/decoupled.py --smoke   (tiny budgets and networks on mnist-5k: checks the
                                                 code path; its numbers mean nothing)
       python benchmarks/decoupled.py --short ...   (the evaluations at the SHORT budget: 1 run of 50
                                                     epochs, lr 0.01; its rows are kept apart)
       python benchmarks/decoupled.py --summarize   (the README table and the plot from the JSON)

Not here: RDED on the generated 1.28M-image dataset (a cost figure, no accuracy) is measured by
benchmarks/scale.py's `rded` jobs, on the out-of-core store that benchmark builds.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common import REPO, RESULTS, check_flags, data_root_arg, results_file, rss_mb, run_jobs, save_figure

NAME = "decoupled"
DATASETS = ("mnist", "cifar10")
METHODS = ("sre2l", "rded", "random")  # distilled here; random is relabelled by the teacher (the control)
REUSED = ("dm", "mtt")  # distilled by benchmarks/soft_labels.py
IPCS = {"mnist": (10,), "cifar10": (10, 50)}
PROTOCOLS = ("soft", "hard")
EVAL = {"runs": 3, "epochs": 300}
# --short: what fits a session on the shared 2-core CPU (one soft-label training of 300 epochs on 100
# CIFAR images costs about 10 CPU-minutes there): 1 run of 50 epochs at lr 0.01, no lr grid
SHORT = {"runs": 1, "epochs": 50, "lr": 0.01}
HARD_LR = 0.01  # the hard-label evaluation's fixed lr (the DC/DSA/DM papers'), instead of the grid

SMOKE_NET = {"width": 8, "depth": 1}
SMOKE = {
    "teacher": {"epochs": 1, "model_args": SMOKE_NET},
    "set": {"model_args": SMOKE_NET, "val_epochs": 1},
    "sre2l": {"iterations": 2},
    "rded": {"method_args": {"mipc": 20, "num_crop": 2}},
    "eval": {"runs": 1, "epochs": 1, "lr_grid": [0.01]},
}


def _root(job: dict, kind: str = "decoupled") -> Path:
    return REPO / "runs" / (f"{kind}-smoke" if job.get("smoke") else kind)


def teacher_dir(job: dict) -> Path:
    return _root(job, "soft") / f"teacher-{job['dataset']}"


def set_dir(job: dict) -> Path:
    if job["method"] in REUSED:
        return _root(job, "soft") / f"{job['dataset']}-{job['method']}-ipc{job['ipc']}"
    return _root(job) / f"{job['dataset']}-{job['method']}-ipc{job['ipc']}"


def job_teacher(job: dict) -> dict:
    from datadistill.teacher import teacher_settings, train_teacher

    settings = teacher_settings(job["dataset"], "quick", **(SMOKE["teacher"] if job.get("smoke") else {}))
    t0 = time.perf_counter()
    m = train_teacher(settings, teacher_dir(job), data_root=job["data_root"], progress=False)
    return {"job": "teacher", "dataset": job["dataset"], "test_accuracy": m["test_accuracy"],
            "val_accuracy": m["val_accuracy"], "seconds": m["seconds"], "bytes": m["bytes"], "model": m["model"],
            "model_args": m["model_args"], "settings": m["settings"], "folder": str(teacher_dir(job)),
            "wall_seconds_this_run": time.perf_counter() - t0, "peak_rss_mb": rss_mb()}


def job_set(job: dict) -> dict:
    from datadistill.config import resolve_config
    from datadistill.run import peak_memory_mb, run_distillation
    from datadistill.rng import resolve_device

    method = job["method"]
    over: dict = {"data_root": job["data_root"], "eval": {"runs": 0}, "artifacts": {"teacher": str(teacher_dir(job))}}
    if job.get("smoke"):
        over.update(SMOKE["set"])
        over.update(SMOKE.get(method, {}))
    cfg = resolve_config(method, job["dataset"], job["ipc"], "quick", **over)
    out = set_dir(job)
    res = run_distillation(cfg, out, progress=False, log=lambda m: print(m, file=sys.stderr))
    labels = res.synset.meta.get("labels", {})
    return {"job": "set", "dataset": job["dataset"], "method": method, "ipc": job["ipc"], "folder": str(out),
            "iterations": cfg.iterations, "distill_seconds": res.distill_seconds,
            "peak_memory_mb": peak_memory_mb(resolve_device("auto")), "labels": labels,
            "stored_label_bytes": labels.get("stored_bytes"), "method_args": cfg.method_args,
            "teacher_fingerprint": cfg.artifact_fingerprints.get("teacher")}


def protocol_for(job: dict):
    from datadistill.protocols import load_protocol

    budget = SMOKE["eval"] if job.get("smoke") else (SHORT if job.get("budget") == "short" else EVAL)
    if job["protocol"] == "soft":
        return load_protocol("ddranking", teacher=str(teacher_dir(job)), **budget), budget
    hard = {**budget, "lr": budget.get("lr", HARD_LR)}  # no lr grid: 3/8 of the cost (see the module doc)
    return load_protocol("datadistill", labels="hard", **hard), hard


def job_eval(job: dict) -> dict:
    import numpy as np

    from datadistill.data import load_dataset
    from datadistill.evaluate import evaluate
    from datadistill.synset import SyntheticSet

    folder = set_dir(job)
    head = {"job": "eval", **{k: job[k] for k in ("dataset", "method", "ipc", "protocol")}}
    if not (folder / "synset.safetensors").exists():
        return {**head, "skipped": f"no set in {folder}: run benchmarks/soft_labels.py first"}
    syn = SyntheticSet.load(folder)
    protocol, budget = protocol_for(job)
    if syn.zca is not None and protocol.labels == "teacher":
        return {**head, "skipped": "the set is ZCA-whitened; the teacher labels normalized images"}
    data = load_dataset(job["dataset"], job["data_root"], progress=False)
    t0 = time.perf_counter()
    res = evaluate(syn, protocol, model="convnet", test=data.test, val=data.val, device="cpu", progress=False)
    return {**head, "budget": budget, "protocol_settings": {k: getattr(protocol, k) for k in (
                "labels", "loss", "temperature", "mix", "aug", "optimizer", "schedule", "epochs")},
            "accuracy": {"mean": res.mean, "std": res.std, "runs": res.runs, "accuracies": res.accuracies},
            "lr": res.lr, "lr_selection": res.extra.get("lr_selection"), "set_soft_labels": syn.soft,
            "set_labels": syn.meta.get("labels"), "seconds": time.perf_counter() - t0,
            "eval_accuracy_std": float(np.std(res.accuracies)), "peak_rss_mb": rss_mb()}


JOBS = {"teacher": job_teacher, "set": job_set, "eval": job_eval}


def plan(data_root: str, smoke: bool, short: bool = False) -> list[dict]:
    base = {"data_root": data_root, "smoke": smoke}
    datasets = ("mnist-5k",) if smoke else DATASETS
    jobs = []
    for d in datasets:
        jobs.append({"job": "teacher", "dataset": d, **base})
        for ipc in (10,) if smoke else IPCS[d]:
            jobs += [{"job": "set", "dataset": d, "method": m, "ipc": ipc, **base} for m in METHODS]
            reused = REUSED if ipc == 10 else ()
            jobs += [{"job": "eval", "dataset": d, "method": m, "ipc": ipc, "protocol": p, **base,
                      **({"budget": "short"} if short else {})}
                     for m in (*METHODS, *reused) for p in PROTOCOLS]
    return jobs


LABEL = {"sre2l": "SRe2L", "rded": "RDED", "random": "random + teacher", "dm": "DM", "mtt": "MTT"}


def summarize(dest: Path) -> str:
    """The README table (markdown) from the results file, and a plot beside it."""
    doc = json.loads(dest.read_text())
    rows = [r for r in doc["results"] if "error" not in r]
    sets = {(r["dataset"], r["method"], r["ipc"]): r for r in rows if r["job"] == "set"}
    evals = {(r["dataset"], r["method"], r["ipc"], r["protocol"]): r for r in rows if r["job"] == "eval"
             and "accuracy" in r}
    teachers = {r["dataset"]: r for r in rows if r["job"] == "teacher"}
    soft_file = RESULTS / "soft_labels.json"  # the DM and MTT sets' cost, where soft_labels.py made them
    if soft_file.exists():
        for r in json.loads(soft_file.read_text()).get("results", []):
            if r.get("job") == "set" and r.get("method") in REUSED and "error" not in r:
                sets.setdefault((r["dataset"], r["method"], 10), {**r, "stored_label_bytes": None})
    lines = ["| dataset | IPC | set | soft labels (teacher, KL, cutmix) | hard labels | distil s | peak MiB "
             "| stored labels |",
             "|---|---|---|---|---|---|---|---|"]
    for (d, m, ipc) in sorted({k[:3] for k in evals}, key=lambda k: (k[0], k[2], list(LABEL).index(k[1]))):
        def acc(p):
            e = evals.get((d, m, ipc, p))
            if not e:
                return "—"
            a = e["accuracy"]  # one run has no spread to show
            return f"{a['mean']:.2f} (1 run)" if a["runs"] == 1 else f"{a['mean']:.2f} ± {a['std']:.2f} (n={a['runs']})"
        s = sets.get((d, m, ipc))
        secs = f"{s['distill_seconds']:.0f}" if s else "(soft_labels.py)"
        mem = f"{s['peak_memory_mb']:.0f}" if s else "—"
        stored = f"{s['stored_label_bytes']:,} B" if s and s.get("stored_label_bytes") is not None else "—"
        lines.append(f"| {d} | {ipc} | {LABEL[m]} | {acc('soft')} | {acc('hard')} | {secs} | {mem} | {stored} |")
    budgets = sorted({json.dumps(e["budget"], sort_keys=True) for e in evals.values()})
    lines.append(f"\nEvaluation budget (ConvNet student): {'; '.join(budgets)}.")
    for d, t in sorted(teachers.items()):
        lines.append(f"\nTeacher on {d}: {t['model']}, test accuracy {t['test_accuracy']:.2f} %, "
                     f"{t['seconds']:.0f} s to train.")
    _plot(evals, dest.with_suffix(".png"))
    return "\n".join(lines)


def _plot(evals: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(k[0], k[2]) for k in evals})
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False)
    for ax, (d, ipc) in zip(axes[0], groups):
        methods = [m for m in LABEL if any(k[:3] == (d, m, ipc) for k in evals)]
        for j, p in enumerate(PROTOCOLS):
            vals = [evals[(d, m, ipc, p)]["accuracy"]["mean"] if (d, m, ipc, p) in evals else 0 for m in methods]
            ax.bar([i + 0.4 * j for i in range(len(methods))], vals, 0.4, label=p)
        ax.set_xticks([i + 0.2 for i in range(len(methods))], [LABEL[m] for m in methods], rotation=30, ha="right")
        ax.set_title(f"{d}, IPC {ipc}")
        ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend(title="labels")
    save_figure(fig, dest)


def main(argv: list[str]) -> None:
    check_flags(argv)
    smoke = "--smoke" in argv
    dest = results_file(NAME, argv)
    if "--summarize" in argv:
        print(summarize(dest))
        return
    data_root = data_root_arg(argv)
    run_jobs(NAME, plan(data_root, smoke, "--short" in argv), JOBS, argv, label_keys=("job", "dataset", "method", "ipc", "protocol"),
             dest=dest, extra=lambda rows: {"smoke": smoke, "eval_budget": EVAL})


if __name__ == "__main__":
    main(sys.argv)
