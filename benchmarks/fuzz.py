"""The long run of the readers' fuzz harness (tests/fuzzing.py; tests/test_fuzz.py is its 30-second
form): mutated IDX, CIFAR, PNG, set, checkpoint and expert files for --seconds, counts written to
benchmarks/results/fuzz.json. Exit status 1 when any input raised something other than the
package's own error (the findings are in the JSON).

    PYTHONPATH=src python benchmarks/fuzz.py --seconds 300 --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import torch  # noqa: E402

import fuzzing  # noqa: E402
from common import machine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="fuzzing time in all, split evenly over the formats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "fuzz.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        tally = fuzzing.run(Path(work), seed=a.seed, seconds=a.seconds)
    record = {"command": " ".join(["python", "benchmarks/fuzz.py", *sys.argv[1:]]), "seed": a.seed,
              "seconds": round(time.perf_counter() - t0, 1), **tally.to_dict(), "machine": machine()}
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    print(fuzzing.summary(tally))
    return 1 if tally.foreign else 0


if __name__ == "__main__":
    raise SystemExit(main())
