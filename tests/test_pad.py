"""PAD: EL2N difficulty scores, the experts' data scheduler, parameter selection in the matching
loss, learned soft labels, presets and the command line. Tiny tensors and networks throughout."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from datadistill.config import resolve_config
from datadistill.data import DatasetSplits, DatasetSpec, ImageData
from datadistill.methods.trajectory.difficulty import (
    Curriculum,
    ScoreSettings,
    class_orders,
    compute_scores,
    curriculum_indices,
    data_fingerprint,
    el2n,
    ensure_scores,
    load_scores,
    save_scores,
    schedule_table,
    score_el2n,
)
from datadistill.errors import ConfigError, OutputError
from datadistill.methods.trajectory import ExpertSettings, expert_settings, load_experts, open_experts, train_experts
from datadistill.methods import get_method, initial_synset
from datadistill.methods.trajectory.pad import PAD, depth_keep_mask, kept_per_tensor, loss_keep_mask
from datadistill.methods.trajectory import trajectory_loss
from datadistill.nets import flat_params, functional_forward, make_net, param_layout
from datadistill.rng import make_generator
from datadistill.run import run_distillation
from datadistill.synset import SyntheticSet
from datadistill.train import classification_loss, train_model

from toydata import check_kill_and_resume, toy_splits

NET = {"width": 4, "depth": 1}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    return toy_splits(num_classes=3, per_class=12, channels=1, size=8)


def quiet(msg):
    pass


CURRICULUM = dict(curriculum="el2n", init_ratio=0.5, add_end_epoch=2, rm_epoch_first=2, rm_easy_ratio_first=0.25,
                  rm_epoch_second=3, rm_easy_ratio_second=0.5, score_nets=2, score_epochs=1)


def _experts(root, small, **over):
    s = ExpertSettings("toy", **{"num_experts": 2, "epochs": 4, "model_args": NET, "batch_size": 8, **over})
    train_experts(s, root, data=small, device="cpu", progress=False, log=quiet)
    return str(root)


@pytest.fixture(scope="module")
def cl_experts(tmp_path_factory, small):
    return _experts(tmp_path_factory.mktemp("cl_experts"), small, **CURRICULUM)


@pytest.fixture(scope="module")
def plain_experts(tmp_path_factory, small):
    return _experts(tmp_path_factory.mktemp("plain_experts"), small)


# -- EL2N -----------------------------------------------------------------------------------------

def test_el2n_against_hand_computation():
    ln3 = math.log(3.0)
    logits = torch.tensor([[0.0, ln3], [0.0, ln3], [ln3, 0.0]])
    labels = torch.tensor([0, 1, 1])
    # softmax [0.25, 0.75]: label 0 -> (-0.75, 0.75), label 1 -> (0.25, -0.25); softmax [0.75, 0.25], label 1
    want = torch.tensor([0.75 * math.sqrt(2), 0.25 * math.sqrt(2), 0.75 * math.sqrt(2)])
    torch.testing.assert_close(el2n(logits, labels), want)
    # three classes, uniform output, label 2: (1/3, 1/3, -2/3) -> sqrt(6) / 3
    torch.testing.assert_close(el2n(torch.zeros(1, 3), torch.tensor([2])), torch.tensor([math.sqrt(6) / 3]))


def _hand_el2n(net, x, y):
    net.eval()
    with torch.no_grad():
        z = net(x).double()
    p = z.exp() / z.exp().sum(1, keepdim=True)
    onehot = torch.zeros_like(p)
    onehot[torch.arange(len(y)), y] = 1.0
    return ((p - onehot) ** 2).sum(1).sqrt()


@pytest.mark.parametrize("epochs", [0, 1])
def test_el2n_scores_of_a_tiny_model_are_the_mean_over_its_networks(small, epochs):
    s = ScoreSettings(num_nets=2, epochs=epochs, model_args={"width": 2, "depth": 1}, batch_size=8, seed=3)
    got = score_el2n(small.train, s)
    hand = []
    for i in range(2):  # the same networks, built and trained as the scorer does, scored by hand
        g = make_generator(3, "el2n", i)
        net = make_net("convnet", 1, 3, (8, 8), generator=g, width=2, depth=1)
        if epochs:
            train_model(net, small.train.images, small.train.labels, epochs=epochs, lr=0.01, generator=g, batch_size=8,
                        momentum=0.9, weight_decay=5e-4, decay_at=())
        hand.append(_hand_el2n(net, small.train.images, small.train.labels))
    assert got.shape == (36,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), (hand[0] + hand[1]) / 2, rtol=1e-5, atol=1e-6)
    assert ((got >= 0) & (got <= math.sqrt(2))).all()


def test_scores_are_stored_reusable_and_refused_for_other_data(tmp_path, small):
    s = ScoreSettings(num_nets=1, epochs=0, model_args={"width": 2, "depth": 1})
    scores = compute_scores(small.train, s)
    save_scores(tmp_path / "el2n.safetensors", scores)
    back = load_scores(tmp_path / "el2n.safetensors", small.train)
    assert torch.equal(back.values, scores.values) and back.settings["num_nets"] == 1 and back.dataset == "toy"
    assert back.data_fingerprint == data_fingerprint(small.train)
    other = toy_splits(num_classes=3, per_class=12, channels=1, size=8, seed=1)  # same shapes, other images
    with pytest.raises(ConfigError, match="computed on another training split"):
        load_scores(tmp_path / "el2n.safetensors", other.train)
    again, computed = ensure_scores(tmp_path / "el2n.safetensors", small.train, s)
    assert not computed and torch.equal(again.values, scores.values)
    _, computed = ensure_scores(tmp_path / "el2n.safetensors", other.train, s)  # another dataset: recomputed
    assert computed


def test_ensure_scores_never_overwrites_a_file_of_another_kind(tmp_path, small):
    s = ScoreSettings(num_nets=1, epochs=0, model_args={"width": 2, "depth": 1})
    for name, body in (("notes.txt", b"keep me"), ("ckpt.safetensors", None)):
        path = tmp_path / name
        if body is None:  # a safetensors file that is not scores (a checkpoint, a set)
            from safetensors.torch import save_file
            save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something.else"})
        else:
            path.write_bytes(body)
        before = path.read_bytes()
        with pytest.raises(OutputError, match="is not an EL2N scores file"):
            ensure_scores(path, small.train, s)
        assert path.read_bytes() == before
    with pytest.raises(OutputError, match="is a folder"):
        ensure_scores(tmp_path, small.train, s)


# -- the data scheduler ---------------------------------------------------------------------------

def _unequal_classes():
    """Class 0: 8 samples, class 1: 5, interleaved; scores that make the easy order explicit."""
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1])
    scores = torch.tensor([0.8, 0.3, 0.1, 0.7, 0.9, 0.2, 0.1, 0.6, 0.5, 0.5, 0.3, 0.4, 0.2])
    # class 0 indices 0,2,3,5,7,8,10,11 scores .8,.1,.7,.2,.6,.5,.3,.4 -> easy first: 2,5,10,11,8,7,3,0
    # class 1 indices 1,4,6,9,12 scores .3,.9,.1,.5,.2 -> easy first: 6,12,1,9,4
    return labels, scores, [2, 5, 10, 11, 8, 7, 3, 0], [6, 12, 1, 9, 4]


def test_class_orders_put_the_easiest_first():
    labels, scores, easy0, easy1 = _unequal_classes()
    orders = class_orders(scores, labels, 2)
    assert orders[0].tolist() == easy0 and orders[1].tolist() == easy1


def test_scheduler_sample_sets_at_chosen_epochs():
    labels, scores, easy0, easy1 = _unequal_classes()
    orders = class_orders(scores, labels, 2)
    cur = Curriculum(init_ratio=0.75, add_end_epoch=4, rm_epoch_first=6, rm_easy_ratio_first=0.25,
                     rm_epoch_second=8, rm_easy_ratio_second=0.5)

    def at(e):
        return curriculum_indices(orders, e, cur).tolist()

    # epoch 0: p = 0.75 -> floor(6) of class 0, floor(3.75) = 3 of class 1
    assert at(0) == sorted(easy0[:6] + easy1[:3])
    # epoch 2: p = 0.75 + 0.25 * 2 / 4 = 0.875 -> 7 of class 0, floor(4.375) = 4 of class 1
    assert at(2) == sorted(easy0[:7] + easy1[:4])
    assert at(4) == at(5) == at(6) == list(range(13))  # all of them from add_end_epoch up to rm_epoch_first
    # after rm_epoch_first: the easiest floor(0.25 * 8) = 2 and floor(0.25 * 5) = 1 go
    assert at(7) == at(8) == sorted(easy0[2:] + easy1[1:])
    # after rm_epoch_second: the easiest floor(0.5 * 8) = 4 and floor(2.5) = 2 go
    assert at(9) == at(30) == sorted(easy0[4:] + easy1[2:])
    rows = schedule_table(orders, 10, cur)
    # epoch 1: p = 0.8125 -> floor(6.5) + floor(4.0625) = 10; epoch 3: p = 0.9375 -> 7 + 4 = 11
    assert [r["samples"] for r in rows] == [9, 10, 11, 11, 13, 13, 13, 10, 10, 7]
    assert [r["stage"] for r in rows[3:8]] == ["add", "add", "all", "all", "remove_first"]


def test_scheduler_defaults_and_validation():
    assert Curriculum() == Curriculum(0.75, 20, 40, 0.1, 60, 0.2)
    c = Curriculum()
    assert c.stage(0) == ("add", 0.75, 0.0) and c.stage(10)[1] == pytest.approx(0.875) and c.stage(20)[1] == 1.0
    assert c.stage(40)[0] == "all" and c.stage(41)[0] == "remove_first" and c.stage(61)[0] == "remove_second"
    with pytest.raises(ConfigError, match="in order"):
        Curriculum(add_end_epoch=30, rm_epoch_first=20).validate()
    with pytest.raises(ConfigError, match="init_ratio"):
        Curriculum(init_ratio=0).validate()


# -- experts with the scheduler -------------------------------------------------------------------

def test_curriculum_experts_train_on_the_scheduled_subsets(cl_experts, small):
    m = json.loads(open(f"{cl_experts}/manifest.json").read())
    cur = m["curriculum"]
    assert cur["kind"] == "el2n" and cur["init_ratio"] == 0.5 and cur["scores"]["file"] == "el2n.safetensors"
    # 12 per class: epoch 0 half (6 x 3), epoch 1 p = 0.75 (9 x 3), epoch 2 all, epoch 3 all but the easiest 3 x 3
    assert [r["samples"] for r in cur["schedule"]] == [18, 27, 36, 27]
    assert [r["stage"] for r in cur["schedule"]] == ["add", "add", "add", "remove_first"]
    scores = load_scores(f"{cl_experts}/el2n.safetensors", small.train)
    assert cur["scores"]["digest"] == scores.digest
    # expert 1 again, by hand: one epoch at a time on the scheduled subset
    orders = class_orders(scores.values, small.train.labels, 3)
    c = Curriculum(0.5, 2, 2, 0.25, 3, 0.5)
    g = make_generator(0, "expert", 1)
    net = make_net("convnet", 1, 3, (8, 8), generator=g, **NET)
    from datadistill.augment import DSA, strategy_for

    dsa = DSA(strategy_for("toy", "color_crop_cutout_flip_scale_rotate"))
    traj = [flat_params(net)]
    for e in range(4):
        idx = curriculum_indices(orders, e, c)
        train_model(net, small.train.images[idx], small.train.labels[idx], epochs=1, lr=0.01, generator=g,
                    batch_size=8, momentum=0.0, weight_decay=0.0, decay_at=(),
                    aug=lambda x, gen: dsa(x, dsa.sample(x.shape[0], gen, siamese=False)))
        traj.append(flat_params(net))
    assert torch.equal(open_experts(cl_experts).trajectory(1), torch.stack(traj))


def test_a_scheduler_that_keeps_everything_gives_the_plain_experts(tmp_path, small, plain_experts):
    every = dict(CURRICULUM, init_ratio=1.0, add_end_epoch=0, rm_epoch_first=10, rm_epoch_second=10)
    d = _experts(tmp_path / "all", small, **every)
    assert torch.equal(open_experts(d).trajectory(0), open_experts(plain_experts).trajectory(0))


def test_folder_refuses_other_curricula_and_reuses_its_scores(tmp_path, small, cl_experts):
    out = tmp_path / "ex"
    _experts(out, small, **{**CURRICULUM, "num_experts": 1})
    with pytest.raises(ConfigError, match="curriculum init_ratio: folder 0.5, asked 0.75"):
        _experts(out, small, **{**CURRICULUM, "num_experts": 1, "init_ratio": 0.75})
    with pytest.raises(ConfigError, match="curriculum: folder el2n, asked none"):
        _experts(out, small, num_experts=1)
    # a scores file of other settings is refused for this folder
    other = compute_scores(small.train, ScoreSettings(num_nets=1, epochs=0, model_args=NET))
    save_scores(tmp_path / "other.safetensors", other)
    with pytest.raises(ConfigError, match="EL2N scores: folder"):
        _experts(out, small, **{**CURRICULUM, "num_experts": 1, "scores": str(tmp_path / "other.safetensors")})
    # adding an expert reuses the folder's scores (no new scoring networks are trained)
    import datadistill.methods.trajectory.training as experts_mod

    def no_scoring(*a, **k):
        raise AssertionError("scores were recomputed")

    mp = pytest.MonkeyPatch()
    mp.setattr(experts_mod, "compute_scores", no_scoring)
    try:
        rep = train_experts(ExpertSettings("toy", **{"num_experts": 2, "epochs": 4, "model_args": NET, "batch_size": 8,
                                                    **CURRICULUM}), out, data=small, device="cpu", progress=False, log=quiet)
    finally:
        mp.undo()
    assert rep.trained_now == [1] and rep.curriculum["kind"] == "el2n"
    # scores of another dataset are refused
    bad = toy_splits(num_classes=3, per_class=12, channels=1, size=8, seed=5)
    save_scores(tmp_path / "bad.safetensors", compute_scores(bad.train, ScoreSettings(1, 0, model_args=NET)))
    with pytest.raises(ConfigError, match="computed on another training split"):
        _experts(tmp_path / "ex2", small, **{**CURRICULUM, "scores": str(tmp_path / "bad.safetensors")})


# -- parameter selection --------------------------------------------------------------------------

def test_depth_mask_keeps_exactly_the_deep_parameters():
    net = make_net("convnet", 1, 3, (8, 8), **NET)
    layout = param_layout(net)
    p = sum(s.numel for s in layout)
    # conv 4x1x3x3 + 4, norm 4 + 4, classifier 3 x (4 x 4 x 4) + 3
    assert [s.numel for s in layout] == [36, 4, 4, 4, 192, 3] and p == 243
    keep = depth_keep_mask(p, 0.25)  # floor(0.25 * 243) = 60 shallow entries out
    assert keep.dtype == torch.bool and int(keep.sum()) == 183
    assert not keep[:60].any() and keep[60:].all()
    assert [(k, n) for _, k, n in kept_per_tensor(layout, keep)] == [(0, 36), (0, 4), (0, 4), (0, 4), (180, 192), (3, 3)]
    assert depth_keep_mask(p, 0.0).all()


def test_loss_rule_drops_the_smallest_errors():
    end = torch.tensor([0.5, 0.0, 2.0, 1.0, 0.1])
    target = torch.zeros(5)
    # squared errors .25, 0, 4, 1, .01; alpha 0.4 drops floor(2) = 2: indices 1 and 4
    assert loss_keep_mask(end, target, 0.4).tolist() == [True, False, True, True, False]
    assert loss_keep_mask(torch.ones(4), torch.zeros(4), 0.5).tolist() == [False, False, True, True]  # ties: index


def test_masked_trajectory_loss_against_hand_computation():
    start = torch.tensor([0.0, 0.0, 0.0, 0.0])
    target = torch.tensor([1.0, 2.0, 1.0, 3.0])
    end = torch.tensor([1.0, 1.0, 0.0, 1.0])
    keep = torch.tensor([False, True, True, True])
    # kept: (end - target)^2 = 1 + 1 + 4 = 6; (start - target)^2 = 4 + 1 + 9 = 14
    assert float(trajectory_loss(end, start, target, keep)) == pytest.approx(6 / 14)
    assert float(trajectory_loss(end, start, target)) == pytest.approx(6 / 15)


# -- the method -----------------------------------------------------------------------------------

PAD_OPTS = {"syn_steps": 5, "expert_epochs": 1, "max_start_epoch": 3, "lr_lr": 1e-6, "alpha": 0.25,
            "soft_labels": True, "lr_y": 2.0}


def cfg(experts, **over):
    base = dict(device="cpu", model_args=NET, experts=experts, checkpoint_every=2, val_epochs=2,
                eval={"runs": 0}, lr_img=10.0, iterations=6)
    method_args = {**PAD_OPTS, **over.pop("method_args", {})}
    return resolve_config("pad", "toy", 2, "quick", **{**base, **over}, method_args=method_args)


def distiller(c, data):
    d = get_method("pad")(c, data, torch.device("cpu"))
    d.init(initial_synset(data.train, c.ipc, c.init, make_generator(c.seed, "init")))
    return d


def test_pad_says_so_when_the_experts_have_no_curriculum(plain_experts, cl_experts, small):
    with pytest.raises(ConfigError, match="--curriculum el2n"):
        distiller(cfg(plain_experts), small)
    with pytest.raises(ConfigError, match="--curriculum el2n"):
        distiller(cfg(None), small)
    d = distiller(cfg(plain_experts, method_args={"require_curriculum": False}), small)  # PAD without its scheduler
    assert d.meta["pad"]["experts_curriculum"] == "none"
    assert distiller(cfg(cl_experts), small).meta["pad"]["experts_curriculum"] == "el2n"
    with pytest.raises(ConfigError, match="selection"):
        distiller(cfg(cl_experts, method_args={"selection": "random"}), small)
    with pytest.raises(ConfigError, match="alpha"):
        distiller(cfg(cl_experts, method_args={"alpha": 1.0}), small)


def test_soft_labels_start_as_the_experts_softmax(cl_experts, small):
    d = distiller(cfg(cl_experts), small)
    ex = load_experts(cl_experts, small.spec, "convnet", NET)
    net = make_net("convnet", 1, 3, (8, 8), **NET).eval()
    logits = functional_forward(net, ex.params(0, 4), d.images.detach())  # expert 0 at its last epoch (4)
    syn = d.synthetic_set()
    assert syn.soft and syn.labels.shape == (6, 3)
    torch.testing.assert_close(syn.labels, torch.softmax(logits, 1), rtol=1e-5, atol=1e-6)
    d2 = distiller(cfg(cl_experts, method_args={"label_expert": 1, "label_epoch": 2}), small)
    torch.testing.assert_close(d2.label_logits.detach(), functional_forward(net, ex.params(1, 2), d2.images.detach()),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("selection", ["depth", "loss"])
def test_the_step_matches_only_the_kept_parameters(cl_experts, small, selection):
    d = distiller(cfg(cl_experts, method_args={"selection": selection}), small)
    state = d.gen.get_state()
    loss = float(d.loss(0).detach())
    p = d.last
    d.gen.set_state(state)
    from datadistill.methods.trajectory import unroll

    start = d.experts.params(p.expert, p.start_epoch)
    target = d.experts.params(p.expert, p.start_epoch + 1)
    end = unroll(d.net, start, d.images, torch.softmax(d.label_logits, 1), d.syn_lr, p.batches, p.augs, d.dsa).detach()
    err = (end - target).square()
    if selection == "depth":
        keep = torch.arange(243) >= 60
    else:
        keep = torch.ones(243, dtype=torch.bool)
        keep[torch.sort(err, stable=True).indices[:60]] = False
    hand = float(err[keep].sum() / (start - target).square()[keep].sum())
    assert loss == pytest.approx(hand, rel=1e-5)
    assert loss != pytest.approx(float(err.sum() / (start - target).square().sum()), rel=1e-4)


def test_soft_labels_learn_and_both_unroll_modes_agree(cl_experts, small):
    a = distiller(cfg(cl_experts), small)
    b = distiller(cfg(cl_experts, method_args={"unroll": "checkpoint", "segment": 2}), small)
    before = a.label_logits.detach().clone()
    ra, rb = a.step(0), b.step(0)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    assert not torch.equal(a.label_logits.detach(), before)  # the labels are learned
    torch.testing.assert_close(b.label_logits.detach(), a.label_logits.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b.images.detach(), a.images.detach(), rtol=1e-4, atol=1e-6)


def test_soft_labels_round_trip_resume_and_are_used_by_evaluation(tmp_path, cl_experts, small, monkeypatch):
    full = run_distillation(cfg(cl_experts), tmp_path / "a", data=small, progress=False).synset
    syn = SyntheticSet.load(tmp_path / "a")
    assert syn.soft and torch.equal(syn.labels, full.labels) and syn.lr == pytest.approx(full.lr)
    torch.testing.assert_close(syn.labels.sum(1), torch.ones(6))
    assert "soft_labels" in syn.meta and syn.meta["pad"]["alpha"] == 0.25
    # killed during iteration 4, resumed: the same images and labels
    full_b, resumed = check_kill_and_resume(PAD, lambda: cfg(cl_experts), small, tmp_path / "kill", monkeypatch)
    assert torch.equal(full_b.images, full.images) and torch.equal(resumed.labels, full.labels)
    # evaluation trains on the (N, K) soft labels
    import datadistill.train as train_mod
    from datadistill.evaluate import evaluate

    seen = []
    real_loss = train_mod.classification_loss

    def spy(logits, labels):
        seen.append(labels.detach().clone())
        return real_loss(logits, labels)

    monkeypatch.setattr(train_mod, "classification_loss", spy)
    evaluate(syn, runs=1, epochs=1, aug="none", test=small.test, device="cpu", progress=False, model_args=NET)
    assert seen and all(t.shape == (6, 3) for t in seen)
    torch.testing.assert_close(seen[0].sum(0), syn.labels.sum(0))  # the set's rows (a permutation of them)


def test_soft_cross_entropy_against_hand_computation():
    out = torch.tensor([[0.0, math.log(3.0)]])
    soft = torch.tensor([[0.5, 0.5]])
    # -(0.5 ln 0.25 + 0.5 ln 0.75)
    assert float(classification_loss(out, soft)) == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)))
    # = the authors' SoftCrossEntropy on label logits z: sum(-log_softmax(out) * softmax(z)) / batch
    z = torch.tensor([[1.0, -2.0], [0.3, 0.1]])
    o = torch.tensor([[0.2, 0.4], [-1.0, 2.0]])
    ref = torch.sum(-F.log_softmax(o, 1) * F.softmax(z, 1)) / 2
    torch.testing.assert_close(classification_loss(o, torch.softmax(z, 1)), ref)


# -- presets and command line ---------------------------------------------------------------------

@pytest.mark.parametrize("dataset, ipc", [("cifar10", 1), ("cifar10", 10), ("cifar10", 50), ("mnist", 10), ("toy", 1)])
def test_quick_preset_has_mtts_quick_budget(dataset, ipc):
    m, p = resolve_config("mtt", dataset, ipc, "quick"), resolve_config("pad", dataset, ipc, "quick")
    for k in ("iterations", "lr_img", "momentum_img", "zca", "init", "model", "dsa_strategy", "eval"):
        assert getattr(p, k) == getattr(m, k), k
    for k, v in m.method_args.items():
        if (dataset, ipc, k) == ("cifar10", 10, "max_start_epoch"):
            # PAD's quick CIFAR-10 experts keep 8 epochs, MTT's have 20 (presets/pad.yaml)
            assert (p.method_args[k], v) == (6, 18)
            continue
        assert p.method_args[k] == v, k
    assert p.method_args["alpha"] == (0.0 if ipc == 1 else 0.25) and p.method_args["soft_labels"] is True


def test_paper_presets_and_expert_presets():
    c = resolve_config("pad", "cifar10", 10, "paper")
    a = c.method_args
    assert (a["alpha"], a["selection"], a["syn_steps"], a["max_start_epoch"], a["lr_y"]) == (0.25, "depth", 80, 20, 2.0)
    assert c.zca and c.lr_img == 100 and c.iterations == 10000 and any("PAD" in s for s in c.sources)
    assert resolve_config("pad", "cifar10", 1, "paper").method_args["alpha"] == 0.0
    assert resolve_config("pad", "cifar10", 50, "paper").method_args["alpha"] == 0.25
    s = expert_settings("cifar10", "paper", curriculum="el2n")
    assert (s.num_experts, s.epochs, s.init_ratio, s.add_end_epoch, s.rm_epoch_first, s.rm_easy_ratio_first,
            s.rm_epoch_second, s.rm_easy_ratio_second, s.zca) == (100, 100, 0.75, 20, 40, 0.1, 60, 0.2, True)
    q, mq = expert_settings("cifar10", "quick", curriculum="el2n"), expert_settings("cifar10", "quick")
    assert (q.num_experts, q.zca, q.lr_teacher) == (mq.num_experts, mq.zca, mq.lr_teacher)
    assert (q.epochs, mq.epochs) == (8, 20)  # PAD's quick CIFAR-10 experts keep MTT's earlier 8 epochs
    assert expert_settings("mnist", "quick", curriculum="el2n").epochs == expert_settings("mnist", "quick").epochs
    assert mq.curriculum == "none" and q.curriculum == "el2n" and q.add_end_epoch == 6
    assert expert_settings("cifar10", "quick", curriculum="el2n", init_ratio=0.6).init_ratio == 0.6
    with pytest.raises(ConfigError, match="curriculum"):
        expert_settings("cifar10", "quick", curriculum="gradnorm")


def test_cli_difficulty_and_curriculum_experts(tmp_path, capsys, monkeypatch):
    from datadistill.cli import main

    spec = DatasetSpec("tiny", 1, (8, 8), 3, ("a", "b", "c"), (0.5,), (0.25,))
    splits = toy_splits(num_classes=3, per_class=12, channels=1, size=8)
    splits = DatasetSplits(*(ImageData(s.images, s.labels, spec) for s in (splits.train, splits.val, splits.test)))
    import datadistill.data as data_mod

    monkeypatch.setattr(data_mod, "load_dataset", lambda *a, **k: splits)
    import datadistill.methods.trajectory.training as experts_mod

    monkeypatch.setattr(experts_mod, "load_dataset", lambda *a, **k: splits)
    net = ["--model-arg", "width=2", "--model-arg", "depth=1"]
    scores = tmp_path / "el2n.safetensors"
    assert main(["difficulty", "--dataset", "tiny", "--nets", "1", "--epochs", "1", *net, "--batch-size", "8",
                 "--device", "cpu", "--no-progress", "--out", str(scores)]) == 0
    assert "36 EL2N scores of tiny (1 networks x 1 epochs)" in capsys.readouterr().out
    assert main(["experts", "--dataset", "tiny", "--curriculum", "el2n", "--scores", str(scores), "--experts", "1",
                 "--epochs", "2", "--add-end-epoch", "1", "--rm-epoch-first", "1", "--rm-epoch-second", "1",
                 "--init-ratio", "0.5", *net, "--batch-size", "8", "--no-zca", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "ex")]) == 0
    assert "el2n curriculum" in capsys.readouterr().out
    m = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert [r["samples"] for r in m["curriculum"]["schedule"]] == [18, 36]
    assert m["curriculum"]["scores"]["digest"] == load_scores(scores, splits.train).digest
