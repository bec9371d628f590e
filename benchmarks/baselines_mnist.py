"""Coreset baselines and the full-data baseline on MNIST (../shared/data).

  python benchmarks/baselines_mnist.py                 random, herding, k-center at IPC 10, quick
                                                       preset, 3 evaluation runs each
                                                       -> results/baselines_mnist.json
  python benchmarks/baselines_mnist.py --full [--epochs 5] [--runs 1] [--device auto]
                                                       ConvNet on the full training split
                                                       -> results/baseline_mnist.json

Coreset methods run no iterations (`seconds_per_iteration` is null): their cost is the selection
(for herding and k-center, training the embedding ConvNet 1 epoch and embedding the 54,000 training
images), which happens in the method's `init`; the runner's `distill_seconds` includes it (with
loading the data), and `selection_seconds` is the selection alone, with the embedding network's
training accuracy and seconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import common
from common import DEFAULT_DATA, RESULTS, command_line, machine, run_all, write_atomic

SPECS = [
    {"method": m, "dataset": "mnist", "ipc": 10, "preset": "quick", "eval_runs": 3, "eval_init": False}
    for m in ("random", "herding", "k-center")
]

_run_one = common.run_one


def run_one_with_selection(spec: dict) -> dict:
    """common.run_one, plus the selection's cost and the embedding network's figures from the set's metadata."""
    import datadistill.run as runner  # common.run_one looks run_distillation up here at call time

    real = runner.run_distillation
    captured: dict = {}

    def capturing(*args, **kwargs):
        res = real(*args, **kwargs)
        captured["meta"] = dict(res.synset.meta)
        return res

    runner.run_distillation = capturing
    try:
        out = _run_one(spec)
    finally:
        runner.run_distillation = real
    meta = captured.get("meta", {})
    for key in ("selection_seconds", "embedding", "embedding_epochs", "embedding_train_seconds",
                "embedding_train_accuracy"):
        if key in meta:
            out[key] = meta[key]
    out["selected_images"] = len(meta.get("selected_indices", []))
    return out


common.run_one = run_one_with_selection  # run_all calls common.run_one in the --one subprocess


def full_data(epochs: int = 5, runs: int = 1, device: str = "auto", argv: list[str] | None = None) -> Path:
    """ConvNet trained on all of MNIST's training split (54,000 images after the validation split):
    test and validation accuracy, seconds and FLOPs -> results/baseline_mnist.json."""
    import torch

    from datadistill.baseline import full_data_baseline
    from datadistill.rng import resolve_device
    from datadistill.run import peak_memory_mb

    data_root = os.environ.get("DATADISTILL_DATA", str(DEFAULT_DATA))
    res = full_data_baseline("mnist", model="convnet", epochs=epochs, runs=runs, data_root=data_root,
                             device=device, progress=True)
    print(res.table(), file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    dest = RESULTS / "baseline_mnist.json"
    argv = argv if argv is not None else sys.argv
    doc = {
        "benchmark": "baseline_mnist",
        "command": command_line(argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "result": res.to_dict(),
        "peak_memory_mb": peak_memory_mb(resolve_device(device)),
        "torch_threads": torch.get_num_threads(),
    }
    write_atomic(dest, doc)
    print(f"saved {dest}", file=sys.stderr)
    return dest


def main(argv: list[str]) -> None:
    if "--full" in argv[1:]:
        ap = argparse.ArgumentParser(description="full-data baseline on MNIST")
        ap.add_argument("--full", action="store_true")
        ap.add_argument("--epochs", type=int, default=5)
        ap.add_argument("--runs", type=int, default=1)
        ap.add_argument("--device", default="auto")
        a = ap.parse_args(argv[1:])
        full_data(a.epochs, a.runs, a.device, argv)
    else:
        run_all("baselines_mnist", SPECS, argv)


if __name__ == "__main__":
    main(sys.argv)
