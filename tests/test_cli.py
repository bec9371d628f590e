"""The command line end to end on the embedded default, at a tiny budget."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from datadistill.cli import main
from datadistill.synset import SyntheticSet

TINY = ["--iterations", "2", "--ipc", "1", "--batch-real", "4", "--checkpoint-every", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["distill", *TINY, "--eval-runs", "1", "--eval-epochs", "2", "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_distill_writes_the_run_and_prints_accuracy(run_dir, capsys):
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["model"] == "convnet" and len(ev["accuracies"]) == 1
    syn = SyntheticSet.load(run_dir / "synset.safetensors")
    assert syn.images.shape == (10, 1, 28, 28) and syn.meta["method"] == "dm"
    assert syn.spec.name == "mnist-5k"


def test_second_distill_on_the_folder_resumes(run_dir, capsys):
    assert main(["distill", *TINY[:-1], "--iterations", "3", "--eval-runs", "0", "--no-progress", "--out", str(run_dir)]) == 0
    assert "resuming" in capsys.readouterr().err
    assert SyntheticSet.load(run_dir).meta["iterations"] == 3


def test_evaluate_show_export(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--models", "convnet,mlp", "--runs", "1", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "convnet" in out and "mlp" in out
    table = json.loads((run_dir / "evaluate.json").read_text())
    assert [r["model"] for r in table] == ["convnet", "mlp"]

    assert main(["show", str(run_dir)]) == 0
    assert Image.open(run_dir / "show.png").size[0] > 100

    assert main(["export", str(run_dir), str(tmp_path / "exp"), "--format", "imagefolder"]) == 0
    assert len(list((tmp_path / "exp").glob("*/*.png"))) == 10


def test_datasets_lists_the_embedded_default(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("mnist-5k"))
    assert "present" in line
    assert "cifar100" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["distill", "--dataset", "imagenet-9000"], "imagenet-9000"),
        (["distill", "--method", "magic"], "unknown method"),
        (["distill", "--ipc", "100000"], "larger than class"),
        (["evaluate", "/nonexistent/run"], "no such file"),
    ],
)
def test_errors_are_one_line_with_exit_2(args, fragment, capsys, tmp_path):
    assert main([*args, *(["--out", str(tmp_path / "x")] if args[0] == "distill" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err
    assert not (tmp_path / "x" / "synset.safetensors").exists()


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "datadistill", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "distill" in r.stdout


def test_no_command_overwrites_a_file_of_another_kind(run_dir, tmp_path, capsys):
    """show, difficulty, import, report and export once wrote over whatever had the output's name: a
    PNG over the very set it showed, EL2N scores over a run's set, an export over an MTT run's own
    images_best.pt. Each refuses before any work; a re-run over its own kind of file still works."""
    set_file = run_dir / "synset.safetensors"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    mtt_run = tmp_path / "logged_files"
    mtt_run.mkdir()
    (mtt_run / "images_best.pt").write_bytes(b"the reference's own file")
    before = {p: p.read_bytes() for p in (set_file, notes, mtt_run / "images_best.pt")}
    refused = [
        ["show", str(run_dir), "--out", str(set_file)],
        ["show", str(run_dir), "--out", str(notes)],
        ["difficulty", "--dataset", "mnist-5k", "--nets", "1", "--epochs", "0", "--out", str(set_file), "--no-progress"],
        ["import", str(mtt_run / "images_best.pt"), "--format", "mtt", "--dataset", "mnist-5k", "--out", str(notes)],
        ["report", str(run_dir), "--out", str(notes)],
        ["export", str(run_dir), str(notes), "--format", "grid"],
        ["export", str(run_dir), str(mtt_run), "--format", "mtt"],
    ]
    for args in refused:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and ("already exists" in err), (args, err)
    assert {p: p.read_bytes() for p in before} == before
    png = tmp_path / "grid.png"
    for _ in range(2):  # the same command twice: its own output is refreshed
        assert main(["show", str(run_dir), "--out", str(png)]) == 0
        assert main(["export", str(run_dir), str(tmp_path / "exp-mtt"), "--format", "mtt"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG") and (tmp_path / "exp-mtt" / "images_best.pt").exists()


def test_a_folder_of_one_kind_is_refused_as_the_output_of_another(run_dir, tmp_path, capsys):
    # distill, experts and teacher once wrote into one another's folders (a run's files beside a
    # teacher's, a manifest.json into a run folder)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "manifest.json").write_text(json.dumps({"format": "datadistill.teacher"}))
    listing = sorted(p.name for p in run_dir.iterdir())
    for args, says in ((["distill", *TINY, "--out", str(teacher)], "holds a teacher, not a distillation run"),
                       (["experts", "--dataset", "mnist-5k", "--out", str(teacher)], "holds a teacher, not an experts folder"),
                       (["teacher", "--dataset", "mnist-5k", "--out", str(run_dir)], "holds a distillation run, not a teacher"),
                       (["experts", "--dataset", "mnist-5k", "--out", str(run_dir)], "holds a distillation run")):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and says in err and "\n" not in err, err
    assert sorted(p.name for p in teacher.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == listing
