"""The benchmark harness's row bookkeeping (benchmarks/common.py): --only runs the named rows and
keeps the others, --resume runs only the missing ones, and every row says which run produced it.
The configurations are fakes (no distillation): a script that patches common.run_one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

SCRIPT = """
import os
import sys
from pathlib import Path
sys.path.insert(0, {bench!r})
import common
common.RESULTS = Path({results!r})
calls = Path({results!r}) / "calls.txt"
def fake(spec):
    with calls.open("a") as f:
        f.write(f"{{spec['ipc']}}\\n")
    if spec["ipc"] == 2 and os.environ.get("FAKE_FAIL"):
        raise RuntimeError("boom")
    return {{"method": spec["method"], "dataset": spec["dataset"], "ipc": spec["ipc"],
            "accuracy": {{"mean": 10.0 * spec["ipc"], "std": 0.0, "runs": 1}},
            "seconds_per_iteration": 1.0, "distill_seconds": 1.0}}
common.run_one = fake
SPECS = [{{"method": "m", "dataset": "d", "ipc": i, "preset": "quick"}} for i in (1, 2)]
if os.environ.get("FAKE_OTHER_PLAN"):  # another budget's plan: a row the default plan does not hold
    SPECS = [{{"method": "m", "dataset": "d", "ipc": 3, "preset": "short"}}]
common.run_all("fake", SPECS, sys.argv)
"""


def _run(script: Path, *args: str, fail: bool = False, other_plan: bool = False) -> None:
    env = {**os.environ, "FAKE_FAIL": "1" if fail else "", "FAKE_OTHER_PLAN": "1" if other_plan else ""}
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, text=True, env=env)


def _rows(out: Path) -> list[dict]:
    return json.loads(out.read_text())["results"]


def test_only_resume_and_provenance(tmp_path):
    script = tmp_path / "fake_bench.py"
    script.write_text(SCRIPT.format(bench=str(BENCH), results=str(tmp_path)))
    out = tmp_path / "fake.json"
    calls = tmp_path / "calls.txt"

    _run(script, "--only", "0")
    (row,) = _rows(out)
    assert row["ipc"] == 1 and row["spec"]["ipc"] == 1 and row["machine"]["torch"] and row["date"]
    assert "data_root" in row["spec"]  # recorded, but not part of what identifies a row

    _run(script, "--resume", fail=True)  # keeps row 0, runs row 1, which fails
    assert calls.read_text().split() == ["1", "2"]
    rows = _rows(out)
    assert rows[0]["accuracy"]["mean"] == 10.0 and "error" in rows[1] and rows[1]["spec"]["ipc"] == 2

    _run(script, "--resume")  # only the failed row runs again
    assert calls.read_text().split() == ["1", "2", "2"]
    assert [r["accuracy"]["mean"] for r in _rows(out)] == [10.0, 20.0]

    first = _rows(out)[1]["date"], _rows(out)[1]["job_wall_seconds"]
    _run(script, "--only", "0")  # re-runs row 0, keeps row 1 as it was
    assert calls.read_text().split() == ["1", "2", "2", "1"]
    assert [r["ipc"] for r in _rows(out)] == [1, 2] and (_rows(out)[1]["date"], _rows(out)[1]["job_wall_seconds"]) == first
    assert not list(tmp_path.glob("*.tmp"))

    # a row of another plan (a --short budget's) survives a run of this plan, and the reverse
    _run(script, "--resume", other_plan=True)  # this plan's rows first, then the others as they were
    assert [r["ipc"] for r in _rows(out)] == [3, 1, 2]
    _run(script, "--only", "1")
    assert [r["ipc"] for r in _rows(out)] == [1, 2, 3] and calls.read_text().split()[-1] == "2"
    _run(script, "--only", "0", other_plan=True)
    assert [r["ipc"] for r in _rows(out)] == [3, 1, 2]


def _fail(script: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_list_help_and_bad_options_run_nothing(tmp_path):
    script = tmp_path / "fake_bench.py"
    script.write_text('"""A fake benchmark; usage: fake_bench.py [--resume] [--only I,J] [--smoke]"""\n'
                      + SCRIPT.format(bench=str(BENCH), results=str(tmp_path)))
    out, calls = tmp_path / "fake.json", tmp_path / "calls.txt"
    _run(script, "--only", "1")
    before = out.read_bytes()

    listing = subprocess.run([sys.executable, str(script), "--list"], capture_output=True, text=True, check=True).stdout
    assert listing.split("\n")[:2] == ["   0  m d ipc1", "   1  m d ipc2"]
    helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert helped.startswith("A fake benchmark") and "--list" in helped and "--only I,J" in helped
    assert "--only 2: this benchmark has jobs 0 to 1" in _fail(script, "--only", "2")
    assert "--only takes job indices" in _fail(script, "--only", "one")
    assert "unknown option --resum" in _fail(script, "--resum")
    assert "run jobs with --only" in _fail(script, "--one")  # the harness's own, never the whole plan  # misspelt: refused, not ignored
    assert "write --only 1 (a space, not =)" in _fail(script, "--only=1")
    _run(script, "--smoke", "--only", "1")  # an option the docstring names is accepted
    assert calls.read_text().split() == ["2", "2"] and out.read_bytes() != before

    # a plain run would replace the file's rows one job at a time: refused unless asked for
    kept = out.read_bytes()
    assert "already holds 1 rows" in _fail(script) and "--fresh starts over" in _fail(script)
    assert out.read_bytes() == kept and calls.read_text().split() == ["2", "2"]
    _run(script, "--fresh")
    assert calls.read_text().split() == ["2", "2", "1", "2"] and len(_rows(out)) == 2



def test_a_data_root_that_is_not_a_folder_is_refused(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    monkeypatch.delenv("DATADISTILL_DATA", raising=False)
    assert common.data_root_arg(["b.py", "--data-root", str(tmp_path)]) == str(tmp_path)
    assert common.data_root_arg(["b.py"]) == str(common.DEFAULT_DATA)  # the default may be absent
    for argv, env in ((["b.py", "--data-root", str(tmp_path / "nope")], None), (["b.py"], str(tmp_path / "nope")),
                      (["b.py", "--data-root"], None)):
        if env:
            monkeypatch.setenv("DATADISTILL_DATA", env)
        with pytest.raises(SystemExit) as e:
            common.data_root_arg(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and ("not a folder" in err[0] or "needs a folder" in err[0])

def test_every_job_list_benchmark_documents_the_options_it_reads():
    # check_flags refuses any --option its script's docstring does not name, so a script that read an
    # undocumented option could not be given it
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    import ast
    import re

    scripts = [p for p in sorted(BENCH.glob("*.py")) if p.name != "common.py"
               and re.search(r"\brun_(all|jobs)\(", p.read_text())]
    assert len(scripts) >= 10
    for p in scripts:
        src = p.read_text()
        named = set(re.findall(r"--[a-z][a-z0-9-]*", ast.get_docstring(ast.parse(src)) or ""))
        read = set(re.findall(r'"(--[a-z][a-z0-9-]*)"', src)) - common.HARNESS_FLAGS
        assert read <= named, (p.name, sorted(read - named))


def test_help_of_a_real_benchmark_starts_nothing(tmp_path):
    # `datm.py --help` once started training CIFAR-10 experts
    proc = subprocess.run([sys.executable, str(BENCH / "datm.py"), "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("MTT, DATM and PAD") and not proc.stderr
    assert "unknown option --expert" in _fail(BENCH / "datm.py", "--expert", "x")

def test_update_keys_keeps_parts_written_by_other_processes(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    dest = tmp_path / "apps.json"
    common.update_keys(dest, {"benchmark": "apps", "nas": {"spearman": 0.5}})
    # another process writes its part in between (the file changed under the first writer)
    dest.write_text(json.dumps({**json.loads(dest.read_text()), "continual": {"dm": [1, 2]}}))
    doc = common.update_keys(dest, {"crossarch": {"models": []}})
    assert json.loads(dest.read_text()) == doc
    assert doc == {"benchmark": "apps", "nas": {"spearman": 0.5}, "continual": {"dm": [1, 2]}, "crossarch": {"models": []}}
    assert not list(tmp_path.glob("*.tmp"))


def test_spec_key_ignores_the_checkout_a_run_folder_lives_in():
    sys.path.insert(0, str(BENCH))
    from common import spec_key

    a = {"job": "mtt", "ipc": 10, "experts": "/work/bench/runs/experts-x", "data_root": "/a"}
    b = {"job": "mtt", "ipc": 10, "experts": "/home/u/clone/runs/experts-x", "data_root": "/b"}
    assert spec_key(a) == spec_key(b)
    assert spec_key(a) != spec_key({**a, "experts": "/work/bench/runs/experts-y"})
    assert spec_key(a) != spec_key({**a, "ipc": 1})


def test_summarize_prints_every_committed_results_file():
    # summarize.py once crashed on one file and so printed none of the tables after it
    proc = subprocess.run([sys.executable, str(BENCH / "summarize.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for f in sorted((BENCH / "results").glob("*.json")):
        assert f"### {f.stem}\n" in proc.stdout


def _summarize_module():
    sys.path.insert(0, str(BENCH))
    try:
        import summarize
    finally:
        sys.path.remove(str(BENCH))
    return summarize


def test_precision_table_compares_each_bf16_row_with_its_fp32_twin():
    summarize = _summarize_module()
    m = {"torch": "2.13.0", "commit": "abc", "cuda": None, "cpu_threads": 1}

    def row(method, prec, accs, s_it):
        mean = sum(accs) / len(accs)
        return {"method": method, "dataset": "mnist", "ipc": 10, "config": {"precision": prec},
                "accuracy": {"mean": mean, "std": 0.5, "runs": len(accs), "accuracies": accs},
                "seconds_per_iteration": s_it, "date": "d", "machine": m}

    doc = {"command": "python benchmarks/precision.py", "date": "d", "machine": m,
           "results": [row("dm", "fp32", [90.0, 91.0, 92.0], 1.5), row("dm", "bf16", [89.0, 90.0, 91.0], 1.0),
                       {"spec": {"method": "datadam"}, "error": "exit status 1"}]}
    out = summarize.precision_table(doc)
    bf16 = next(line for line in out.splitlines() if "| bf16 |" in line)
    # Welch: t = 1 / sqrt(1/3 + 1/3) = 1.22 on 4 degrees of freedom, two-sided p = 0.288
    assert "-1.00, p 0.29" in bf16 and "1.50x" in bf16
    fp32 = next(line for line in out.splitlines() if "| fp32 |" in line)
    assert "| – | 1.50 | – |" in fp32
    assert "datadam | failed: exit status 1" in out


def test_paper_protocol_table_shows_ours_beside_the_paper():
    summarize = _summarize_module()
    m = {"torch": "2.13.0", "commit": "abc", "cuda": None, "cpu_threads": 1}
    row = {"method": "dsa", "dataset": "mnist", "ipc": 1, "flip": "as_given", "iterations": 1000,
           "accuracy": {"mean": 87.5, "std": 0.4, "runs": 5, "accuracies": [87.5] * 5},
           "paper": {"mean": 88.7, "std": 0.6, "n": 100}, "difference": -1.2, "welch": {"p": 0.00031},
           "distill_seconds": 100.0, "iteration_seconds_all_sessions": 7200.0, "eval_seconds": 300.0,
           "peak_memory_mb": 1500.0, "torch_threads": 1, "loadavg_before": [2.0, 2.0, 2.0], "date": "d", "machine": m}
    doc = {"benchmark": "paper_protocol", "command": "python benchmarks/paper_protocol.py --resume", "date": "d",
           "machine": m, "paper_n": 100,
           "results": [row, {"spec": {"method": "dc", "dataset": "mnist", "ipc": 1}, "error": "exit status 1"}]}
    out = summarize.paper_protocol_table(doc)
    line = next(x for x in out.splitlines() if x.startswith("| dsa |"))
    assert "kept (reference)" in line and "87.50 ± 0.40 (n=5)" in line and "88.7 ± 0.6" in line
    assert "| -1.20 | 0.00031 |" in line and "| 2.00 |" in line  # the hours add every session's iterations
    assert "| 1, 2.0 | – |" in line
    assert "| dc | mnist | 1 | – | failed: exit status 1" in out


def test_summarize_refuses_what_it_cannot_read(tmp_path):
    script = BENCH / "summarize.py"
    assert "Usage" in subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                     check=True).stdout
    text = tmp_path / "notes.json"
    text.write_text('{"a": 1}')
    for args, message in ((["--x"], "unknown option --x"), ([str(tmp_path / "none.json")], "cannot read"),
                          ([str(text)], "is not a benchmark results file")):
        assert message in _fail(script, *args)
