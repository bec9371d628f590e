"""Decoupled distillation (issue 20): SRe2L's recover loss, RDED's scoring, selection and stitching,
the shared relabelling, and resumable, seeded runs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_NET
from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.evaluate import _with_recorded_teacher, made_for
from datadistill.methods.decoupled.crops import crop_resize, pad_to, region_boxes, stitch
from datadistill.methods.decoupled.rded import RDED, crop_scores, select_patches
from datadistill.methods.decoupled.relabel import relabel, teacher_probs
from datadistill.methods.decoupled.sre2l import SRe2L, batch_norm_statistics, bn_matching_loss, recovery_batches
from datadistill.run import prepare, run_distillation
from datadistill.synset import SyntheticSet
from datadistill.teacher import Teacher
from toydata import check_kill_and_resume, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_for(method, teacher, ipc=2, **over):
    base = dict(device="cpu", model="convnet_bn", model_args=TINY_NET, val_epochs=1, checkpoint_every=1,
                eval={"runs": 0}, artifacts={"teacher": teacher})
    if method == "sre2l":
        base.update(iterations=3, init="noise", method_args={"batch_classes": 2, "lr": 0.05})
    if method == "rded":
        base.update(iterations=3, method_args={"mipc": 10, "num_crop": 3, "factor": 2})
    base.update(over)
    return resolve_config(method, "toy", ipc, "quick", **base)


# ---------------------------------------------------------------------------------- SRe2L
def tiny_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 3, 1),
                        nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        net[1].running_mean.copy_(torch.tensor([0.1, -0.2]))
        net[1].running_var.copy_(torch.tensor([0.5, 2.0]))
        net[4].running_mean.copy_(torch.tensor([0.0, 0.3, -0.1]))
        net[4].running_var.copy_(torch.tensor([1.0, 0.2, 0.7]))
    return net.eval()


def test_bn_loss_equals_a_hand_computation():
    net = tiny_bn_net()
    x = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    with batch_norm_statistics(net) as stats:
        net(x)
    loss, terms = bn_matching_loss(stats, first_multiplier=10.0)

    def term(a, bn):  # per channel over batch and positions; the biased variance
        m = a.mean((0, 2, 3))
        v = ((a - m[None, :, None, None]) ** 2).mean((0, 2, 3))
        return torch.sqrt(((m - bn.running_mean) ** 2).sum()) + torch.sqrt(((v - bn.running_var) ** 2).sum())

    a1 = net[0](x)
    a2 = net[3](net[2](net[1](a1)))
    hand1, hand2 = term(a1, net[1]), term(a2, net[4])
    assert torch.allclose(terms[0], hand1) and torch.allclose(terms[1], hand2)
    assert torch.allclose(loss, 10.0 * hand1 + hand2)


def test_a_teacher_without_batch_norm_is_refused():
    with pytest.raises(ConfigError, match="batch-norm"):
        bn_matching_loss([])


def test_recovery_batches_take_one_image_of_each_class():
    index = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])]
    got = [b.tolist() for b in recovery_batches(index, 2)]
    assert got == [[0, 3], [6], [1, 4], [7], [2, 5], [8]]


def test_a_recover_step_lowers_the_loss(tiny, tiny_teacher):
    d = prepare(cfg_for("sre2l", tiny_teacher), data=tiny, progress=False).distiller
    before = float(d.loss(0).detach())  # iteration 0's crops and flips, the same before and after the step
    rec = d.step(0)
    assert rec["loss"] * len(d.batches) == pytest.approx(before, rel=1e-5)
    assert float(d.loss(0).detach()) < before
    lo, hi = d.lo.flatten(), d.hi.flatten()  # pixels stay valid
    assert bool((d.images >= lo.view(1, -1, 1, 1) - 1e-6).all() and (d.images <= hi.view(1, -1, 1, 1) + 1e-6).all())


def test_sre2l_lowers_its_loss_over_a_short_run(tiny, tiny_teacher):
    d = prepare(cfg_for("sre2l", tiny_teacher, iterations=30, method_args={"batch_classes": 3, "lr": 0.1,
                                                                          "crop": False, "flip": False}),
                data=tiny, progress=False).distiller
    first = d.step(0)["loss"]
    for it in range(1, 30):
        last = d.step(it)["loss"]
    assert last < 0.7 * first


# ---------------------------------------------------------------------------------- RDED
def test_region_boxes_tile_the_image():
    assert region_boxes(5, 5, 2) == [(0, 0, 3, 3), (0, 3, 3, 2), (3, 0, 2, 3), (3, 3, 2, 2)]
    assert region_boxes(4, 6, 1) == [(0, 0, 4, 6)]


def test_stitching_places_patch_k_in_region_k():
    patches = torch.stack([torch.full((2, 1, 2, 2), float(10 * k)) + torch.arange(2.0).view(2, 1, 1, 1)
                           for k in range(4)])  # patch k of image t holds 10 k + t
    out = stitch(patches, 4, 4, 2)
    for t in range(2):
        for k, (top, left, h, w) in enumerate(region_boxes(4, 4, 2)):
            assert bool((out[t, :, top:top + h, left:left + w] == 10 * k + t).all())


def test_patch_scores_are_the_teachers_cross_entropy_per_crop(tiny, tiny_teacher):
    teacher = Teacher.open(tiny_teacher).network("cpu")
    crops = torch.randn(7, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    got = crop_scores(teacher, crops, 1, (8, 8), chunk=3)
    want = F.cross_entropy(teacher(pad_to(crops, 8, 8)), torch.full((7,), 1), reduction="none")
    assert torch.allclose(got, want, atol=1e-6)
    assert tuple(pad_to(crops, 8, 8)[0, 0, 2:6, 2:6].shape) == (4, 4)
    assert torch.equal(pad_to(crops, 8, 8)[:, :, 2:6, 2:6], crops)


def test_selection_keeps_each_candidates_best_crop_then_the_lowest():
    scores = torch.tensor([[0.9, 0.2, 0.5, 3.0],   # crop 0 of candidates 0..3
                           [0.1, 0.8, 0.6, 2.0]])  # crop 1
    crop, kept = select_patches(scores, 3)
    assert kept.tolist() == [0, 1, 2]  # best scores 0.1, 0.2, 0.5, 2.0: the three lowest, in order
    assert crop.tolist() == [1, 0, 0]


def test_rded_stitches_the_recorded_crops_and_labels_each_region(tiny, tiny_teacher):
    cfg = cfg_for("rded", tiny_teacher)
    res = run_distillation(cfg, None, data=tiny, progress=False, log=lambda m: None)
    syn = res.synset
    boxes = region_boxes(8, 8, 2)
    assert syn.meta["regions"] == [list(b) for b in boxes]
    for i in range(len(syn)):
        for k, (top, left, h, w) in enumerate(boxes):
            src, *box = syn.meta["patch_sources"][i][k]
            assert int(tiny.train.labels[src]) == i // 2  # images ordered by class, IPC 2
            patch = crop_resize(tiny.train.images[src:src + 1], tuple(box), (4, 4))
            assert torch.allclose(syn.images[i:i + 1, :, top:top + h, left:left + w], patch)
    teacher = Teacher.open(tiny_teacher).network("cpu")
    for k, (top, left, h, w) in enumerate(boxes):
        alone = pad_to(syn.images[:, :, top:top + h, left:left + w], 8, 8)
        assert torch.allclose(syn.region_labels[:, k], torch.softmax(teacher(alone), 1), atol=1e-6)
    assert torch.allclose(syn.labels, syn.region_labels.mean(1), atol=1e-6)  # equal areas: the plain mean
    assert syn.meta["labels"]["granularity"] == "region"
    assert syn.meta["labels"]["stored_bytes"] == 4 * (syn.labels.numel() + syn.region_labels.numel())


def test_rded_refuses_iterations_that_do_not_cover_the_classes(tiny, tiny_teacher):
    with pytest.raises(ConfigError, match="--iterations 3"):
        prepare(cfg_for("rded", tiny_teacher, iterations=2), data=tiny, progress=False)


def test_rded_does_not_depend_on_the_classes_per_step(tiny, tiny_teacher):
    one = run_distillation(cfg_for("rded", tiny_teacher), None, data=tiny, progress=False, log=lambda m: None)
    cfg = cfg_for("rded", tiny_teacher, iterations=1,
                  method_args={"mipc": 10, "num_crop": 3, "factor": 2, "classes_per_step": 3})
    all_at_once = run_distillation(cfg, None, data=tiny, progress=False, log=lambda m: None)
    assert torch.equal(one.synset.images, all_at_once.synset.images)


# ---------------------------------------------------------------------------------- relabelling
class StandIn(nn.Module):
    """A fixed teacher: logits = W @ (mean of each channel's pixels, 1)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, 0.0], [-1.0, 0.5], [2.0, -1.0]]), requires_grad=False)

    def forward(self, x):
        f = torch.cat([x.mean((1, 2, 3))[:, None], torch.ones(x.shape[0], 1)], 1)
        return f @ self.w.T


def test_relabelling_stores_the_teachers_distributions(tiny):
    spec = tiny.spec
    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    syn = SyntheticSet(images, torch.tensor([0, 0, 1, 1, 2, 2]), spec)
    out = relabel(syn, StandIn(), "stored", about={"teacher": "T"})
    assert torch.allclose(out.labels, torch.softmax(StandIn()(images), 1))
    assert torch.allclose(out.labels, teacher_probs(StandIn(), images, chunk=4))
    assert out.meta["labels"]["mode"] == "stored" and out.meta["labels"]["teacher"] == "T"
    assert out.meta["labels"]["stored_bytes"] == 6 * 3 * 4
    assert torch.equal(out.images, images)
    assert torch.equal(made_for(out), torch.tensor([0, 0, 1, 1, 2, 2]))  # hard-label evaluation: the classes
    assert not torch.equal(out.hard_labels, made_for(out))  # which this teacher's arg-max is not


def test_region_labels_are_the_teachers_on_each_region_weighted_by_area(tiny):
    images = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    boxes = region_boxes(5, 5, 2)
    syn = SyntheticSet(images, torch.tensor([0, 1]), toy_splits(2, 2, 1, 5).spec, meta={"regions": boxes})
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(25, 2))
    out = relabel(syn, teacher, "stored")
    areas = torch.tensor([9.0, 6.0, 6.0, 4.0])
    want = []
    for top, left, h, w in boxes:
        want.append(torch.softmax(teacher(pad_to(images[:, :, top:top + h, left:left + w], 5, 5)), 1))
    want = torch.stack(want, 1)
    assert torch.allclose(out.region_labels, want, atol=1e-6)
    assert torch.allclose(out.labels, (want * (areas / 25)[None, :, None]).sum(1), atol=1e-6)


def test_teacher_mode_keeps_hard_labels_and_the_evaluation_uses_the_teacher(tiny):
    syn = SyntheticSet(torch.zeros(3, 1, 8, 8), torch.eye(3), tiny.spec)
    out = relabel(syn, None, "teacher", about={"teacher": "/some/teacher"})
    assert out.labels.tolist() == [0, 1, 2] and out.meta["labels"]["stored_bytes"] == 0
    from datadistill.config import EvalConfig

    p = _with_recorded_teacher(EvalConfig(), out)
    assert p.labels == "teacher" and p.teacher == "/some/teacher" and p.soft
    assert _with_recorded_teacher(EvalConfig(labels="hard"), out).labels == "hard"
    assert _with_recorded_teacher(EvalConfig(), syn).labels == "auto"


def test_a_random_coreset_given_a_teacher_is_the_control(tiny, tiny_teacher):
    plain = run_distillation(resolve_config("random", "toy", 2, "quick", device="cpu", eval={"runs": 0}), None,
                             data=tiny, progress=False, log=lambda m: None).synset
    cfg = resolve_config("random", "toy", 2, "quick", device="cpu", eval={"runs": 0},
                         artifacts={"teacher": tiny_teacher})
    soft = run_distillation(cfg, None, data=tiny, progress=False, log=lambda m: None).synset
    assert torch.equal(plain.images, soft.images)  # the same images, the teacher's labels
    teacher = Teacher.open(tiny_teacher).network("cpu")
    assert torch.allclose(soft.labels, torch.softmax(teacher(soft.images), 1), atol=1e-6)


def test_a_method_that_cannot_use_a_teacher_refuses_one(tiny, tiny_teacher):
    cfg = resolve_config("dm", "toy", 2, "quick", device="cpu", iterations=1, artifacts={"teacher": tiny_teacher})
    with pytest.raises(ConfigError, match="--teacher"):
        prepare(cfg, data=tiny, progress=False)


def test_region_labels_round_trip_through_the_file(tmp_path, tiny, tiny_teacher):
    syn = run_distillation(cfg_for("rded", tiny_teacher), tmp_path / "r", data=tiny, progress=False,
                           log=lambda m: None).synset
    back = SyntheticSet.load(tmp_path / "r")
    assert torch.equal(back.region_labels, syn.region_labels) and torch.equal(back.labels, syn.labels)
    assert back.meta["labels"]["granularity"] == "region"


# ---------------------------------------------------------------------------------- resume and seeds
def test_sre2l_kill_and_resume_gives_the_same_set(tiny, tiny_teacher, tmp_path, monkeypatch):
    make = lambda: cfg_for("sre2l", tiny_teacher, iterations=6, checkpoint_every=2)  # noqa: E731
    full, resumed = check_kill_and_resume(SRe2L, make, tiny, tmp_path, monkeypatch)
    assert torch.equal(full.labels, resumed.labels)


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """6 classes (6 RDED iterations of one class each) and a teacher on them."""
    from datadistill.teacher import TeacherSettings, train_teacher

    data = toy_splits(num_classes=6, per_class=8, channels=1, size=8)
    root = tmp_path_factory.mktemp("teacher6")
    train_teacher(TeacherSettings("toy", model="convnet_bn", model_args=TINY_NET, epochs=1, batch_size=8), root,
                  data=data, device="cpu", progress=False, log=lambda m: None)
    return data, str(root)


def test_rded_kill_and_resume_gives_the_same_set(six, tmp_path, monkeypatch):
    data, teacher = six
    make = lambda: cfg_for("rded", teacher, iterations=6, checkpoint_every=2)  # noqa: E731
    full, resumed = check_kill_and_resume(RDED, make, data, tmp_path, monkeypatch)
    assert torch.equal(full.region_labels, resumed.region_labels)
    assert full.meta["patch_sources"] == resumed.meta["patch_sources"]


@pytest.mark.parametrize("method", ["sre2l", "rded"])
def test_same_seed_same_set_other_seed_other_set(method, tiny, tiny_teacher):
    def run(seed):
        return run_distillation(cfg_for(method, tiny_teacher, seed=seed), None, data=tiny, progress=False,
                                log=lambda m: None).synset.images

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_relabelling_again_asks_the_teacher_only_about_changed_images(tiny):
    calls = []

    class Counting(StandIn):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    images = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    first = relabel(SyntheticSet(images, torch.tensor([0, 0, 1, 1, 2, 2]), tiny.spec), Counting(), "stored")
    changed = images.clone()
    changed[4:] += 1.0
    again = relabel(SyntheticSet(changed, torch.tensor([0, 0, 1, 1, 2, 2]), tiny.spec), Counting(), "stored",
                    previous=first)
    assert calls == [6, 2]
    assert torch.allclose(again.labels, torch.softmax(StandIn()(changed), 1))
