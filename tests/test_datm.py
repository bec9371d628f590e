"""DATM: the growing start-epoch range, the starting images the experts classify correctly and
their averaged soft labels (with the rule for a class with too few), the threshold skip, presets,
kill-and-resume; PAD's code variant running DATM's parts. Tiny tensors and networks throughout."""
import pytest
import torch
import yaml

from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.methods import get_method, initial_synset
from datadistill.methods.trajectory import DATM, ExpertSettings, load_experts, start_epoch_range, train_experts
from datadistill.methods.trajectory.labels import averaged_correct_logits, expert_logits, select_correct
from datadistill.nets import make_net
from datadistill.rng import make_generator
from datadistill.run import run_distillation

from toydata import accuracy_before_after, check_kill_and_resume, toy_splits

NET = {"width": 4, "depth": 1}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    return toy_splits(num_classes=3, per_class=12, channels=1, size=8)


@pytest.fixture(scope="module")
def experts(tmp_path_factory, small):
    root = tmp_path_factory.mktemp("datm_experts")
    s = ExpertSettings("toy", num_experts=3, epochs=4, model_args=NET, batch_size=8)
    train_experts(s, root, data=small, device="cpu", progress=False, log=lambda m: None)
    return str(root)


OPTS = {"syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 3, "min_start_epoch": 0, "current_max_start_epoch": 1,
        "expansion_end_epoch": 4, "lr_lr": 1e-6, "lr_y": 2.0, "threshold": None}


def cfg(experts, method="datm", ipc=2, **over):
    base = dict(device="cpu", model_args=NET, experts=experts, checkpoint_every=2, val_epochs=2,
                eval={"runs": 0}, lr_img=10.0, iterations=6)
    method_args = {**OPTS, **over.pop("method_args", {})}
    if method == "pad":
        method_args.setdefault("require_curriculum", False)
    return resolve_config(method, "toy", ipc, "quick", **{**base, **over}, method_args=method_args)


def distiller(c, data):
    d = get_method(c.method)(c, data, torch.device("cpu"))
    d.init(initial_synset(data.train, c.ipc, c.init, make_generator(c.seed, "init")))
    return d


# -- the growing range ----------------------------------------------------------------------------

def test_start_epoch_range_follows_the_schedule():
    # the paper's CIFAR-10 IPC 10: T- 0, upper bound 10 growing to 20 by iteration 1,000
    want = {0: 10, 99: 10, 100: 11, 550: 15, 999: 19, 1000: 20, 5000: 20}
    for it, hi in want.items():
        assert start_epoch_range(it, 0, 10, 20, 1000) == (0, hi), it
    assert start_epoch_range(3, 20, 20, 70, 2000, sequential=False) == (20, 70)
    assert start_epoch_range(0, 2, 5, 8, 3) == (2, 5) and start_epoch_range(2, 2, 5, 8, 3) == (2, 7)
    assert start_epoch_range(0, 0, 9, 4, 50) == (0, 4) == start_epoch_range(49, 0, 9, 4, 50)  # bound above the top


def test_the_distiller_draws_from_the_growing_range(experts, small):
    d = distiller(cfg(experts, method_args={"min_start_epoch": 1, "current_max_start_epoch": 2,
                                            "expansion_end_epoch": 2}), small)
    seen = {}
    for it in range(6):
        rec = d.step(it)
        lo, hi = start_epoch_range(it, 1, 2, 3, 2)
        assert rec["start_upper"] == hi and lo <= rec["start_epoch"] < hi
        seen.setdefault(hi, set()).add(rec["start_epoch"])
    assert seen[2] == {1}  # iterations 0 and 1 may only start at epoch 1
    assert d.meta["datm"]["start_epochs"] == {"min": 1, "current_max": 2, "max": 3, "expansion_end": 2,
                                              "sequential": True}


# -- starting images and soft labels --------------------------------------------------------------

def test_averaged_logits_against_hand_computation():
    # 3 experts, 2 images of classes 0 and 1, 2 classes
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0]],    # expert 0: right on both
                           [[4.0, 0.0], [5.0, 1.0]],    # expert 1: right on image 0 only
                           [[0.0, 1.0], [1.0, 2.0]]])   # expert 2: right on image 1 only
    out = averaged_correct_logits(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.5], [0.5, 2.5]]))
    # an image no expert classifies correctly: the mean over all of them
    out = averaged_correct_logits(logits[1:2], torch.tensor([0, 0]))
    torch.testing.assert_close(out, torch.tensor([[4.0, 0.0], [5.0, 1.0]]))


def test_select_correct_walks_the_experts_in_order_and_fills_when_too_few():
    # class 0 has 5 candidate images (values 0..4); expert 0 is right on 1 and 3, expert 1 on 0 and 3
    right = {0: {1, 3}, 1: {0, 3}, 2: set()}

    def predict(e, x):
        return torch.tensor([0 if int(v) in right[e] else 1 for v in x])

    cands = [torch.arange(5.0)]
    chosen, filled = select_correct(predict, cands, ipc=2, num_experts=3, chunk=2)
    assert chosen[0].tolist() == [1, 3] and filled == [0]  # expert 0 suffices
    chosen, filled = select_correct(predict, cands, ipc=3, num_experts=3, chunk=2)
    assert chosen[0].tolist() == [1, 3, 0] and filled == [0]  # expert 1 adds image 0
    chosen, filled = select_correct(predict, cands, ipc=4, num_experts=3)
    assert chosen[0].tolist() == [1, 3, 0, 2] and filled == [1]  # none is right on 2 and 4: filled in order


def test_initial_images_are_classified_correctly_and_labels_are_the_averaged_logits(experts, small):
    d = distiller(cfg(experts, ipc=3), small)
    ex = load_experts(experts, small.spec, "convnet", NET)
    net = make_net("convnet", 1, 3, (8, 8), **NET)
    images, hard = d.images.detach(), d.synthetic_set().hard_labels
    stack = torch.stack([expert_logits(net, ex.params(e, 4), images) for e in range(3)])  # last epoch (4)
    filled = d.meta["datm"]["filled_per_class"]
    right = (stack.argmax(2) == hard.view(1, -1)).any(0)
    for c in range(3):
        rows = (hard == c).nonzero().flatten()
        assert int((~right[rows]).sum()) == filled[c]  # every image but the filled ones: some expert is right
    assert sum(filled) < 9
    # each image is a real training image of its class
    train = small.train
    for i in range(9):
        match = (train.images == images[i]).flatten(1).all(1).nonzero().flatten()
        assert len(match) == 1 and int(train.labels[match[0]]) == int(hard[i])
    # the labels: per image the mean logits of the experts right on it (hand computation)
    want = torch.empty(9, 3)
    for i in range(9):
        ok = [e for e in range(3) if int(stack[e, i].argmax()) == int(hard[i])] or [0, 1, 2]
        want[i] = stack[ok, i].mean(0)
    torch.testing.assert_close(d.label_logits.detach(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d.synthetic_set().labels, torch.softmax(want, 1), rtol=1e-5, atol=1e-6)


def test_a_class_with_too_few_correct_images_is_filled_and_said(experts, small, monkeypatch):
    # experts that classify nothing as class 1: its images all come from the fill rule
    real = DATM.expert_predict

    def never_one(self, e, x):
        p = real(self, e, x)
        return torch.where(p == 1, torch.zeros_like(p), p)

    monkeypatch.setattr(DATM, "expert_predict", never_one)
    d = distiller(cfg(experts, ipc=2), small)
    assert d.meta["datm"]["filled_per_class"][1] == 2
    assert any("no expert classifies correctly" in n for n in d.setup_notes())
    assert torch.isfinite(d.label_logits).all()  # the mean over all experts, not 0 / 0


def test_image_and_label_inits_can_be_the_runs_and_one_experts(experts, small):
    c = cfg(experts, method_args={"image_init": "run", "label_init": "expert", "label_expert": 1, "label_epoch": 2})
    d = distiller(c, small)
    syn0 = initial_synset(small.train, 2, "real", make_generator(c.seed, "init"))
    assert torch.equal(d.images.detach(), syn0.images)
    ex = load_experts(experts, small.spec, "convnet", NET)
    net = make_net("convnet", 1, 3, (8, 8), **NET)
    torch.testing.assert_close(d.label_logits.detach(), expert_logits(net, ex.params(1, 2), syn0.images))
    hard = distiller(cfg(experts, method_args={"soft_labels": False}), small)
    assert hard.label_logits is None and hard.synthetic_set().labels.ndim == 1


# -- the threshold skip ---------------------------------------------------------------------------

def test_threshold_skip_leaves_everything_unchanged(experts, small):
    d = distiller(cfg(experts, method_args={"threshold": 1e-9}), small)
    before = (d.images.detach().clone(), d.label_logits.detach().clone(), float(d.syn_lr.detach()))
    rec = d.step(0)
    assert rec["skipped"] == 1 and rec["loss"] > 1e-9
    assert torch.equal(d.images.detach(), before[0]) and torch.equal(d.label_logits.detach(), before[1])
    assert float(d.syn_lr.detach()) == before[2]
    assert not d.opt_img.state.get(d.images)  # no momentum either
    on = distiller(cfg(experts, method_args={"threshold": 1e9}), small)
    rec = on.step(0)
    assert "skipped" not in rec and not torch.equal(on.images.detach(), before[0])
    assert not torch.equal(on.label_logits.detach(), before[1])


# -- runs -----------------------------------------------------------------------------------------

def test_kill_and_resume_gives_the_same_set(tmp_path, experts, small, monkeypatch):
    full, resumed = check_kill_and_resume(DATM, lambda: cfg(experts), small, tmp_path, monkeypatch)
    assert torch.equal(resumed.labels, full.labels) and resumed.lr == full.lr
    assert resumed.meta["datm"]["image_init"] == "correct"


def test_a_short_run_improves_on_its_start(experts, small):
    d = distiller(cfg(experts, ipc=2, lr_img=100.0, method_args={"syn_steps": 6, "lr_y": 5.0}), small)
    first = [d.step(it)["loss"] for it in range(3)]
    for it in range(3, 40):
        last = d.step(it)["loss"]
    later = [d.step(it)["loss"] for it in range(40, 46)]
    assert sum(later) / len(later) < sum(first) / len(first)


def test_options_are_checked(experts, small):
    for bad, match in [({"current_max_start_epoch": 0}, "current_max_start_epoch"),
                       ({"min_start_epoch": 3}, "min_start_epoch"),
                       ({"threshold": 0.0}, "threshold"),
                       ({"image_init": "noise"}, "image_init"),
                       ({"label_init": "mean"}, "label_init"),
                       ({"label_epoch": 9}, "label_epoch")]:
        with pytest.raises(ConfigError, match=match):
            distiller(cfg(experts, method_args=bad), small)
    distiller(cfg(experts, method_args={"current_max_start_epoch": 0, "sequential_generation": False}), small)
    # an upper bound above the top: the range is fixed, and the log says so
    d = distiller(cfg(experts, method_args={"current_max_start_epoch": 5}), small)
    assert d.start_bounds(0) == (0, 3) and any("above max_start_epoch" in n for n in d.setup_notes())


# -- PAD's two variants ---------------------------------------------------------------------------

def test_pad_code_variant_runs_datms_parts_and_the_paper_variant_does_not(tmp_path, experts, small):
    paper = distiller(cfg(experts, method="pad", method_args={"soft_labels": True}), small)
    code = distiller(cfg(experts, method="pad", method_args={"soft_labels": True, "variant": "code"}), small)
    datm = distiller(cfg(experts), small)
    syn0 = initial_synset(small.train, 2, "real", make_generator(0, "init"))
    assert torch.equal(paper.images.detach(), syn0.images) and "datm" not in paper.meta
    assert torch.equal(code.images.detach(), datm.images.detach()) and code.meta["datm"]["image_init"] == "correct"
    torch.testing.assert_close(code.label_logits, datm.label_logits)
    assert paper.start_bounds(0) == (0, 3) and code.start_bounds(0) == (0, 1) == datm.start_bounds(0)
    # with PAD's selection off (alpha 0), PAD's code variant is DATM step for step (same draws)
    assert code.opts.alpha == 0
    code.gen.set_state(datm.gen.get_state())
    for it in range(2):
        a, b = code.step(it), datm.step(it)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["start_epoch"] == b["start_epoch"]
    torch.testing.assert_close(code.images, datm.images)
    # both variants are named in the run's config.yaml (the presets set paper)
    assert cfg(experts, method="pad").method_args["variant"] == "paper"
    c = cfg(experts, method="pad", iterations=1, method_args={"variant": "code"})
    run_distillation(c, tmp_path / "code", data=small, progress=False, log=lambda m: None)
    assert yaml.safe_load((tmp_path / "code" / "config.yaml").read_text())["method_args"]["variant"] == "code"
    with pytest.raises(ConfigError, match="variant"):
        distiller(cfg(experts, method="pad", method_args={"variant": "released"}), small)


# -- presets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ipc", [1, 10])
def test_quick_preset_has_mtts_budget_and_datms_parts(ipc):
    d, m = resolve_config("datm", "cifar10", ipc, "quick"), resolve_config("mtt", "cifar10", ipc, "quick")
    assert d.iterations == m.iterations and d.method_args["syn_steps"] == m.method_args["syn_steps"]
    assert d.method_args["batch_syn"] == m.method_args["batch_syn"] and d.eval.epochs == m.eval.epochs
    a = d.method_args
    assert a["soft_labels"] and a["image_init"] == "correct" and a["label_init"] == "average"
    if ipc == 1:
        assert a["sequential_generation"] is False and a["threshold"] is None and a["max_start_epoch"] == 4
        assert resolve_config("datm", "cifar10", 1, "paper").method_args["threshold"] == 1.1
    else:
        assert (a["current_max_start_epoch"], a["max_start_epoch"], a["expansion_end_epoch"]) == (9, 18, 50)
        assert a["threshold"] == 1.0


def test_paper_presets_follow_the_authors_configs():
    a = resolve_config("datm", "cifar10", 10, "paper").method_args
    assert (a["current_max_start_epoch"], a["max_start_epoch"], a["expansion_end_epoch"], a["syn_steps"]) == (10, 20, 1000, 80)
    a = resolve_config("datm", "cifar100", 50, "paper").method_args
    assert a["image_init"] == "run" and a["sequential_generation"] is False and a["min_start_epoch"] == 20
    c = resolve_config("datm", "tiny-imagenet", 1, "paper")
    assert c.model_args["depth"] == 4 and c.lr_img == 10000.0 and c.method_args["current_max_start_epoch"] == 15
    assert all(s for s in resolve_config("datm", "cifar10", 1, "paper").sources)


@pytest.mark.parametrize("mode", ["checkpoint", "tesla"])
def test_every_unroll_mode_takes_the_plain_step(experts, small, mode):
    # DATM's learnable soft labels go through MTT's unroll: the same step in each mode, up to float error
    a = distiller(cfg(experts, method_args={"syn_steps": 5}), small)
    b = distiller(cfg(experts, method_args={"syn_steps": 5, "unroll": mode}), small)
    labels_before = a.label_logits.detach().clone()
    ra, rb = a.step(0), b.step(0)
    assert (ra["expert"], ra["start_epoch"]) == (rb["expert"], rb["start_epoch"])
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    torch.testing.assert_close(a.images, b.images, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.label_logits, b.label_logits, rtol=1e-4, atol=1e-6)
    assert not torch.equal(a.label_logits, labels_before)  # the labels did learn
