"""benchmarks/gpu.sh --dry-run: the GPU session's one command, on the CPU with tiny sizes and the
embedded mnist-5k (offline): both parts run and leave their JSON in $OUT."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_script_dry_run_writes_both_parts(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    speed = json.loads((tmp_path / "speed_gpu.json").read_text())
    (dm,) = speed["methods"]
    assert dm["method"] == "dm" and dm["dataset"] == "mnist-5k" and dm["seconds_per_iteration"] > 0
    paper = json.loads((tmp_path / "paper_protocol_gpu.json").read_text())
    (row,) = paper["results"]
    assert row["method"] == "dm" and row["ipc"] == 10 and row["smoke"] is True
    assert row["paper"]["mean"] == 97.5 and row["welch"]["n_paper"] == 100
    assert row["difference"] == pytest.approx(row["accuracy"]["mean"] - 97.5)
    assert row["accuracy"]["runs"] == 2 and row["peak_memory_mb"] > 0


def test_gpu_script_refuses_unknown_arguments():
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--fast"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:")
