"""Evaluation the field can compare (issue 18): the soft-label losses against hand computations,
teacher relabelling, cutmix / mixup, the teacher artifact, named protocols, the lr chosen on the
validation split only, and DD-Ranking's scores against hand values."""
from __future__ import annotations

import json
import math
import pickle
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datadistill.cli import main
from datadistill.config import EvalConfig
from datadistill.errors import ConfigError, FormatError
from datadistill.evaluate import evaluate
from datadistill.protocols import differences, load_protocol, protocol_names
from datadistill.scores import ars, hlr, ior, lrs, squash
from datadistill.synset import SyntheticSet
from datadistill.teacher import Teacher, import_teacher, teacher_settings, train_teacher
from datadistill.train import Objective, mix_batch, soft_label_loss

from conftest import TINY_NET

pytestmark = pytest.mark.usefixtures("one_thread")


# -- losses against hand computations -------------------------------------------------------------
S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
T = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
HARD = torch.tensor([0, 1])


def _softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_kl_is_t2_times_the_kl_of_the_tempered_distributions():
    for temp in (1.0, 4.0):
        want = 0.0
        for s, t in zip(S.tolist(), T.tolist()):
            p, q = _softmax(t, temp), _softmax(s, temp)
            want += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        want = want / 2 * temp ** 2
        assert soft_label_loss(S, T, HARD, "kl", temp).item() == pytest.approx(want, rel=1e-5)


def test_soft_ce_and_mse_gt_by_hand():
    want = -sum(sum(pi * math.log(qi) for pi, qi in zip(_softmax(t, 2.0), _softmax(s, 2.0)))
                for s, t in zip(S.tolist(), T.tolist())) / 2
    assert soft_label_loss(S, T, HARD, "soft_ce", 2.0).item() == pytest.approx(want, rel=1e-5)
    mse = sum((a - b) ** 2 for s, t in zip(S.tolist(), T.tolist()) for a, b in zip(s, t)) / 6
    ce = -(math.log(_softmax(S[0].tolist())[0]) + math.log(_softmax(S[1].tolist())[1])) / 2
    assert soft_label_loss(S, T, HARD, "mse_gt").item() == pytest.approx(mse, rel=1e-5)
    assert soft_label_loss(S, T, HARD, "mse_gt", ce_weight=0.5).item() == pytest.approx(mse + 0.5 * ce, rel=1e-5)
    with pytest.raises(ConfigError, match="unknown loss"):
        soft_label_loss(S, T, HARD, "l7")


class FixedTeacher(nn.Module):
    """A stand-in teacher: logits = the mean pixel of each image times (1, 2, 3)."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None] * torch.tensor([1.0, 2.0, 3.0])


def test_teacher_relabelling_uses_the_teachers_outputs_on_the_augmented_batch():
    x = torch.randn(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0])
    obj = Objective(loss="kl", teacher=FixedTeacher(), num_classes=3)
    xm, target, hard = obj.targets(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(xm, x) and torch.equal(hard, y)
    assert torch.allclose(target, FixedTeacher()(x))
    # with mixing, the teacher labels the mixed images
    obj = Objective(loss="kl", teacher=FixedTeacher(), mix="mixup", num_classes=3)
    xm, target, _ = obj.targets(x, y, torch.Generator().manual_seed(0))
    assert not torch.equal(xm, x) and torch.allclose(target, FixedTeacher()(xm))


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixing_mixes_the_labels_with_the_images_weights(mix):
    x = torch.zeros(6, 1, 8, 8)
    x[torch.arange(6) % 2 == 1] = 1.0  # odd images are ones
    dist = F.one_hot(torch.arange(6) % 2, 2).float()
    xm, dm = mix_batch(x, dist, mix, 1.0, torch.Generator().manual_seed(3))
    # each mixed image's mean pixel is the share of class 1 in its mixed label
    assert torch.allclose(xm.mean(dim=(1, 2, 3)), dm[:, 1], atol=1e-6)
    assert torch.allclose(dm.sum(1), torch.ones(6))


# -- the scores against hand values ----------------------------------------------------------------
def test_dd_ranking_scores_by_hand():
    assert squash(1.0) == pytest.approx(1.0) and squash(-1.0) == pytest.approx(0.0)
    assert hlr(90.0, 60.0) == 30.0 and ior(60.0, 50.0) == 10.0
    a = 0.5 * 0.10 - 0.5 * 0.30
    assert lrs(10.0, 30.0) == pytest.approx((math.exp(a) - math.exp(-1)) / (math.e - math.exp(-1)))
    b = 0.5 * 0.04 + 0.5 * 0.08
    assert ars(4.0, 8.0) == pytest.approx((math.exp(b) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert 0 <= lrs(-100, 100) <= lrs(0, 0) <= lrs(100, -100) <= 1


# -- the teacher artifact ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("teacher")
    s = teacher_settings("toy", "quick", epochs=3, model_args={"width": 8, "depth": 1}, batch_size=8)
    train_teacher(s, out, data=tiny, device="cpu", progress=False, log=lambda m: None)
    return out


def test_the_teacher_folder_is_an_artifact_with_a_checked_checksum(teacher, tiny):
    t = Teacher.open(teacher)
    m = t.manifest
    assert m["format"] == "datadistill.teacher" and len(m["fingerprint"]) == 16
    assert 0 <= m["test_accuracy"] <= 100 and m["model"] == "convnet_bn" and m["settings"]["epochs"] == 3
    net = t.network()
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    t.check_spec(tiny.spec)
    other = type(tiny.spec)(**{**tiny.spec.__dict__, "num_classes": 4, "class_names": ("a", "b", "c", "d")})
    with pytest.raises(ConfigError, match="does not fit.*classes"):
        t.check_spec(other)


def test_a_corrupted_teacher_is_refused(teacher, tmp_path):
    import shutil

    bad = tmp_path / "t"
    shutil.copytree(teacher, bad)
    w = bad / "teacher.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        Teacher.open(bad)


def test_teacher_training_resumes_to_the_same_weights(tmp_path, tiny, monkeypatch):
    from datadistill import teacher as tmod

    s = teacher_settings("toy", "quick", epochs=4, model_args={"width": 8, "depth": 1}, batch_size=8)
    train_teacher(s, tmp_path / "a", data=tiny, device="cpu", progress=False, log=lambda m: None)
    real = tmod.train_model

    def dying(*a, on_epoch_state=None, **k):  # killed after 2 epochs
        def hook(state):
            on_epoch_state(state)
            if state["epoch"] == 2:
                raise KeyboardInterrupt
        return real(*a, on_epoch_state=hook, **k)

    monkeypatch.setattr(tmod, "train_model", dying)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(s, tmp_path / "b", data=tiny, device="cpu", progress=False, log=lambda m: None)
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "manifest.json").exists()
    monkeypatch.setattr(tmod, "train_model", real)
    train_teacher(s, tmp_path / "b", data=tiny, device="cpu", progress=False, log=lambda m: None)
    a, b = Teacher.open(tmp_path / "a"), Teacher.open(tmp_path / "b")
    assert a.manifest["sha256"] == b.manifest["sha256"] and not (tmp_path / "b" / "checkpoint.pt").exists()


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/datadistill_pwned_teacher",))


def torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_importing_a_state_dict_refuses_code_and_checks_the_network(tmp_path, tiny, teacher):
    import os

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": _Boom()}))
    with pytest.raises(FormatError, match="refused: .*weights_only=True"):
        import_teacher(evil, "toy", "convnet_bn", tmp_path / "x", data=tiny, device="cpu", progress=False)
    assert not os.path.exists("/tmp/datadistill_pwned_teacher")
    for name, body in (("text.pt", b"root:x:0:0\n"), ("empty.pt", b""), ("cut.pt", torch_bytes({"w": torch.ones(3)})[:-40])):
        (tmp_path / name).write_bytes(body)  # not torch files, or a damaged one: said so, no traceback
        with pytest.raises(FormatError, match="not a (readable )?torch file"):
            import_teacher(tmp_path / name, "toy", "convnet_bn", tmp_path / "x", data=tiny, device="cpu", progress=False)
    assert not (tmp_path / "x").exists()
    good = tmp_path / "good.pt"
    torch.save(Teacher.open(teacher).network().state_dict(), good)
    with pytest.raises(ConfigError, match="not those of convnet_bn"):
        import_teacher(good, "toy", "convnet_bn", tmp_path / "y", data=tiny, device="cpu", progress=False)
    m = import_teacher(good, "toy", "convnet_bn", tmp_path / "z", model_args={"width": 8, "depth": 1}, data=tiny,
                       device="cpu", progress=False)
    assert m["imported_from"] == str(good) and Teacher.open(tmp_path / "z").manifest["sha256"] == m["sha256"]


# -- evaluation with soft labels, protocols, the lr grid -----------------------------------------------
def _set(tiny, soft=False):
    idx = torch.cat([tiny.train.indices_per_class[c][:2] for c in range(3)])
    labels = tiny.train.labels[idx]
    if soft:
        labels = F.one_hot(labels, 3).float() * 0.8 + 0.2 / 3
    return SyntheticSet(tiny.train.images[idx].clone(), labels, tiny.spec)


def test_teacher_protocol_trains_on_the_teachers_labels(tiny, teacher):
    kw = dict(test=tiny.test, device="cpu", model_args=TINY_NET, progress=False)
    p = EvalConfig(runs=1, epochs=3, aug="none", labels="teacher", teacher=str(teacher), loss="kl", temperature=2.0,
                   mix="cutmix", optimizer="adamw", schedule="cosine", lr=0.01)
    r = evaluate(_set(tiny), p, **kw)
    assert r.extra["labels"]["labels"] == "teacher" and r.extra["batched"] is False and 0 <= r.mean <= 100
    hard = evaluate(_set(tiny, soft=True), EvalConfig(runs=1, epochs=3, aug="none", labels="hard", lr=0.01), **kw)
    same = evaluate(_set(tiny), EvalConfig(runs=1, epochs=3, aug="none", lr=0.01), **kw)
    assert hard.accuracies == same.accuracies  # arg-max of the soft labels = the hard labels
    with pytest.raises(ConfigError, match="needs a teacher folder"):
        evaluate(_set(tiny), EvalConfig(runs=1, labels="teacher"), **kw)


def test_the_lr_grid_is_chosen_on_the_validation_split_only(tiny, monkeypatch):
    import importlib

    ev = importlib.import_module("datadistill.evaluate")

    seen = []
    real = ev.accuracy

    def spy(net, x, y, **k):
        seen.append("test" if x.data_ptr() == tiny.test.images.data_ptr() else
                    "val" if x.data_ptr() == tiny.val.images.data_ptr() else "other")
        return real(net, x, y, **k)

    monkeypatch.setattr(ev, "accuracy", spy)
    p = EvalConfig(runs=2, epochs=2, aug="none", lr_grid=[0.001, 0.1])
    r = evaluate(_set(tiny), p, test=tiny.test, val=tiny.val, device="cpu", model_args=TINY_NET, progress=False)
    assert seen == ["val", "val", "test", "test"]  # every grid value on val, then each run once on test
    sel = r.extra["lr_selection"]
    assert sel["grid"] == [0.001, 0.1] and sel["chosen"] in (0.001, 0.1) and r.lr == sel["chosen"]
    assert sel["val_accuracy"][sel["grid"].index(sel["chosen"])] == max(sel["val_accuracy"])
    fixed = evaluate(_set(tiny), EvalConfig(runs=1, epochs=2, aug="none", lr=0.05, lr_grid=[0.001]), test=tiny.test,
                     val=tiny.val, device="cpu", model_args=TINY_NET, progress=False)
    assert "lr_selection" not in fixed.extra and fixed.lr == 0.05  # a given lr is not searched


def test_named_protocols_load_with_their_sources_and_differences():
    assert set(protocol_names()) == {"datadistill", "vico", "mtt", "ddranking", "eccv2024"}
    dd = load_protocol("ddranking", teacher="T")
    assert (dd.labels, dd.loss, dd.mix, dd.epochs, dd.protocol) == ("teacher", "kl", "cutmix", 300, "ddranking")
    assert "mix: 'none' -> 'cutmix'" in differences(dd)
    assert load_protocol("eccv2024").runs == 3 and load_protocol("vico").lr == 0.01
    assert differences(load_protocol("datadistill")) == []
    with pytest.raises(ConfigError, match="needs a teacher folder"):
        load_protocol("ddranking")


def test_evaluate_command_with_a_protocol_and_the_scores(tmp_path, tiny, teacher, capsys, monkeypatch):
    import datadistill.cli as cli
    from datadistill import data as data_mod

    syn = _set(tiny)
    syn.save(tmp_path / "set.safetensors")
    monkeypatch.setattr(data_mod, "load_dataset", lambda *a, **k: tiny)
    args = ["evaluate", str(tmp_path / "set.safetensors"), "--protocol", "ddranking", "--teacher", str(teacher),
            "--runs", "2", "--epochs", "2", "--lr-grid", "0.01", "--no-progress"]
    assert main([*args, "--scores"]) == 2  # no baseline yet
    assert "datadistill baseline --dataset toy" in capsys.readouterr().err
    (tmp_path / "b.json").write_text(json.dumps({"test_mean": 90.0}))
    assert main([*args, "--scores", "--baseline", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr()
    assert "protocol ddranking" in out.err and "differs from datadistill's in: " in out.err
    assert "LRS" in out.out and "ARS" in out.out
    doc = json.loads((tmp_path / "set.evaluate.json").read_text())
    s = doc[0]["extra"]["scores"]
    assert len(s["per_run"]) == 2 and 0 <= s["lrs"]["mean"] <= 1 and s["full_hard_accuracy"] == 90.0
    r0 = s["per_run"][0]
    assert r0["ior"] == pytest.approx(s["accuracies"]["set"][0] - s["accuracies"]["random"][0])
    assert r0["lrs"] == pytest.approx(lrs(r0["ior"], r0["hlr"]))
    assert doc[0]["extra"]["protocol"] == "ddranking" and cli is not None


def test_rank_scores_runs_each_distinct_protocol_once(tiny, monkeypatch):
    import sys

    from datadistill.scores import rank_scores

    ev = sys.modules["datadistill.evaluate"]  # the package exports the function under the module's name

    calls = []
    real = ev.evaluate

    def counting(syn, protocol, **kw):
        calls.append((len(syn.images), protocol.aug, protocol.labels))
        return real(syn, protocol, **kw)

    monkeypatch.setattr(ev, "evaluate", counting)
    p = EvalConfig(runs=1, epochs=1, aug="dsa", lr=0.01)  # hard labels with DSA: its own hard and augmented variant
    s = rank_scores(_set(tiny), p, "convnet", 90.0, test=tiny.test, train=tiny.train, device="cpu",
                    model_args=TINY_NET)
    assert sorted(calls) == [(6, "dsa", "hard")] * 2 + [(6, "none", "hard")] * 2  # set and random, with and without augmentation
    a = s["accuracies"]
    assert a["set_aug"] == a["set"] == a["set_hard"] and a["random_aug"] == a["random"]
    assert s["per_run"][0]["ior"] == pytest.approx(a["set"][0] - a["random"][0])


def test_rank_scores_cache_continues_from_the_evaluations_it_finished(tiny, tmp_path, monkeypatch):
    import sys

    from datadistill.scores import rank_scores

    ev = sys.modules["datadistill.evaluate"]
    real, calls = ev.evaluate, []

    def counting(syn, protocol, **kw):
        calls.append(protocol.aug)
        if len(calls) == 3:
            raise KeyboardInterrupt  # cut off during the third evaluation
        return real(syn, protocol, **kw)

    monkeypatch.setattr(ev, "evaluate", counting)
    p = EvalConfig(runs=1, epochs=1, aug="dsa", lr=0.01)
    kw = dict(test=tiny.test, train=tiny.train, device="cpu", model_args=TINY_NET, cache=tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        rank_scores(_set(tiny), p, "convnet", 90.0, **kw)
    assert len(list((tmp_path / "c").glob("*.json"))) == 2
    calls.clear()
    monkeypatch.setattr(ev, "evaluate", lambda syn, protocol, **k: (calls.append(protocol.aug), real(syn, protocol, **k))[1])
    s = rank_scores(_set(tiny), p, "convnet", 90.0, **kw)
    assert calls == ["none", "none"]  # the two finished evaluations were read back
    monkeypatch.setattr(ev, "evaluate", real)
    fresh = rank_scores(_set(tiny), p, "convnet", 90.0, **{**kw, "cache": None})
    assert fresh["accuracies"] == s["accuracies"]
    other = rank_scores(_set(tiny), replace(p, epochs=2), "convnet", 90.0, **kw)  # other settings: not read back
    assert len(list((tmp_path / "c").glob("*.json"))) == 8 and other["protocol"] == s["protocol"]
