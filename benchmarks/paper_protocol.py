"""The papers' full protocol on a CPU: DC and DSA at IPC 1 on MNIST and Fashion-MNIST with the
`paper` preset unchanged (presets/dc.yaml, presets/dsa.yaml: 1,000 iterations of loops (1, 1),
batch_real 256, lr_img 0.1, DC from noise and DSA from real images; evaluation 5 runs: DSA
1,000 epochs with DSA, DC on MNIST 1,000 epochs with the DC augmentation, DC on Fashion-MNIST
300 epochs without), beside the numbers the papers report.

Rows, in the order they run (the most informative first, so an interrupted run answers the DSA
question first); DSA rows run twice, with our digit rule (flip dropped on digit datasets, the
default) and with the strategy as given (flip kept, as the reference code does: `dsa_digit_rule`
false for the distillation and the evaluation):

    0 dsa mnist digit rule      1 dsa mnist flip (reference)      2 dc mnist
    3 dsa fashion_mnist digit rule   4 dsa fashion_mnist flip (reference)   5 dc fashion_mnist
    6 dm mnist IPC 10 (paper preset: 20,000 iterations; GPU only, run by benchmarks/gpu.sh)

Each row runs in its own process (benchmarks/common.py: `run_jobs`, `run_one`), distilling into
runs/paper_protocol/<row>/ with a checkpoint every 20 iterations, so an interrupted row resumes
where it stopped when the script runs again (--resume) from the same checkout. A row records our
mean +- std over the evaluation runs (DC on MNIST also with the DC augmentation's rotation as
the reference's, scipy's cubic spline: `accuracy_dc_spline`), the paper's mean +- std, the
difference, Welch's t-test of the two (scipy.stats.ttest_ind_from_stats, unequal variances), distillation and evaluation
seconds, peak memory, torch threads and the machine's load average (os.getloadavg) before and
after. The paper's n: the DC and DSA papers (and DM's) report the mean and std of 100 models,
5 synthetic sets x 20 randomly initialized evaluation networks (the reference main.py: num_exp 5,
num_eval 20); we take n = 100 with their std as a population std. Ours is one synthetic set and
5 networks, so our std holds the spread between networks only, not between sets: the test asks
whether our set is within the paper's spread of models, not whether the methods differ.

Cost, measured (6 iterations each, 1 thread, on the 2-core machine shared with two other
streams, load average about 2): 13-21 s per DSA iteration and 13-15 s per DC iteration at
batch_real 256 (the 2,560 real images' gradients are most of it), i.e. 4-5 hours per CPU row plus
a few minutes of evaluation; the rows span several working periods, hence the checkpoints.

Usage (run from a pinned worktree, one stream, one thread):
    OMP_NUM_THREADS=1 python benchmarks/paper_protocol.py --resume   # the CPU rows 0-5, what is missing
    python benchmarks/paper_protocol.py --only 1                     # one row again
    python benchmarks/paper_protocol.py --smoke                      # a minute: tiny budgets, same code
                                                                     # path, written to paper_protocol_smoke.json
Options: --data-root DIR (default $DATADISTILL_DATA or ../shared/data), --gpu (row 6 only, for
benchmarks/gpu.sh; results/paper_protocol_gpu.json), --dataset NAME (the GPU row's dataset
instead of MNIST: gpu.sh's dry run uses the embedded mnist-5k), --out FILE (the results file).
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from common import RESULTS, check_flags, data_root_arg, rss_mb, run_jobs, run_one

NAME = "paper_protocol"
EVAL_RUNS = 5
# (method, dataset, ipc): (mean, std) in percent, as the papers report them
PAPER = {
    ("dc", "mnist", 1): (91.7, 0.5),
    ("dsa", "mnist", 1): (88.7, 0.6),
    ("dc", "fashion_mnist", 1): (70.5, 0.6),
    ("dsa", "fashion_mnist", 1): (70.6, 0.6),
    ("dm", "mnist", 10): (97.5, 0.1),
}
PAPER_N = 100  # 5 synthetic sets x 20 evaluation networks (reference main.py num_exp 5, num_eval 20)
PAPER_SOURCE = {
    "dc": "Zhao, Mopuri & Bilen, Dataset Condensation with Gradient Matching, ICLR 2021, Table 1 "
          "(and DSA paper Table 1, column DC)",
    "dsa": "Zhao & Bilen, Dataset Condensation with Differentiable Siamese Augmentation, ICML 2021, Table 1",
    "dm": "Zhao & Bilen, Dataset Condensation with Distribution Matching, WACV 2023, Table 1",
}
FLIP_RULES = {"digits": "digit rule (flip dropped, our default)", "as_given": "flip kept (the reference code)"}
# --smoke: the same code path with tiny budgets; its numbers mean nothing (the evaluation trains
# and tests an MLP: a ConvNet's test pass alone is most of a smoke row's time on a CPU)
SMOKE = {"iterations": 2, "batch_real": 8, "val_every": 0, "val_epochs": 1, "checkpoint_every": 1,
         "model_args": {"width": 8, "depth": 1}, "eval": {"epochs": 2, "models": ["mlp"]}}
SMOKE_RUNS = 2


def plan(data_root: str, smoke: bool, gpu: bool, gpu_dataset: str | None = None) -> list[dict]:
    """The rows; `gpu_dataset` replaces MNIST in the GPU row (gpu.sh's dry run: the embedded
    mnist-5k, offline), compared with MNIST's paper number."""
    base = {"job": "paper", "preset": "paper", "data_root": data_root, "smoke": smoke}
    rows = []
    for dataset in ("mnist", "fashion_mnist"):
        rows += [{**base, "method": "dsa", "dataset": dataset, "ipc": 1, "flip": rule} for rule in FLIP_RULES]
        rows.append({**base, "method": "dc", "dataset": dataset, "ipc": 1})
    dm = {**base, "method": "dm", "dataset": "mnist", "ipc": 10, "flip": "digits", "gpu": True}
    if gpu_dataset and gpu_dataset != "mnist":
        dm.update(dataset=gpu_dataset, paper_dataset="mnist")
    rows.append(dm)
    return [r for r in rows if bool(r.get("gpu")) == gpu]


def row_name(job: dict) -> str:
    return f"{job['method']}-{job['dataset']}-ipc{job['ipc']}" + (f"-{job['flip']}" if job.get("flip") else "")


def welch(ours: dict, paper: tuple[float, float], n_paper: int = PAPER_N) -> dict:
    """Welch's t-test of our runs against the paper's mean/std/n. Both stds are population stds
    (np.std, as the evaluation and the papers report them) turned into sample stds for scipy."""
    from scipy.stats import ttest_ind_from_stats

    n = int(ours["runs"])
    if n < 2:
        return {"t": None, "p": None, "note": "one run: no test"}
    s_ours = ours["std"] * math.sqrt(n / (n - 1))
    s_paper = paper[1] * math.sqrt(n_paper / (n_paper - 1))
    if s_ours == 0 and s_paper == 0:
        return {"t": None, "p": None, "note": "both spreads are zero"}
    res = ttest_ind_from_stats(ours["mean"], s_ours, n, paper[0], s_paper, n_paper, equal_var=False)
    return {"t": float(res.statistic), "p": float(res.pvalue), "n_ours": n, "n_paper": n_paper}


def job_paper(job: dict) -> dict:
    import torch

    load_before = os.getloadavg()
    over: dict = {}
    if job.get("flip") == "as_given":
        over = {"dsa_digit_rule": False, "eval": {"dsa_digit_rule": False}}
    runs = EVAL_RUNS
    if job.get("smoke"):
        over = {**over, **SMOKE, "eval": {**over.get("eval", {}), **SMOKE["eval"]}}
        runs = SMOKE_RUNS
    if job.get("gpu") and not job.get("smoke"):
        over["device"] = "cuda"
    t0 = time.perf_counter()
    # A row is hours on a CPU: the distillation checkpoints into a run folder (every 20 iterations,
    # the preset's checkpoint_every) and a rerun of the row resumes there (not for --smoke).
    folder = f"runs/{NAME}{'_smoke' if job.get('smoke') else ''}/{row_name(job)}"
    if job.get("smoke"):
        import shutil

        from common import REPO

        shutil.rmtree(REPO / folder, ignore_errors=True)  # a smoke row always starts afresh
    out = run_one({"method": job["method"], "dataset": job["dataset"], "ipc": job["ipc"], "preset": "paper",
                   "overrides": over, "eval_runs": runs, "eval_init": False, "data_root": job["data_root"],
                   "out": folder})
    paper = PAPER[(job["method"], job.get("paper_dataset", job["dataset"]), job["ipc"])]
    its = _iteration_seconds(folder)
    acc = out["accuracy"]
    cfg = out["config"]
    if cfg["eval"]["aug"] == "dc":
        out["accuracy_dc_spline"] = _dc_spline_eval(folder, out, runs)
    out.update(
        job="paper", flip=job.get("flip"), smoke=bool(job.get("smoke")), run_folder=folder,
        dsa_strategy_distill=_strategy(cfg["dataset"], cfg["dsa_strategy"], cfg["dsa_digit_rule"]),
        dsa_strategy_eval=(_strategy(cfg["dataset"], cfg["eval"]["dsa_strategy"], cfg["eval"]["dsa_digit_rule"])
                           if cfg["eval"]["aug"] == "dsa" else None),
        paper={"mean": paper[0], "std": paper[1], "n": PAPER_N, "source": PAPER_SOURCE[job["method"]]},
        difference=acc["mean"] - paper[0], welch=welch(acc, paper),
        eval_seconds=out["eval"]["seconds_per_run_with_test"] * acc["runs"],
        # a resumed row: distill_seconds is this process's part; the iterations' own seconds
        # (metrics.jsonl, every session) add up to the whole distillation without validations
        iteration_seconds_all_sessions=sum(its) if its else None, iterations_timed=len(its),
        seconds=time.perf_counter() - t0, peak_rss_mb=rss_mb(),
        torch_threads=torch.get_num_threads(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()),
    )
    return out


def _dc_spline_eval(folder: str, row: dict, runs: int) -> dict:
    """The DC row's set evaluated again with the DC augmentation's rotation as the reference's
    (scipy's cubic spline, `eval.dc_rotate: spline`), same seeds and epochs: the one departure of
    that augmentation, measured on the set at hand."""
    from common import REPO

    from datadistill.data import load_dataset
    from datadistill.evaluate import evaluate
    from datadistill.synset import SyntheticSet

    cfg = row["config"]
    syn = SyntheticSet.load(REPO / folder / "synset.safetensors")
    test = load_dataset(cfg["dataset"], cfg["data_root"], progress=False).test
    t0 = time.perf_counter()
    ev = evaluate(syn, model=cfg["eval"]["models"][0], runs=runs, epochs=row["eval"]["epochs"], lr=cfg["eval"]["lr"],
                  aug="dc", dc_rotate="spline", test=test, device=cfg["device"], seed=cfg["seed"], progress=False)
    return {"mean": ev.mean, "std": ev.std, "runs": ev.runs, "accuracies": ev.accuracies,
            "seconds": time.perf_counter() - t0}


def _iteration_seconds(folder: str | None) -> list[float]:
    import json

    from common import REPO

    path = REPO / folder / "metrics.jsonl" if folder else None
    if path is None or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["seconds"] for r in rows if "seconds" in r and "loss" in r]


def _strategy(dataset: str, strategy: str, digit_rule: bool) -> str:
    from datadistill.augment import strategy_for

    return strategy_for(dataset, strategy, digit_rule) if strategy not in ("", "none") else "none"


def summary(rows: list[dict]) -> list[dict]:
    """One line per finished row, for README and summarize.py."""
    out = []
    for r in rows:
        if r.get("job") != "paper" or "accuracy" not in r:
            continue
        out.append({"method": r["method"], "dataset": r["dataset"], "ipc": r["ipc"], "flip": r.get("flip"),
                    "mean": r["accuracy"]["mean"], "std": r["accuracy"]["std"], "runs": r["accuracy"]["runs"],
                    "paper_mean": r["paper"]["mean"], "paper_std": r["paper"]["std"],
                    "difference": r["difference"], "p": r["welch"].get("p"), "seconds": r["seconds"]})
    return out


def main(argv: list[str]) -> None:
    check_flags(argv)
    smoke, gpu = "--smoke" in argv, "--gpu" in argv
    data_root = data_root_arg(argv, required=True)
    dest = RESULTS / f"{NAME}{'_gpu' if gpu else ''}{'_smoke' if smoke else ''}.json"
    if "--out" in argv:
        dest = Path(argv[argv.index("--out") + 1]).resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
    gpu_dataset = argv[argv.index("--dataset") + 1] if "--dataset" in argv else None
    run_jobs(NAME, plan(data_root, smoke, gpu, gpu_dataset), {"paper": job_paper}, argv,
             label_keys=("method", "dataset", "ipc", "flip"), dest=dest,
             extra=lambda rows: {"smoke": smoke, "paper_n": PAPER_N, "summary": summary(rows)})


if __name__ == "__main__":
    main(sys.argv)
