"""Does distilling in bf16 cost accuracy? DM and DataDAM (the loss's forward passes in bf16) and DC
and DSA (their first-order parts in bf16: the real-batch gradients and the inner loop; the
second-order matching stays fp32), the methods that accept `precision: bf16`
(datadistill/numerics.py), each distilled twice from the same seed and the same
real-image start, once in fp32 and once with the loss's forward passes under bf16 autocast, then
evaluated the same way in fp32 (5 runs, the quick preset's 300 epochs with DSA, same seeds).

This is the accuracy half of the precision switch: benchmarks/speed.py measures what bf16 saves
per iteration; a switch may only become a default where this shows no loss (issue 8).
Settings: the quick preset (600 iterations, 64 real images per class) on MNIST (../shared/data)
at IPC 10, the setting of the README's main tables.

Usage:
    python benchmarks/precision.py                 # all rows; writes benchmarks/results/precision.json
    python benchmarks/precision.py --only 0,1      # DM's pair (rows 2,3: DataDAM's; 4,5 DC's; 6,7 DSA's)
"""
import sys

from common import run_all


def spec(method: str, precision: str) -> dict:
    return {"method": method, "dataset": "mnist", "ipc": 10, "preset": "quick", "eval_runs": 5,
            "eval_init": False, "overrides": {"precision": precision}}


SPECS = [spec(m, p) for m in ("dm", "datadam", "dc", "dsa") for p in ("fp32", "bf16")]

if __name__ == "__main__":
    run_all("precision", SPECS, sys.argv)
