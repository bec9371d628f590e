"""Wall-clock budgets of the commands the docs promise, timed end to end on a quiet machine:

- `datadistill distill` (the default: DM, IPC 10, embedded mnist-5k, quick preset): at most 5 minutes;
- `datadistill distill --dataset mnist --ipc 10` (quick preset, one evaluation run): at most 15 minutes.

Each command runs as a subprocess in a fresh run folder; the JSON records the wall time, the
distillation seconds and test accuracy the command reports (from the run folder's files).
Run it with nothing else busy on the machine. Usage: python benchmarks/budget.py
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import DEFAULT_DATA, RESULTS, machine

WORK = Path(__file__).resolve().parent / "_work"
CASES = [
    ("default", [], 300),
    ("mnist-ipc10", ["--dataset", "mnist", "--ipc", "10", "--data-root", str(DEFAULT_DATA)], 900),
]


def main() -> None:
    rows = []
    for name, args, budget in CASES:
        out = WORK / name
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "datadistill", "distill", *args, "--no-progress", "--out", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            rows.append({"case": name, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        ev = json.loads((out / "eval.json").read_text())
        metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        its = [m["seconds"] for m in metrics if "seconds" in m]
        rows.append({
            "case": name, "command": "datadistill distill " + " ".join(args), "wall_seconds": wall,
            "budget_seconds": budget, "within_budget": wall <= budget,
            "iterations": len(its), "seconds_per_iteration": sum(its) / max(1, len(its)),
            "distill_seconds": next((m["distill_seconds"] for m in metrics if "distill_seconds" in m), None),
            "eval_train_seconds": ev["train_seconds"], "test_accuracy": ev["mean"], "eval_epochs": ev["epochs"],
        })
        print(f"{name}: {wall:.0f} s (budget {budget} s), {ev['mean']:.2f} %", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    doc = {"benchmark": "budget", "command": "python benchmarks/budget.py", "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": machine(), "results": rows}
    (RESULTS / "budget.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
