import json

import pytest
import torch

from datadistill.config import resolve_config
from datadistill.errors import ConfigError, DistillError
from datadistill.methods.distribution import DistributionMatching
from datadistill.run import run_distillation
from datadistill.synset import SyntheticSet
from toydata import check_kill_and_resume

SMALL = dict(device="cpu", batch_real=5, model_args={"width": 8, "depth": 2}, checkpoint_every=2,
             val_epochs=2, eval={"runs": 0})


def cfg(**over):
    return resolve_config("dm", "toy", 2, "quick", **{**SMALL, "iterations": 6, **over})


def test_run_folder_contents_and_eval_json(tmp_path, toy):
    c = cfg(eval={"runs": 2, "epochs": 3, "aug": "none"})
    res = run_distillation(c, tmp_path / "run", data=toy, progress=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"synset.safetensors", "config.yaml", "metrics.jsonl", "grid_init.png", "grid_final.png",
            "checkpoint.pt", "eval.json"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"model", "runs", "accuracies", "mean", "std", "train_seconds", "flops"} <= set(ev)
    assert ev["runs"] == 2 and len(ev["accuracies"]) == 2 and 0 <= ev["mean"] <= 100
    assert ev["flops"]["train_per_image"] > 0
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["it"] for l in lines if "loss" in l] == [1, 2, 3, 4, 5, 6]
    syn = SyntheticSet.load(tmp_path / "run")
    assert torch.equal(syn.images, res.synset.images) and syn.meta["iterations"] == 6


def test_resume_after_a_kill_gives_the_same_set(tmp_path, toy, monkeypatch):
    check_kill_and_resume(DistributionMatching, cfg, toy, tmp_path, monkeypatch)


def test_extending_iterations_resumes(tmp_path, toy):
    full = run_distillation(cfg(), tmp_path / "a", data=toy, progress=False).synset
    run_distillation(cfg(iterations=4), tmp_path / "b", data=toy, progress=False)
    more = run_distillation(cfg(), tmp_path / "b", data=toy, progress=False)
    assert more.resumed_from == 4 and torch.equal(more.synset.images, full.images)


def test_other_settings_in_same_folder_are_refused(tmp_path, toy):
    run_distillation(cfg(iterations=2), tmp_path / "a", data=toy, progress=False)
    with pytest.raises(ConfigError, match="lr_img"):
        run_distillation(cfg(iterations=2, lr_img=0.5), tmp_path / "a", data=toy, progress=False)


def test_reworded_preset_sources_still_resume(tmp_path, toy):
    import dataclasses

    run_distillation(cfg(iterations=2), tmp_path / "a", data=toy, progress=False)
    reworded = dataclasses.replace(cfg(iterations=4), sources=["a preset whose citation text changed"])
    assert run_distillation(reworded, tmp_path / "a", data=toy, progress=False).resumed_from == 2


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, toy, monkeypatch):
    def nan_loss(self, it):
        loss = (self.images ** 2).sum()
        return loss * float("nan") if it == 3 else loss

    monkeypatch.setattr(DistributionMatching, "loss", nan_loss)
    with pytest.raises(DistillError, match="NaN|nan"):
        run_distillation(cfg(), tmp_path / "a", data=toy, progress=False)
    assert SyntheticSet.load(tmp_path / "a").meta["iterations"] == 2
    assert torch.isfinite(SyntheticSet.load(tmp_path / "a").images).all()


def test_ipc_larger_than_a_class_is_refused(toy):
    with pytest.raises(ConfigError, match="larger than class"):
        run_distillation(resolve_config("dm", "toy", 50, "quick", **SMALL), None, data=toy, progress=False)
