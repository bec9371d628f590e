"""Trajectory matching (MTT): the differentiable unroll against finite differences, the
memory-bounded unroll against the plain one, the method through the runner (learned lr, ZCA,
resume), and its errors."""
import json

import pytest
import torch

from datadistill.augment import DSA
from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate
from datadistill.methods.trajectory import ExpertSettings, stored_zca, train_experts
from datadistill.methods import get_method, initial_synset
from datadistill.methods.trajectory import TrajectoryMatching, trajectory_loss, unroll
from datadistill.nets import flat_params, functional_forward, make_net
from datadistill.rng import make_generator
from datadistill.run import run_distillation
from datadistill.synset import SyntheticSet

from toydata import check_kill_and_resume, toy_splits

NET = {"width": 4, "depth": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    return toy_splits(num_classes=3, per_class=12, channels=1, size=8)


def _experts(root, small, zca):
    s = ExpertSettings("toy", num_experts=2, epochs=4, model_args=NET, batch_size=8, zca=zca)
    train_experts(s, root, data=small, device="cpu", progress=False, log=lambda m: None)
    return str(root)


@pytest.fixture(scope="module")
def experts(tmp_path_factory, small):
    return _experts(tmp_path_factory.mktemp("experts"), small, zca=False)


@pytest.fixture(scope="module")
def zca_experts(tmp_path_factory, small):
    return _experts(tmp_path_factory.mktemp("zca_experts"), small, zca=True)


MTT_OPTS = {"syn_steps": 5, "expert_epochs": 1, "max_start_epoch": 3, "lr_lr": 1e-6}


def cfg(experts, **over):
    base = dict(device="cpu", model_args=NET, experts=experts, checkpoint_every=2, val_epochs=2,
                eval={"runs": 0}, lr_img=10.0, iterations=6, method_args=dict(MTT_OPTS))
    method_args = {**base.pop("method_args"), **over.pop("method_args", {})}
    return resolve_config("mtt", "toy", 2, "quick", **{**base, **over}, method_args=method_args)


def distiller(c, data):
    d = get_method("mtt")(c, data, torch.device("cpu"))
    d.init(initial_synset(data.train, c.ipc, c.init, make_generator(c.seed, "init")))
    return d


# -- the functional student ----------------------------------------------------------------------

@pytest.mark.parametrize("model_args, channels, size", [({}, 3, 32), (NET, 1, 8)])
def test_flat_parameter_forward_equals_module_forward(model_args, channels, size):
    net = make_net("convnet", channels, 10, size, generator=make_generator(0, "net"), **model_args)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    for mode in (net.train, net.eval):
        mode()
        torch.testing.assert_close(functional_forward(net, flat_params(net), x), net(x))


def _tiny_problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    net = make_net("convnet", 1, 3, (8, 8), generator=g, width=3, depth=1).to(dtype)
    start = flat_params(net)
    target = start + 0.05 * torch.randn(start.shape, generator=g, dtype=dtype)
    images = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="all")  # every transform, per-sample values
    batches = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 0, 1]), torch.tensor([2, 3, 4, 5]), torch.tensor([5, 0])]
    augs = [dsa.sample(len(b), g, siamese=False) for b in batches]
    return net, start, target, images, labels, dsa, batches, augs


def _grads(problem, mode, segment=0, lr=0.05):
    net, start, target, images, labels, dsa, batches, augs = problem
    im = images.clone().requires_grad_(True)
    alpha = torch.tensor(lr, dtype=images.dtype, requires_grad=True)
    loss = trajectory_loss(unroll(net, start, im, labels, alpha, batches, augs, dsa, mode=mode, segment=segment),
                           start, target)
    loss.backward()
    return loss.detach(), im.grad, alpha.grad


def test_unroll_gradient_matches_central_finite_differences():
    problem = _tiny_problem()
    net, start, target, images, labels, dsa, batches, augs = problem
    _, g_img, g_lr = _grads(problem, "plain")

    def f(im, lr=0.05):
        with torch.enable_grad():
            alpha = torch.tensor(lr, dtype=torch.float64)
            return float(trajectory_loss(unroll(net, start, im, labels, alpha, batches, augs, dsa), start, target).detach())

    eps = 1e-6
    coords = torch.randperm(images.numel(), generator=torch.Generator().manual_seed(1))[:25]
    for c in coords.tolist():
        plus, minus = images.clone(), images.clone()
        plus.view(-1)[c] += eps
        minus.view(-1)[c] -= eps
        fd = (f(plus) - f(minus)) / (2 * eps)
        assert fd == pytest.approx(float(g_img.view(-1)[c]), rel=1e-5, abs=1e-9)
    fd_lr = (f(images, 0.05 + eps) - f(images, 0.05 - eps)) / (2 * eps)
    assert fd_lr == pytest.approx(float(g_lr), rel=1e-5)
    assert g_img.abs().sum() > 0


@pytest.mark.parametrize("segment", [1, 3, 0])
def test_checkpointed_unroll_gives_the_plain_gradients(segment):
    problem = _tiny_problem()
    loss_p, img_p, lr_p = _grads(problem, "plain")
    loss_c, img_c, lr_c = _grads(problem, "checkpoint", segment)
    torch.testing.assert_close(loss_c, loss_p, rtol=1e-12, atol=0)
    torch.testing.assert_close(img_c, img_p, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(lr_c, lr_p, rtol=1e-9, atol=0)


def test_both_unroll_modes_take_the_same_step_in_the_method(experts, small):
    a = distiller(cfg(experts), small)
    b = distiller(cfg(experts, method_args={"unroll": "checkpoint", "segment": 2}), small)
    ra, rb = a.step(0), b.step(0)
    assert (ra["expert"], ra["start_epoch"]) == (rb["expert"], rb["start_epoch"])
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    torch.testing.assert_close(a.images, b.images, rtol=1e-4, atol=1e-6)
    assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-5)


# -- the method ---------------------------------------------------------------------------------

def _fixed_plan_loss(d, seed=123, plans=6):
    """Mean matching loss over fixed draws (expert, start, batches, DSA), the run generator restored."""
    state = d.gen.get_state()
    d.gen.manual_seed(seed)
    losses = [float(d.loss(0).detach()) for _ in range(plans)]
    d.gen.set_state(state)
    return sum(losses) / len(losses)


def test_short_run_lowers_the_matching_loss_on_fixed_draws(experts, small):
    d = distiller(cfg(experts), small)
    before = _fixed_plan_loss(d)
    for it in range(25):
        d.step(it)
    after = _fixed_plan_loss(d)
    assert after < 0.9 * before


def test_learned_lr_is_saved_with_the_set_and_used_by_evaluate(tmp_path, experts, small):
    res = run_distillation(cfg(experts), tmp_path / "run", data=small, progress=False)
    syn = SyntheticSet.load(tmp_path / "run")
    assert syn.lr is not None and syn.lr == pytest.approx(res.synset.lr) and syn.lr != pytest.approx(0.01, rel=1e-6)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert [l["it"] for l in lines] == [1, 2, 3, 4, 5, 6] and {"lr", "expert", "start_epoch"} <= set(lines[0])
    assert lines[-1]["lr"] == pytest.approx(syn.lr)
    ev = evaluate(syn, runs=1, epochs=1, aug="none", test=small.test, device="cpu", progress=False)
    assert ev.lr == pytest.approx(syn.lr)


def test_resume_after_a_kill_gives_the_same_images_and_lr(tmp_path, experts, small, monkeypatch):
    full, resumed = check_kill_and_resume(TrajectoryMatching, lambda: cfg(experts), small, tmp_path, monkeypatch)
    assert resumed.lr == full.lr


def test_zca_run_whitens_with_the_experts_whitening(tmp_path, zca_experts, experts, small):
    res = run_distillation(cfg(zca_experts, zca=True), tmp_path / "run", data=small, progress=False)
    zca = stored_zca(zca_experts, small.spec, "convnet", NET)
    syn = SyntheticSet.load(tmp_path / "run")
    assert syn.zca is not None and all(torch.equal(syn.zca[k], zca[k]) for k in zca)
    px = syn.pixels()
    assert px.shape == (6, 1, 8, 8) and torch.isfinite(px).all()
    # the starting set is whitened real training images, and pixels() brings them back
    from datadistill.data.zca import whiten

    white = whiten(small.train, zca)
    syn0 = initial_synset(white, 2, "real", make_generator(res.synset.meta["seed"], "init"))
    syn0.zca = zca
    real0 = initial_synset(small.train, 2, "real", make_generator(res.synset.meta["seed"], "init"))
    torch.testing.assert_close(syn0.pixels(), real0.pixels(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="ZCA: experts off, this run on"):
        run_distillation(cfg(experts, zca=True), tmp_path / "bad", data=small, progress=False)


def test_errors_are_clear(tmp_path, experts, small):
    with pytest.raises(ConfigError, match="datadistill experts --dataset toy"):
        distiller(cfg(None), small)
    with pytest.raises(ConfigError, match="need experts of at least 5 epochs"):
        distiller(cfg(experts, method_args={"max_start_epoch": 4, "expert_epochs": 2}), small)
    with pytest.raises(ConfigError, match="unroll"):
        distiller(cfg(experts, method_args={"unroll": "fast"}), small)
    with pytest.raises(ConfigError, match="width"):
        distiller(cfg(experts, model_args={"width": 8, "depth": 1}), small)


def test_paper_presets_follow_the_table():
    c = resolve_config("mtt", "cifar10", 1, "paper")
    assert c.zca and c.lr_img == 100 and c.iterations == 5000 and c.eval.lr is None and c.eval.epochs == 1000
    assert c.method_args == {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_lr": 1e-7,
                             "lr_teacher": 0.01, "batch_syn": None, "unroll": "plain"}
    c = resolve_config("mtt", "cifar10", 50, "paper")
    assert not c.zca and c.lr_img == 1000 and c.method_args["lr_teacher"] == 0.001
    c = resolve_config("mtt", "cifar100", 50, "paper")
    assert c.zca and c.method_args["batch_syn"] == 125 and c.method_args["syn_steps"] == 80
    assert any("CVPR 2022" in s for s in c.sources)
