"""Every command and Python snippet of the README, executed as written (parsed out of README.md,
so the two cannot drift apart), at tiny budgets on generated data.

What the test changes, and only that: budget flags appended (later flags win in argparse), the
data root pointed at generated files (an IDX MNIST, a CIFAR-10 of five batches, an ImageFolder),
`--device cuda` run on the CPU, `--zca-from RUN` given the README's `runs/mtt-cifar10`, `--real-subset 100` given 4 (the generated MNIST has 16 training
images per class), no `--iterations` for the coreset methods (they have none), one lr instead of a protocol's lr grid, and the final
validation shortened. Environment setup (venv,
pip) and the suite itself (pytest) are not run; the benchmark scripts it names must exist and
compile (they take minutes to hours). Prose mentions of `datadistill ...` must parse.
"""
from __future__ import annotations

import py_compile
import re
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import data_fixtures as fx
import datadistill
import datadistill.run.loop as runner
from datadistill.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SHARED = "../shared/data"

TINY = {
    "distill": ["--iterations", "1", "--batch-real", "2", "--checkpoint-every", "1", "--eval-runs", "1", "--eval-epochs", "1"],
    "evaluate": ["--runs", "1", "--epochs", "1", "--lr-grid", "0.01"],
    "experts": ["--experts", "1", "--epochs", "2", "--batch-size", "16", "--score-nets", "1", "--score-epochs", "1"],
    "nas": ["--epochs-syn", "1", "--epochs-real", "1", "--variants", "small", "--val-subset", "1"],
    "continual": ["--iterations", "1", "--epochs", "1", "--runs", "1"],
    "difficulty": ["--nets", "1", "--epochs", "1"],
    "baseline": ["--epochs", "1"],
}
# trajectory matching on 2-epoch experts
TRAJECTORY = ["--opt", "max_start_epoch=1", "--opt", "expert_epochs=1", "--opt", "syn_steps=2"]
VALUES = {("--real-subset", "100"): "4", ("--zca-from", "RUN"): "runs/mtt-cifar10"}
NOT_RUN = ("python3 -m venv", ". .venv/bin/activate", "pip install", "pytest")


def code_blocks(lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"```{lang}\n(.*?)```", README, re.S)]


def shell_commands() -> list[str]:
    """Each command of the bash blocks, comments dropped, `a && b` as two, and a choice written
    `--format a|b|c` as one command per alternative."""
    out = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            for c in (c.strip() for c in line.split("&&") if c.strip()):
                m = re.search(r"(?<=\s)[\w-]+(\|[\w-]+)+(?=\s|$)", c)
                out += [c[:m.start()] + alt + c[m.end():] for alt in m.group(0).split("|")] if m else [c]
    return out


def test_the_readme_has_what_this_test_runs():
    cmds = shell_commands()
    assert sum(c.startswith("datadistill ") for c in cmds) >= 15
    assert len(code_blocks("python")) >= 1
    unknown = [c for c in cmds if not c.startswith(("datadistill ", "python benchmarks/", *NOT_RUN))]
    assert not unknown, f"README commands this test does not know how to run: {unknown}"


def test_the_benchmark_scripts_it_names_exist_and_compile():
    for c in shell_commands():
        if c.startswith("python benchmarks/"):
            py_compile.compile(str(REPO / shlex.split(c)[1]), doraise=True)


def test_prose_mentions_of_commands_parse():
    parser = build_parser()
    for m in re.finditer(r"`(datadistill [^`]+)`", README):
        text = re.sub(r"\[([^\]]*)\]", r"\1", " ".join(m.group(1).split()))  # [--model convnet]: optional
        argv = ["run_folder" if a == "RUN" else a for a in shlex.split(text)[1:] if a != "..."]  # ...: elided flags
        if argv in (["evaluate"], ["experts"]):  # the command's name alone
            argv = [argv[0], "--help"]
        elif argv[0] in ("evaluate", "show", "nas") and argv[1].startswith("--"):  # a flag of the command
            argv.insert(1, "run_folder")
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            assert e.code == 0, f"README mentions `{m.group(1)}`, which does not parse"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme-data")
    fx.write_mnist(root / "mnist", [16] * 10, [2] * 10)
    fx.write_cifar10(root / "cifar10", per_batch=3)
    return root


@pytest.fixture
def tiny_validation(monkeypatch):
    real = runner._validate

    def short(syn, cfg, *a, **k):
        return real(syn, replace(cfg, val_epochs=2), *a, **k)

    monkeypatch.setattr(runner, "_validate", short)


def tiny(argv: list[str], root: Path) -> list[str]:
    from datadistill.methods import get_method

    argv = [str(root) if a == SHARED else ("cpu" if a == "cuda" else a) for a in argv]
    argv = [VALUES.get((flag, a), a) for flag, a in zip([None, *argv], argv)]
    sub = argv[0]
    extra = TINY.get(sub, []) + (["--no-progress"] if sub in TINY else [])
    if sub == "distill":
        method = get_method(argv[argv.index("--method") + 1] if "--method" in argv else "dm")
        if not method.learns_images:
            extra = extra[2:]  # no --iterations 1
        if "experts" in method.requires:
            extra += TRAJECTORY
    return argv + extra


def publish_sets(here: Path) -> None:
    """The files the README's "Evaluating a published set" commands read, as the other code bases
    lay them out (written by datadistill's own exporters): a tiny CIFAR-10 set distilled with ZCA
    in `runs/mtt-cifar10` (the run the README takes the whitening from) saved in the MTT and DATM
    layouts, and one without ZCA in the DD-Ranking, ImageFolder and VICO (three experiments) ones."""
    import torch

    from datadistill.config import resolve_config
    from datadistill.interop import write_set
    from datadistill.run import run_distillation

    small = dict(iterations=1, batch_real=2, device="cpu", eval={"runs": 0}, val_epochs=1)
    zca = run_distillation(resolve_config("dm", "cifar10", 1, "quick", zca=True, **small), here / "runs" / "mtt-cifar10",
                           progress=False).synset
    plain = run_distillation(resolve_config("dm", "cifar10", 1, "quick", **small), None, progress=False).synset
    for fmt, folder in (("mtt", here / "logged_files" / "CIFAR10" / "run"),
                        ("datm", here / "logged_files" / "CIFAR10" / "10" / "ConvNet" / "run")):
        write_set(zca, folder, fmt)
        (folder / "datadistill.json").unlink(missing_ok=True)  # what only datadistill's export adds
    write_set(plain, here / "ddr", "ddranking")
    write_set(plain, here / "my_pngs", "imagefolder")
    vico = here / "res_DM_CIFAR10_ConvNet_10ipc.pt"
    write_set(plain, vico, "vico")
    saved = torch.load(vico, weights_only=True)
    torch.save({**saved, "data": saved["data"] * 3}, vico)  # experiments 0, 1, 2


def test_every_readme_command_runs(data_root, tmp_path, monkeypatch, tiny_validation, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATADISTILL_DATA", str(data_root))
    monkeypatch.setenv("DATADISTILL_MIRROR", fx.unused_url())  # nothing is downloaded
    images = tmp_path / "my_images"
    for c in ("cat", "dog"):
        for i in range(8):
            fx.write_image(images / c / f"{i}.png", fx.images_for(np.array([i % 2]), 3, 8)[0].transpose(1, 2, 0).copy())
    publish_sets(tmp_path)
    failed = []
    for cmd in shell_commands():
        if not cmd.startswith("datadistill "):
            continue
        argv = tiny(shlex.split(cmd)[1:], data_root)
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        err = capsys.readouterr().err
        if rc != 0:
            failed.append(f"{cmd} -> exit {rc}: {err.strip().splitlines()[-1:] }")
    assert not failed, "\n".join(failed)
    # what the README says the commands leave behind
    assert (tmp_path / "runs" / "mnist-5k-dm-ipc10" / "eval.json").exists()
    assert (tmp_path / "runs" / "folder-my_images-dm-ipc5" / "synset.safetensors").exists()
    assert (tmp_path / "runs" / "mnist-dm" / "show.png").exists()
    assert len(list((tmp_path / "out").glob("00?_[0-9]/*.png"))) == 100  # MNIST's classes
    assert (tmp_path / "report.html").exists()


def test_the_python_snippet_runs(data_root, tmp_path, monkeypatch, tiny_validation):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATADISTILL_DATA", raising=False)  # dd.evaluate must find the data by itself
    monkeypatch.setenv("DATADISTILL_MIRROR", fx.unused_url())
    real_distill, real_evaluate = datadistill.distill, datadistill.evaluate
    monkeypatch.setattr(datadistill, "distill", lambda *a, **k: real_distill(
        *a, **{**k, "iterations": 1, "batch_real": 2, "progress": False}))
    monkeypatch.setattr(datadistill, "evaluate", lambda *a, **k: real_evaluate(*a, **{**k, "runs": 1, "epochs": 1, "progress": False}))
    for block in code_blocks("python"):
        exec(compile(block.replace(SHARED, str(data_root)), "README.md", "exec"), {})  # noqa: S102
    assert (tmp_path / "mnist_dm_ipc10.safetensors").exists()
