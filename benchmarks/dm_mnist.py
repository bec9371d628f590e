"""DM on MNIST (../shared/data) at IPC 1, 10 and 50 with the quick preset.

Records accuracy mean/std over 3 evaluation runs (2 at IPC 50) and that of the real images it
starts from (IPC 1 and 10),
seconds per iteration and peak memory. Usage: python benchmarks/dm_mnist.py
"""
import sys

from common import run_all

SPECS = [
    {"method": "dm", "dataset": "mnist", "ipc": 10, "preset": "quick", "eval_runs": 3},
    {"method": "dm", "dataset": "mnist", "ipc": 1, "preset": "quick", "eval_runs": 3},
    # IPC 50: 500 training images make each evaluation run about 7 minutes here; 2 runs, no init row.
    {"method": "dm", "dataset": "mnist", "ipc": 50, "preset": "quick", "eval_runs": 2, "eval_init": False},
]

if __name__ == "__main__":
    run_all("dm_mnist", SPECS, sys.argv)
