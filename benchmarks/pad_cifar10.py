"""PAD against MTT on the CIFAR-10 subset of ../shared/data (4,653 training images after the
validation split) at IPC 10, quick preset, with the same budget and the same number of experts,
and PAD with each of its parts switched off.

Jobs, each in a fresh Python process (so peak memory belongs to one job), results written to
benchmarks/results/pad_cifar10.json after every job:

1. experts: PAD's quick experts without the scheduler (`datadistill experts --dataset cifar10
   --epochs 8`, 4 x 8 epochs, ZCA: MTT's quick CIFAR-10 experts have 20 epochs, PAD's 8) into
   runs/experts-cifar10-quick (shared with benchmarks/mtt_cifar10.py, resumed if there), and
   the quick PAD experts (`--curriculum el2n`: the same 4 x 8 epochs under the data scheduler, plus
   the EL2N scores, 2 networks x 2 epochs) into runs/experts-cifar10-quick-el2n: test accuracy,
   seconds, disk size, the scheduler's per-epoch sample counts.
2. distillations at IPC 10 with the quick preset (100 iterations of 10 student steps on 50
   images), then 3 evaluation runs each (ConvNet, 300 epochs with DSA at the learned step size, on
   the soft labels where the set has them):
   - mtt                MTT on the plain experts, with PAD's quick trajectory settings (start
                        epochs up to 6, as PAD's; MTT's own quick preset starts up to 18 on its
                        20-epoch experts, benchmarks/mtt_cifar10.py)
   - pad                PAD: scheduler experts, depth rule alpha 0.25, learned soft labels
   - pad_no_scheduler   PAD on the plain experts (require_curriculum=false)
   - pad_no_selection   PAD with alpha 0 (all parameters matched)
   - pad_loss_rule      PAD with the released code's loss rule instead of the depth rule
   - pad_no_soft_labels PAD with hard labels
   Each row: accuracy mean/std over the runs, distillation seconds, seconds per iteration, peak
   memory, evaluation seconds; the experts' cost is in the experts rows.

Usage: python benchmarks/pad_cifar10.py [--data-root DIR]   (about 3 hours on a 2-core CPU)
       python benchmarks/pad_cifar10.py --smoke              (a 2-minute check that everything runs:
                                                              tiny networks and budgets; its numbers mean nothing)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from common import REPO, data_root_arg, results_file, rss_mb, run_jobs

NAME = "pad_cifar10"
IPC = 10
EVAL_RUNS = 3
PLAIN = REPO / "runs" / "experts-cifar10-quick"
CURRICULUM = REPO / "runs" / "experts-cifar10-quick-el2n"

VARIANTS = {  # name: (method, experts kind, method_args overrides)
    "mtt": ("mtt", "plain", {}),
    "pad": ("pad", "el2n", {}),
    "pad_no_scheduler": ("pad", "plain", {"require_curriculum": False}),
    "pad_no_selection": ("pad", "el2n", {"alpha": 0.0}),
    "pad_loss_rule": ("pad", "el2n", {"selection": "loss"}),
    "pad_no_soft_labels": ("pad", "el2n", {"soft_labels": False}),
}

# --smoke: tiny networks and budgets (same code paths, numbers meaningless)
SMOKE_NET = {"width": 8, "depth": 1}
SMOKE_EXPERTS = {"num_experts": 1, "epochs": 2, "model_args": SMOKE_NET, "zca": False, "score_nets": 1,
                 "score_epochs": 0, "add_end_epoch": 1, "rm_epoch_first": 1, "rm_epoch_second": 1}
SMOKE_DISTILL = {"iterations": 2, "model_args": SMOKE_NET, "zca": False, "val_epochs": 1,
                 "method_args": {"syn_steps": 2, "batch_syn": 20, "max_start_epoch": 1, "expert_epochs": 1}}
SMOKE_EVAL = {"runs": 1, "epochs": 2}


def job_experts(job: dict) -> dict:
    from datadistill.methods.trajectory import expert_settings, train_experts

    over = dict(SMOKE_EXPERTS) if job.get("smoke") else {}
    if job["kind"] == "el2n":
        over["curriculum"] = "el2n"
    else:
        # the plain experts are PAD's quick experts without the scheduler (8 epochs where MTT's own
        # quick CIFAR-10 experts have 20), so both kinds train the same number of epochs
        over = {"epochs": expert_settings("cifar10", "quick", curriculum="el2n").epochs,
                **{k: v for k, v in over.items() if k in ("num_experts", "epochs", "model_args", "zca")}}
    settings = expert_settings("cifar10", "quick", **over)
    t0 = time.perf_counter()
    rep = train_experts(settings, job["experts"], data_root=job["data_root"], device="auto", progress=False)
    row = {"job": "experts", "kind": job["kind"], "directory": job["experts"],
           "settings": {k: v for k, v in vars(settings).items()}, **rep.to_dict(),
           "seconds_per_expert": sum(rep.seconds) / max(1, len(rep.seconds)), "experts_seconds_total": sum(rep.seconds),
           "disk_mib": rep.disk_bytes / 2**20, "wall_seconds_this_run": time.perf_counter() - t0,
           "peak_rss_mb": rss_mb()}
    if rep.curriculum:
        from datadistill.methods.trajectory.difficulty import read_scores

        scores = read_scores(Path(job["experts"]) / "el2n.safetensors")
        row["el2n_seconds"] = scores.seconds
        row["el2n_settings"] = scores.settings
        row["samples_per_epoch"] = [r["samples"] for r in rep.curriculum["schedule"]]
        row.pop("curriculum", None)
    return row


def job_distill(job: dict) -> dict:
    import torch

    from datadistill.config import resolve_config
    from datadistill.data import load_dataset
    from datadistill.evaluate import evaluate
    from datadistill.run import peak_memory_mb, run_distillation

    method, kind, method_args = VARIANTS[job["variant"]]
    base: dict = {}
    if method == "mtt":  # MTT at PAD's quick budget: the same trajectory settings (start epochs within 8)
        pad_args = resolve_config("pad", "cifar10", IPC, "quick").method_args
        shared = ("syn_steps", "expert_epochs", "max_start_epoch", "lr_lr", "lr_teacher", "batch_syn")
        base = {k: pad_args[k] for k in shared}
    over: dict = {}
    if job.get("smoke"):
        over = {k: v for k, v in SMOKE_DISTILL.items() if k != "method_args"}
        base.update(SMOKE_DISTILL["method_args"])
    method_args = {**base, **method_args}
    experts = str(CURRICULUM if kind == "el2n" else PLAIN) if not job.get("smoke") else job[f"experts_{kind}"]
    cfg = resolve_config(method, "cifar10", IPC, "quick", experts=experts, data_root=job["data_root"],
                         eval={"runs": 0}, method_args=method_args, **over)
    data = load_dataset("cifar10", cfg.data_root, progress=False)
    before = rss_mb()
    res = run_distillation(cfg, None, data=data, progress=False, log=lambda m: print(m, file=sys.stderr))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ev_kw = dict(model="convnet", runs=EVAL_RUNS, epochs=cfg.eval.resolved_epochs(), aug=cfg.eval.aug, test=data.test,
                 device=dev, seed=cfg.seed, progress=False, model_args=cfg.model_args)
    if job.get("smoke"):
        ev_kw.update(runs=SMOKE_EVAL["runs"], epochs=SMOKE_EVAL["epochs"])
    t0 = time.perf_counter()
    ev = evaluate(res.synset, **ev_kw)  # lr None: the learned step size; soft labels when the set has them
    return {
        "job": "distill", "variant": job["variant"], "method": method, "experts": experts, "experts_kind": kind,
        "dataset": "cifar10", "ipc": IPC, "preset": "quick", "iterations": cfg.iterations,
        "method_args": cfg.method_args, "soft_labels": res.synset.soft,
        "accuracy": {"mean": ev.mean, "std": ev.std, "runs": ev.runs, "accuracies": ev.accuracies, "lr": ev.lr,
                     "epochs": ev.epochs, "aug": ev.aug},
        "distill_seconds": res.distill_seconds, "seconds_per_iteration": res.distill_seconds / max(1, cfg.iterations),
        "eval_seconds": time.perf_counter() - t0, "learned_lr": res.synset.lr,
        "peak_memory_mb_process": peak_memory_mb(dev), "rss_before_distill_mb": before, "config": cfg.to_dict(),
    }


JOBS = {"experts": job_experts, "distill": job_distill}


def plan(data_root: str, smoke: bool) -> list[dict]:
    base = {"data_root": data_root, "smoke": smoke}
    if smoke:
        base["experts_plain"] = str(REPO / "runs" / "smoke-experts-plain")
        base["experts_el2n"] = str(REPO / "runs" / "smoke-experts-el2n")
    jobs = [{"job": "experts", "kind": "plain", "experts": base.get("experts_plain", str(PLAIN)), **base},
            {"job": "experts", "kind": "el2n", "experts": base.get("experts_el2n", str(CURRICULUM)), **base}]
    jobs += [{"job": "distill", "variant": v, **base} for v in VARIANTS]
    return jobs


def summarize(rows: list[dict]) -> list[dict]:
    """One line per variant: accuracy and the cost of the experts it used plus its distillation."""
    experts = {r["kind"]: r for r in rows if r.get("job") == "experts"}
    out = []
    for r in rows:
        if r.get("job") != "distill":
            continue
        ex = experts.get(r["experts_kind"], {})
        out.append({"variant": r["variant"], "accuracy_mean": r["accuracy"]["mean"], "accuracy_std": r["accuracy"]["std"],
                    "runs": r["accuracy"]["runs"], "distill_seconds": r["distill_seconds"],
                    "experts_seconds": ex.get("experts_seconds_total"), "el2n_seconds": ex.get("el2n_seconds"),
                    "peak_memory_mb": r["peak_memory_mb_process"]})
    return out


def main(argv: list[str]) -> None:
    smoke = "--smoke" in argv
    data_root = data_root_arg(argv)

    def extra(rows: list[dict]) -> dict:
        return {"smoke": smoke,
                "paper": {"cifar10_ipc10": {"mtt": 65.3, "pad": 67.4},
                          "source": "PAD paper (arXiv:2408.03360) main table, as quoted in the issue"},
                "summary": summarize(rows)}

    run_jobs(NAME, plan(data_root, smoke), JOBS, argv, label_keys=("job", "kind", "variant"),
             dest=results_file(NAME, argv), extra=extra)


if __name__ == "__main__":
    main(sys.argv)
