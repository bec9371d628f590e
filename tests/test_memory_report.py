"""Peak memory in every record (metrics.jsonl, eval.json) and `distill --dry-run`, which sets the
run up, estimates its peak and writes nothing."""
import json

import pytest

from datadistill.cli import main
from datadistill.run import dry_run, run_distillation

from test_mtt import cfg

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--iterations", "2", "--ipc", "1", "--batch-real", "4", "--no-progress", "--device", "cpu"]


def test_metrics_and_eval_records_carry_the_peak_memory(tmp_path, tiny_experts, tiny):
    c = cfg(tiny_experts, iterations=2, eval={"runs": 1, "epochs": 1, "aug": "none"})
    run_distillation(c, tmp_path / "run", data=tiny, progress=False)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert len(lines) == 2 and all(l["peak_rss_mb"] > 10 for l in lines)
    assert lines[1]["peak_rss_mb"] >= lines[0]["peak_rss_mb"]  # a high-water mark
    assert all("peak_cuda_mb" not in l for l in lines)  # CPU run
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert ev["extra"]["peak_rss_mb"] >= lines[1]["peak_rss_mb"]


def test_dry_run_of_mtt_estimates_every_unroll_mode_and_writes_nothing(tmp_path, tiny_experts, tiny):
    rec = dry_run(cfg(tiny_experts, method_args={"unroll": "checkpoint", "syn_steps": 9}), data=tiny, progress=False)
    it = rec["iteration"]
    assert it["unroll"] == "checkpoint" and set(it["unroll_mib"]) == {"plain", "checkpoint", "tesla"}
    assert it["iteration_mib"] == it["unroll_mib"]["checkpoint"]
    assert it["unroll_mib"]["plain"] > it["unroll_mib"]["checkpoint"] > it["unroll_mib"]["tesla"] > 0
    assert rec["estimated_peak_mib"] > rec["setup"]["peak_rss_mb"] and rec["fits"] is True
    assert rec["available_mib"] > 0 and not any(tmp_path.iterdir())


def test_distill_dry_run_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", *TINY, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "estimated peak" in text and "measured on one iteration" in text
    rec = json.loads(text.strip().splitlines()[-1])
    assert rec["method"] == "dm" and rec["estimated_peak_mib"] >= rec["setup"]["peak_rss_mb"]
    assert not out.exists()
