"""MTT, DATM and PAD (paper and code variants) on the CIFAR-10 subset at IPC 1 and 10 (issue 21).

All sets match the same experts, the 20-epoch quick CIFAR-10 experts (`expert_settings("cifar10",
"quick")`: 4 x 20 epochs, SGD, ZCA), at the same budget (each method's quick preset: 200
iterations of 20 student steps at IPC 1, 100 of 10 steps on 50 images at IPC 10). PAD has the
same trajectory settings as DATM (start epochs, step sizes, label learning rate) with its depth
rule at its quick alpha (0 at IPC 1, 0.25 at IPC 10), and matches the plain experts
(``require_curriculum=false``: PAD without its data scheduler, so that every row sees the same
trajectories). Ablations of DATM at IPC 10: the growing range off (``sequential_generation=false``,
start epochs 0..17 from the start) and the soft labels off (hard labels, the same starting images).

Each set is evaluated under two protocols, 3 runs each, 300 epochs with DSA at the set's learned
step size (the quick preset's evaluation with 3 networks):
  own   the set's own labels (soft where it learned them)
  hard  the arg-max of its labels (the hard-label protocol; identical otherwise)

Experts: the folder named by --experts DIR if its manifest's fingerprint is that of the quick
CIFAR-10 experts and it lists all of them (read only; e.g. another benchmark's), else
runs/datm/experts-cifar10, trained (resumably) by the experts job. --partial-experts accepts a
matching folder that lists only some of them (every row records how many): point it at a copy
that does not change while the jobs run.

Jobs, each in its own process, results in benchmarks/results/datm.json after every job:
  experts                    the experts folder (found or trained)
  set   VARIANT IPC          the distillation (runs/datm-cifar10-VARIANT-ipcIPC, resumable)
  eval  VARIANT IPC PROTOCOL the evaluation of one set under one protocol

Usage: python benchmarks/datm.py [--data-root DIR] [--experts DIR [--partial-experts]] [--resume] [--only I,J]
       (hours on a 2-core CPU: run it in parts with --only)
       python benchmarks/datm.py --smoke   (MNIST-5k, tiny experts, networks and budgets: checks the
                                            code path; its numbers mean nothing)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common import REPO, data_root_arg, results_file, rss_mb, run_jobs

NAME = "datm"
DATASET = "cifar10"
IPCS = (1, 10)
# variant -> (method, method_args over the shared trajectory settings, IPCs)
VARIANTS = {
    "mtt": ("mtt", {}, IPCS),
    "datm": ("datm", {}, IPCS),
    "pad-paper": ("pad", {"variant": "paper"}, IPCS),
    "pad-code": ("pad", {"variant": "code"}, IPCS),
    "datm-fixed-range": ("datm", {"sequential_generation": False}, (10,)),
    "datm-hard-labels": ("datm", {"soft_labels": False}, (10,)),
}
PROTOCOLS = ("own", "hard")
EVAL = {"runs": 3, "epochs": 300, "aug": "dsa"}
# DATM's options a PAD row takes from DATM's quick preset (the same trajectories, start epochs, labels)
SHARED_WITH_PAD = ("syn_steps", "expert_epochs", "max_start_epoch", "min_start_epoch", "current_max_start_epoch",
                   "expansion_end_epoch", "sequential_generation", "threshold", "lr_lr", "lr_teacher", "batch_syn",
                   "lr_y", "momentum_y", "image_init", "label_init", "label_epoch")

SMOKE_DATASET = "mnist-5k"
SMOKE_NET = {"width": 8, "depth": 1}
SMOKE_EXPERTS = {"num_experts": 2, "epochs": 3, "model_args": SMOKE_NET, "zca": False}
SMOKE_SET = {"iterations": 2, "model_args": SMOKE_NET, "zca": False, "val_epochs": 1, "checkpoint_every": 1}
SMOKE_TRAJECTORY = {"syn_steps": 2, "batch_syn": 20, "expert_epochs": 1, "max_start_epoch": 2,
                    "current_max_start_epoch": 1, "expansion_end_epoch": 2}
SMOKE_EVAL = {"runs": 1, "epochs": 1, "aug": "dsa"}


def _root(job: dict) -> Path:
    return REPO / "runs" / ("datm-smoke" if job.get("smoke") else "datm")


def _dataset(job: dict) -> str:
    return SMOKE_DATASET if job.get("smoke") else DATASET


def _expert_settings(job: dict):
    from datadistill.methods.trajectory import expert_settings

    return expert_settings(_dataset(job), "quick", **(SMOKE_EXPERTS if job.get("smoke") else {}))


def _experts_folder(job: dict, data=None) -> tuple[Path, str]:
    """(the experts folder to use, why): --experts DIR when it holds exactly the quick experts,
    all of them, else our own folder."""
    from datadistill.data import load_dataset
    from datadistill.methods.trajectory.experts import fingerprint_of, identity_of, read_manifest

    own = _root(job) / f"experts-{_dataset(job)}"
    given = job.get("experts")
    if not given:
        return own, "no --experts folder given"
    settings = _expert_settings(job)
    data = data or load_dataset(_dataset(job), job["data_root"], progress=False)
    want = fingerprint_of(identity_of(settings, data.spec, len(data.train)))
    m = read_manifest(Path(given))
    if m is None:
        return own, f"{given} holds no experts"
    if m["fingerprint"] != want:
        return own, f"{given} holds other experts (fingerprint {m['fingerprint']}, the quick ones are {want})"
    done = len([e for e in m["experts"] if e["index"] < settings.num_experts])
    if job.get("partial") and done >= 1:
        return Path(given), (f"{given}: {done} of the {settings.num_experts} quick experts (fingerprint {want}; "
                             "--partial-experts), read only")
    if done < settings.num_experts:
        return own, f"{given} lists {done} of the {settings.num_experts} quick experts (still training?)"
    return Path(given), f"{given}: the quick experts (fingerprint {want}), all {done}, read only"


def job_experts(job: dict) -> dict:
    from datadistill.methods.trajectory import open_experts, train_experts

    folder, why = _experts_folder(job)
    t0 = time.perf_counter()
    if folder == _root(job) / f"experts-{_dataset(job)}":
        train_experts(_expert_settings(job), folder, data_root=job["data_root"], progress=False)
    ex = open_experts(folder)
    m = ex.manifest
    return {"job": "experts", "folder": str(folder), "why": why, "fingerprint": m["fingerprint"],
            "num_experts": ex.num_experts, "epochs": ex.epochs, "optimizer": m.get("optimizer", {"kind": "sgd"}),
            "test_accuracies": [e["test_accuracy"] for e in m["experts"]],
            "experts_seconds_total": sum(e["seconds"] for e in m["experts"]),
            "wall_seconds_this_run": time.perf_counter() - t0}


def _config(job: dict, experts: Path):
    from datadistill.config import resolve_config

    method, extra, _ = VARIANTS[job["variant"]]
    ipc, dataset = job["ipc"], _dataset(job)
    over: dict = {"data_root": job["data_root"], "eval": {"runs": 0}, "experts": str(experts)}
    if job.get("smoke"):
        over.update(SMOKE_SET)
    method_args: dict = {}
    if job.get("smoke"):  # the smoke's trajectory settings, as far as the method has them
        from dataclasses import fields

        from datadistill.methods import get_method

        known = {f.name for f in fields(get_method(method).Options)}
        method_args = {k: v for k, v in SMOKE_TRAJECTORY.items() if k in known}
    if method == "pad":  # DATM's trajectory settings, PAD's selection on the plain experts
        datm = resolve_config("datm", dataset, ipc, "quick", **over).method_args
        method_args = {**{k: datm[k] for k in SHARED_WITH_PAD if k in datm}, **method_args,
                       "soft_labels": True, "require_curriculum": False}
    method_args.update(extra)
    return resolve_config(method, dataset, ipc, "quick", **over, method_args=method_args)


def _set_folder(job: dict) -> Path:
    return _root(job) / f"{_dataset(job)}-{job['variant']}-ipc{job['ipc']}"


def job_set(job: dict) -> dict:
    from datadistill.run import peak_memory_mb, run_distillation
    from datadistill.rng import resolve_device

    experts, why = _experts_folder(job)
    cfg = _config(job, experts)
    out = _set_folder(job)
    res = run_distillation(cfg, out, progress=False, log=lambda m: print(m, file=sys.stderr))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    skipped = sum(1 for r in steps if r.get("skipped"))
    first, last = steps[: max(1, len(steps) // 10)], steps[-max(1, len(steps) // 10):]
    return {"job": "set", "variant": job["variant"], "method": cfg.method, "ipc": job["ipc"], "folder": str(out),
            "experts": str(experts), "experts_why": why, "iterations": cfg.iterations,
            "method_args": cfg.method_args, "soft_labels": res.synset.soft, "learned_lr": res.synset.lr,
            "skipped_iterations": skipped,
            "loss_first_tenth": sum(r["loss"] for r in first) / len(first),
            "loss_last_tenth": sum(r["loss"] for r in last) / len(last),
            "meta_datm": res.synset.meta.get("datm"), "distill_seconds": res.distill_seconds,
            "seconds_per_iteration": res.distill_seconds / max(1, cfg.iterations),
            "peak_memory_mb": peak_memory_mb(resolve_device("auto")), "config": cfg.to_dict()}


def job_eval(job: dict) -> dict:
    from datadistill.data import load_dataset
    from datadistill.evaluate import evaluate
    from datadistill.synset import SyntheticSet

    syn = SyntheticSet.load(_set_folder(job))
    budget = dict(SMOKE_EVAL if job.get("smoke") else EVAL)
    model_args = SMOKE_NET if job.get("smoke") else None
    data = load_dataset(_dataset(job), job["data_root"], progress=False)
    labels = "auto" if job["protocol"] == "own" else "hard"
    t0 = time.perf_counter()
    ev = evaluate(syn, model="convnet", test=data.test, device="auto", seed=0, model_args=model_args,
                  progress=False, labels=labels, **budget)
    return {"job": "eval", "variant": job["variant"], "ipc": job["ipc"], "protocol": job["protocol"],
            "labels": labels, "set_soft": syn.soft, "budget": budget, "lr": ev.lr,
            "accuracy": {"mean": ev.mean, "std": ev.std, "runs": ev.runs, "accuracies": ev.accuracies},
            "seconds": time.perf_counter() - t0, "peak_rss_mb": rss_mb()}


JOBS = {"experts": job_experts, "set": job_set, "eval": job_eval}


def plan(data_root: str, smoke: bool, experts: str | None, partial: bool = False) -> list[dict]:
    base = {"data_root": data_root, "smoke": smoke, "experts": experts, "partial": partial}
    sets = [(v, i) for v, (_, _, ipcs) in VARIANTS.items() for i in ((1,) if smoke else ipcs)]
    jobs = [{"job": "experts", **base}]
    jobs += [{"job": "set", "variant": v, "ipc": i, **base} for v, i in sets]
    jobs += [{"job": "eval", "variant": v, "ipc": i, "protocol": p, **base} for v, i in sets for p in PROTOCOLS]
    return jobs


def summarize(rows: list[dict]) -> list[dict]:
    """One line per set: its two accuracies, skipped iterations and cost."""
    sets = {(r["variant"], r["ipc"]): r for r in rows if r.get("job") == "set"}
    evals = {(r["variant"], r["ipc"], r["protocol"]): r["accuracy"] for r in rows if r.get("job") == "eval"}
    out = []
    for (v, ipc), s in sets.items():
        line = {"variant": v, "ipc": ipc, "soft_labels": s["soft_labels"], "skipped": s["skipped_iterations"],
                "iterations": s["iterations"], "distill_seconds": round(s["distill_seconds"], 1)}
        for p in PROTOCOLS:
            a = evals.get((v, ipc, p))
            line[p] = f"{a['mean']:.2f} +- {a['std']:.2f} ({a['runs']})" if a else None
        out.append(line)
    return out


def main(argv: list[str]) -> None:
    smoke = "--smoke" in argv
    data_root = data_root_arg(argv)
    experts = argv[argv.index("--experts") + 1] if "--experts" in argv else None

    def extra(rows: list[dict]) -> dict:
        return {"smoke": smoke, "eval_budget": EVAL, "summary": summarize(rows),
                "paper": {"datm_cifar10": {"ipc1": 46.9, "ipc10": 66.8},
                          "source": "DATM paper (arXiv:2310.05773), full CIFAR-10 with 100 x 100-epoch GSAM experts"}}

    run_jobs(NAME, plan(data_root, smoke, experts, "--partial-experts" in argv), JOBS, argv, label_keys=("job", "variant", "ipc", "protocol"),
             dest=results_file(NAME, argv), extra=extra)


if __name__ == "__main__":
    main(sys.argv)
