"""DC and DSA (gradient matching) at the quick preset: MNIST at IPC 1 and 10 and Fashion-MNIST at
IPC 10 (../shared/data), 3 evaluation runs each, plus the accuracy of the real images each run
starts from (the quick presets of both methods start from real images, same seed).

Quick preset (presets/dc.yaml, presets/dsa.yaml): IPC 10: 24 iterations of (outer_loop 10,
inner_loop 10), 64 real images per class; IPC 1: 500 iterations of (1, 1). Evaluation 300 epochs:
DSA for dsa; the DC augmentation for dc (MNIST family). Expected on a 2-core CPU: about 20 minutes
of distillation per IPC 10 row and 15 per IPC 1 row, plus evaluation; about 3 hours in all.
Rows are ordered so that an interrupted run answers the main question (dsa, MNIST, IPC 10) first.
Usage: python benchmarks/gradient_matching.py
"""
import sys

from common import run_all


def spec(method, dataset, ipc):
    return {"method": method, "dataset": dataset, "ipc": ipc, "preset": "quick", "eval_runs": 3, "eval_init": True}


SPECS = [
    spec("dsa", "mnist", 10),
    spec("dc", "mnist", 10),
    spec("dsa", "mnist", 1),
    spec("dc", "mnist", 1),
    spec("dsa", "fashion_mnist", 10),
    spec("dc", "fashion_mnist", 10),
]

if __name__ == "__main__":
    run_all("gradient_matching", SPECS, sys.argv)
