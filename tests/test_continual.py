"""Continual learning: class groups, the class-restricted view, and the protocol end to end on toy data."""
import json

import pytest
import torch

from datadistill.apps import continual as cl
from datadistill.apps.continual import class_groups, continual_learning, restrict_classes, restrict_splits
from datadistill.cli import main
from datadistill.errors import ConfigError
from datadistill.methods import initial_synset
from datadistill.rng import make_generator
from toydata import toy_splits

TINY_DM = dict(iterations=2, batch_real=4, model_args={"width": 8, "depth": 2}, val_epochs=1)
TRAIN = dict(epochs=2, aug="none", device="cpu", model_args={"width": 8, "depth": 2})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def toy4():
    return toy_splits(num_classes=4)


def test_class_groups():
    assert class_groups(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert class_groups(4, 2) == [[0, 1], [2, 3]]
    assert class_groups(4, 1) == [[0, 1, 2, 3]]
    assert class_groups(5, 2) == [[0, 1, 2], [3, 4]]  # not divisible: the first groups hold one more
    for bad in (0, 11):
        with pytest.raises(ConfigError, match="steps must be between"):
            class_groups(10, bad)


def test_restrict_classes(toy4):
    kept = restrict_classes(toy4.train, [2, 3])
    assert set(kept.labels.tolist()) == {2, 3} and kept.spec == toy4.spec and len(kept) == 24
    view = restrict_classes(toy4.train, [2, 3], renumber=True)
    assert view.spec.num_classes == 2 and view.spec.class_names == ("2", "3")
    assert torch.equal(view.images, kept.images) and torch.equal(view.labels + 2, kept.labels)
    splits = restrict_splits(toy4, [1])
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [12, 3, 5]


@pytest.mark.parametrize("memory", ["random", "herding"])
def test_selected_memory(toy4, memory):
    opts = {"method_args": {"embed_epochs": 1}, "model_args": {"width": 8, "depth": 2}} if memory == "herding" else None
    res = continual_learning(steps=2, ipc=2, memory=memory, data=toy4, distill_options=opts, **TRAIN)
    assert res.memory_kind == "selected" and res.groups == [[0, 1], [2, 3]]
    assert [s.new_classes for s in res.per_step] == [[0, 1], [2, 3]]
    assert [s.seen_classes for s in res.per_step] == [[0, 1], [0, 1, 2, 3]]
    assert [s.memory_size for s in res.per_step] == [4, 8]  # IPC x classes seen
    assert all(n == 2 for s in res.per_step for n in s.memory_per_class.values())
    assert [s.test_images for s in res.per_step] == [10, 20]  # 5 test images per seen class
    assert all(0 <= a <= 100 for s in res.per_step for a in s.accuracies)
    assert json.loads(json.dumps(res.to_dict()))["accuracies"] == res.accuracies


def test_dm_memory_sees_only_the_steps_classes(toy4, monkeypatch):
    seen_data, memories = [], []
    real_run, real_eval = cl.run_distillation, cl.evaluate

    def spy_run(cfg, out, *, data, **kw):
        seen_data.append(data)
        return real_run(cfg, out, data=data, **kw)

    def spy_eval(syn, **kw):
        memories.append((syn, kw["test"]))
        return real_eval(syn, **kw)

    monkeypatch.setattr(cl, "run_distillation", spy_run)
    monkeypatch.setattr(cl, "evaluate", spy_eval)
    res = continual_learning(steps=2, ipc=2, memory="dm", data=toy4, distill_options=TINY_DM, **TRAIN)
    assert res.memory_kind == "synthetic" and len(seen_data) == 2
    for data, classes in zip(seen_data, ([0, 1], [2, 3])):
        # by construction, the distiller of a step holds the images of that step's classes and no others
        assert data.spec.class_names == tuple(str(c) for c in classes) and data.spec.num_classes == 2
        own = restrict_classes(toy4.train, classes)
        assert torch.equal(data.train.images, own.images)
        assert set(data.val.labels.tolist()) <= {0, 1} and len(data.val) == 6
    assert res.per_step[0].distill_train_images == 24
    # the memory keeps the original class ids and the full spec; the test images are those of seen classes
    (m1, t1), (m2, t2) = memories
    assert m1.spec == toy4.spec and m1.hard_labels.tolist() == [0, 0, 1, 1]
    assert m2.hard_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(m2.images[:4], m1.images)  # earlier memory is kept as it was
    assert set(t1.labels.tolist()) == {0, 1} and set(t2.labels.tolist()) == {0, 1, 2, 3}
    assert all(0 <= a <= 100 for a in res.accuracies)


def test_run_memory(toy4, tmp_path):
    syn = initial_synset(toy4.train, 3, "real", make_generator(0, "mem"))
    syn.meta["method"] = "random"
    syn.save(tmp_path / "set.safetensors")
    res = continual_learning(steps=4, ipc=None, memory=str(tmp_path / "set.safetensors"), data=toy4, **TRAIN)
    assert res.memory_kind == "run" and res.ipc == 3
    assert [s.memory_size for s in res.per_step] == [3, 6, 9, 12]
    assert all(s.build_seconds == 0 for s in res.per_step)
    with pytest.raises(ConfigError, match="needs 2 of each"):
        continual_learning(steps=2, ipc=2, memory=str(tmp_path / "set.safetensors"), data=toy4, **TRAIN)
    with pytest.raises(ConfigError, match="neither a method"):
        continual_learning(steps=2, ipc=2, memory=str(tmp_path / "nothing"), data=toy4, **TRAIN)


def test_cli_writes_json(toy4, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cl, "load_dataset", lambda *a, **k: toy4)
    out = tmp_path / "c.json"
    args = ["continual", "--dataset", "toy", "--steps", "2", "--ipc", "1", "--memory", "random", "--epochs", "1",
            "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    assert "average accuracy" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["steps"] == 2 and [s["memory_size"] for s in doc["per_step"]] == [2, 4]
