import subprocess
import sys

import pytest

from datadistill import tune_allocator

GLIBC = sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver())


def test_opt_out_changes_nothing(monkeypatch):
    monkeypatch.setenv("DATADISTILL_MALLOC", "default")
    assert tune_allocator() is False


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are a glibc feature")
def test_applies_on_glibc_and_process_keeps_working():
    # In a child process, so the test session's allocator is left as it was.
    code = (
        "import torch, datadistill as d; ok = d.tune_allocator(); "
        "x = [torch.ones(4_000_000) for _ in range(3)]; del x; "
        "print(ok, float(torch.ones(8_000_000).sum()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "8000000.0"]


@pytest.mark.parametrize("argv, tuned", [
    (["distill", "--method", "mtt", "--dataset", "mnist-5k"], False),  # trajectory matching: glibc's own heap
    (["distill", "--method", "datm", "--dataset", "mnist-5k"], False),
    (["distill", "--method", "dm", "--dataset", "mnist-5k"], True),
    (["distill", "--method", "nosuch"], True),  # the command itself says the method is unknown
    (["datasets"], True),
])
def test_the_cli_tunes_the_allocator_except_for_trajectory_matching(monkeypatch, argv, tuned):
    from datadistill import cli

    calls = []
    monkeypatch.setattr(cli, "tune_allocator", lambda: calls.append(1))
    monkeypatch.setitem(cli.COMMANDS, argv[0], lambda a: 0)  # the choice is made before the command runs
    assert cli.main(argv) == 0
    assert bool(calls) is tuned
