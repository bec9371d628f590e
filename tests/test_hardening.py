"""What a kill, a full disk or a closed pipe leaves behind: no temporary files on the next run, the
final validation resumed, files with the umask's mode, one error line."""
import json
import os
import subprocess
import sys

import pytest
from safetensors import SafetensorError

import datadistill.run.loop as runner
import datadistill.synset as synset_module
from datadistill.config import resolve_config
from datadistill.errors import DistillError, DivergedError, OutputError
from datadistill.methods.distribution import DistributionMatching
from datadistill.run import run_distillation

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(device="cpu", batch_real=5, model_args={"width": 8, "depth": 2}, checkpoint_every=2,
             val_epochs=2, eval={"runs": 0})


def cfg(**over):
    return resolve_config("dm", "toy", 2, "quick", **{**SMALL, "iterations": 4, **over})


def final_lines(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "distill_seconds" in r]


def test_stale_temporaries_of_a_killed_run_are_removed_on_the_next_run(tmp_path, toy):
    run = tmp_path / "run"
    run_distillation(cfg(iterations=2), run, data=toy, progress=False)
    stale = [run / ".synset.safetensors.k1ll3d.tmp", run / ".checkpoint.pt.abc123.tmp", run / ".metrics.jsonl.x.tmp"]
    for p in stale:
        p.write_bytes(b"")
    keep = run / ".my-own-notes.tmp"  # not a temporary of the run's files: left alone
    keep.write_text("mine")
    run_distillation(cfg(iterations=4), run, data=toy, progress=False)
    assert not [p for p in stale if p.exists()]
    assert keep.exists()


def test_a_kill_during_the_final_validation_is_resumed(tmp_path, toy, monkeypatch):
    run = tmp_path / "run"
    real = runner._validate

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_validate", killed)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(cfg(), run, data=toy, progress=False)
    assert final_lines(run) == []  # every iteration done, the final validation not
    monkeypatch.setattr(runner, "_validate", real)
    res = run_distillation(cfg(), run, data=toy, progress=False)
    assert res.resumed_from == 4
    assert [r["it"] for r in final_lines(run)] == [4]
    run_distillation(cfg(), run, data=toy, progress=False)  # a finished run is not validated again
    assert len(final_lines(run)) == 1


def test_run_files_get_the_umask_mode(tmp_path, toy):
    old = os.umask(0o022)
    try:
        run_distillation(cfg(iterations=2), tmp_path / "run", data=toy, progress=False)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_a_full_disk_is_one_error_and_leaves_no_temporary(tmp_path, toy, monkeypatch):
    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(synset_module, "save_file", full)
    with pytest.raises(OutputError, match="synset.safetensors.*No space left"):
        run_distillation(cfg(iterations=2), tmp_path / "run", data=toy, progress=False)
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_the_nan_message_says_whether_a_checkpoint_exists(tmp_path, toy, monkeypatch):
    def nan_at_3(self, it):
        if it == 2:
            raise DivergedError("the loss became nan at iteration 2; lower lr_img (now 1.0).")
        return {"loss": 1.0}

    monkeypatch.setattr(DistributionMatching, "step", nan_at_3)
    with pytest.raises(DistillError, match="checkpoint.pt, is kept"):
        run_distillation(cfg(), tmp_path / "a", data=toy, progress=False)  # checkpoint at 2
    with pytest.raises(DistillError, match="No checkpoint had been written yet"):
        run_distillation(cfg(checkpoint_every=10), tmp_path / "b", data=toy, progress=False)
    with pytest.raises(DistillError) as e:
        run_distillation(cfg(), None, data=toy, progress=False)
    assert "kept" not in str(e.value)


def test_a_closed_pipe_is_not_a_traceback():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0.5); "
                          "from datadistill.cli import main; sys.exit(main(['datasets']))"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # the reader (`| head`) is gone before the first line
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "Error" not in err, err
    assert p.returncode == 1


def test_a_long_stage_shows_a_line_and_a_short_one_none(capsys):
    import time

    from datadistill.progress import stage

    with stage("reading a slow thing", delay=0.05):
        time.sleep(0.3)
    with stage("reading a fast thing", delay=5):
        pass
    with stage("reading a hidden thing", enabled=False, delay=0.0):
        time.sleep(0.1)
    err = capsys.readouterr().err
    assert "reading a slow thing ..." in err and "reading a slow thing: done in" in err
    assert "fast thing" not in err and "hidden" not in err


def test_evaluate_shows_its_test_inference_and_no_progress_hides_it(toy, capsys):
    from datadistill.evaluate import evaluate
    from datadistill.synset import SyntheticSet

    syn = SyntheticSet(toy.train.images[:6], toy.train.labels[:6], toy.train.spec)
    kw = dict(model="convnet", runs=2, epochs=1, aug="none", test=toy.test, device="cpu",
              model_args={"width": 8, "depth": 2})
    evaluate(syn, **kw, progress=True)
    assert "test convnet on 15 images" in capsys.readouterr().err
    evaluate(syn, **kw, progress=False)
    assert capsys.readouterr().err == ""


def test_evaluate_takes_a_path_and_refuses_what_is_not_a_set(toy, tmp_path):
    from datadistill.errors import FormatError
    from datadistill.evaluate import evaluate
    from datadistill.synset import SyntheticSet

    syn = SyntheticSet(toy.train.images[:6], toy.train.labels[:6], toy.train.spec)
    kw = dict(model="convnet", runs=1, epochs=1, aug="none", test=toy.test, device="cpu",
              model_args={"width": 8, "depth": 2}, progress=False)
    syn.save(tmp_path / "set.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    syn.save(run / "synset.safetensors")
    want = evaluate(syn, **kw).accuracies
    assert evaluate(tmp_path / "set.safetensors", **kw).accuracies == want  # a file, as a Path
    assert evaluate(str(run), **kw).accuracies == want  # a run folder, as a str
    with pytest.raises(FormatError, match="no such file"):
        evaluate(tmp_path / "missing.safetensors", **kw)
    for bad in (None, 3, [syn]):
        with pytest.raises(TypeError, match="SyntheticSet, ImageData or the path"):
            evaluate(bad, **kw)


def test_evaluate_takes_a_named_protocol_in_the_protocol_slot_and_checks_its_lr(toy):
    from datadistill.config import ConfigError
    from datadistill.evaluate import evaluate
    from datadistill.synset import SyntheticSet

    syn = SyntheticSet(toy.train.images[:6], toy.train.labels[:6], toy.train.spec)
    kw = dict(runs=1, epochs=1, test=toy.test, device="cpu", model_args={"width": 8, "depth": 2}, progress=False)
    res = evaluate(syn, "vico", **kw)  # once read as a network called "vico"
    assert res.extra["protocol"] == "vico" and res.lr == 0.01 and "lr_selection" not in res.extra
    assert evaluate(syn, "convnet", aug="none", **kw).model == "convnet"  # a network name still works
    with pytest.raises(ConfigError, match="eval lr must be > 0, got -0.1"):
        evaluate(syn, lr=-0.1, **kw)
