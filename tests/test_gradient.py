"""DC and DSA (gradient matching): distances by hand, the method's mechanics, the DC evaluation
augmentation, and resume through the runner."""
import math

import pytest
import torch
from torch import nn

from datadistill.augment_eval import DCAugment, _scale
from datadistill.config import resolve_config
from datadistill.errors import ConfigError, DistillError
from datadistill.evaluate import make_augment
from datadistill.methods import get_method, initial_synset
from datadistill.methods.gradient import (
    GradientMatching,
    cos_distance,
    freeze_batch_norm,
    layerwise_distance,
    loops_for_ipc,
    matching_loss,
    mse_distance,
)
from datadistill.rng import make_generator

from toydata import accuracy_before_after, check_kill_and_resume, toy_splits

SMALL = dict(device="cpu", model_args={"width": 8, "depth": 2})


pytestmark = pytest.mark.usefixtures("one_thread")


def _distiller(data, method="dc", ipc=2, method_args=None, preset="quick", **over):
    cfg = resolve_config(method, "toy", ipc, preset, **{**SMALL, "batch_real": 6, **over},
                         method_args=method_args or {})
    d = get_method(method)(cfg, data, torch.device("cpu"))
    d.init(initial_synset(data.train, cfg.ipc, cfg.init, make_generator(0, "init")))
    return d


# -- distances, by hand ----------------------------------------------------------------------------

# Two "layers": a conv gradient (2 output units, 1 input channel, 1x2 kernel), its bias, a linear.
G_REAL = [torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]]), torch.tensor([5.0, -5.0]), torch.tensor([[3.0, 4.0]])]
G_SYN = [torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]]), torch.tensor([-7.0, 9.0]), torch.tensor([[4.0, 3.0]])]


def test_layerwise_distance_by_hand():
    eps = 1e-6
    # conv unit 0: (1,0).(1,0) / (1 * 1) ; unit 1: (0,1).(1,1) / (1 * sqrt 2) ; bias: nothing;
    # linear (one unit): (3,4).(4,3) / (5 * 5) = 24 / 25
    want = (1 - 1 / (1 + eps)) + (1 - 1 / (math.sqrt(2) + eps)) + (1 - 24 / (25 + eps))
    assert layerwise_distance(G_REAL, G_SYN).item() == pytest.approx(want, rel=1e-6)
    # the bias contributes nothing, whatever its gradients
    other_bias = [G_SYN[0], torch.tensor([100.0, 0.0]), G_SYN[2]]
    assert layerwise_distance(G_REAL, other_bias).item() == pytest.approx(want, rel=1e-6)


def test_layerwise_distance_reshapes_conv_by_output_unit():
    # one output unit with 2 input channels x 1 x 1: ONE row (1, 2) per unit, not per input channel
    gr, gs = torch.tensor([[[[1.0]], [[0.0]]]]), torch.tensor([[[[1.0]], [[1.0]]]])
    assert layerwise_distance([gr], [gs]).item() == pytest.approx(1 - 1 / (math.sqrt(2) + 1e-6), rel=1e-6)


def test_mse_and_cos_distances_by_hand():
    # flattened: real (1,0,0,1, 5,-5, 3,4), syn (1,0,1,1, -7,9, 4,3)
    diff2 = 0 + 0 + 1 + 0 + 144 + 196 + 1 + 1
    assert mse_distance(G_REAL, G_SYN).item() == pytest.approx(diff2)
    dot = 1 + 0 + 0 + 1 - 35 - 45 + 12 + 12
    nr, ns = math.sqrt(1 + 1 + 25 + 25 + 9 + 16), math.sqrt(1 + 1 + 1 + 49 + 81 + 16 + 9)
    assert cos_distance(G_REAL, G_SYN).item() == pytest.approx(1 - dot / (nr * ns + 1e-6), rel=1e-6)


# -- loops -------------------------------------------------------------------------------------------

def test_loops_for_listed_and_unlisted_ipc(toy):
    assert loops_for_ipc(1) == (1, 1) and loops_for_ipc(10) == (10, 50) and loops_for_ipc(50) == (50, 10)
    assert loops_for_ipc(20) == (20, 25) and loops_for_ipc(30) == (30, 20) and loops_for_ipc(40) == (40, 15)
    # unlisted: the entry of the largest listed IPC not above it
    assert loops_for_ipc(2) == (1, 1) and loops_for_ipc(9) == (1, 1)
    assert loops_for_ipc(15) == (10, 50) and loops_for_ipc(100) == (50, 10)
    with pytest.raises(ConfigError):
        loops_for_ipc(0)
    d = _distiller(toy, ipc=2, preset="paper")
    assert (d.outer_loop, d.inner_loop) == (1, 1)
    d = _distiller(toy, ipc=12, preset="paper")  # toy classes have 12 images
    assert (d.outer_loop, d.inner_loop) == (10, 50)
    d = _distiller(toy, ipc=2, method_args={"outer_loop": 3, "inner_loop": 0})
    assert (d.outer_loop, d.inner_loop) == (3, 0)


def test_bad_options_are_refused(toy):
    with pytest.raises(ConfigError, match="distance"):
        _distiller(toy, method_args={"distance": "l1"})
    with pytest.raises(ConfigError, match="unknown method option"):
        _distiller(toy, method_args={"lr": 1.0})
    with pytest.raises(ConfigError, match="dsa_strategy"):
        _distiller(toy, method="dc", dsa_strategy="crop")
    with pytest.raises(ConfigError, match="DSA strategy"):
        _distiller(toy, method="dsa", dsa_strategy="none")


# -- mechanics -----------------------------------------------------------------------------------------

def test_gradient_step_reduces_matching_loss_on_fixed_network(toy):
    d = _distiller(toy)
    net = d.fresh_net()
    state = d.gen.get_state()

    def loss():
        d.gen.set_state(state)  # the same real batches each time
        reals, syns = d.class_batches()
        return matching_loss(net, reals, syns)

    before = loss()
    g, = torch.autograd.grad(before, d.images)
    with torch.no_grad():
        d.images -= 1e-2 * g / g.norm()
    assert loss().item() < before.item()


@pytest.mark.parametrize("model", ["convnet", "convnet_bn"])
def test_chunked_fast_path_equals_reference_path(toy, model):
    d = _distiller(toy, method="dsa", model=model)
    assert d.real_chunk == 16  # the CPU default
    net = d.fresh_net()
    d.prepare_network(net)
    reals, syns = d.class_batches()
    fast = matching_loss(net, reals, syns, real_chunk=4)  # batches of 6: chunks of 4 and 2
    g_fast, = torch.autograd.grad(fast, d.images, retain_graph=True)  # the DSA part is shared
    ref = matching_loss(net, reals, syns, real_chunk=None)
    g_ref, = torch.autograd.grad(ref, d.images)
    assert fast.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(g_fast, g_ref, rtol=1e-4, atol=1e-6 * g_ref.abs().max().item())


def test_batch_norm_statistics_come_from_real_images_and_stay_frozen(toy):
    bn = nn.BatchNorm2d(2)
    x = torch.randn(12, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 3 + 1
    freeze_batch_norm(bn, x)
    assert not bn.training
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2, 3)), atol=1e-4)

    d = _distiller(toy, model="convnet_bn")
    net = d.fresh_net()
    d.prepare_network(net)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    assert not torch.allclose(stats[0][0], torch.zeros_like(stats[0][0]))  # taken from the real batch
    reals, syns = d.class_batches()
    matching_loss(net, reals, syns).backward(inputs=[d.images])
    for m, (mean, var) in zip(bns, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)


def test_dsa_params_are_shared_between_real_and_synthetic(toy):
    d = _distiller(toy, method="dsa")
    calls = []
    real_call = type(d.dsa).__call__

    def spy(self, x, params):
        calls.append(params)
        return real_call(self, x, params)

    type(d.dsa).__call__ = spy
    try:
        d.class_batches()
    finally:
        type(d.dsa).__call__ = real_call
    assert len(calls) == 2 * 3
    for c in range(3):
        assert calls[2 * c] is calls[2 * c + 1] and calls[2 * c].siamese


def test_step_runs_outer_and_inner_loops_and_reports_mean_loss(toy, monkeypatch):
    d = _distiller(toy, method="dsa", method_args={"outer_loop": 3, "inner_loop": 2})
    seen = {"match": 0, "train": 0}
    real_match, real_train = GradientMatching.match, GradientMatching.train_network

    def match(self, net, **kw):
        seen["match"] += 1
        return real_match(self, net, **kw)

    def train(self, net):
        seen["train"] += 1
        return real_train(self, net)

    monkeypatch.setattr(GradientMatching, "match", match)
    monkeypatch.setattr(GradientMatching, "train_network", train)
    before = d.images.detach().clone()
    rec = d.step(0)
    assert seen == {"match": 3, "train": 2}  # no network update after the last outer step
    assert math.isfinite(rec["loss"]) and 0 < rec["loss"] < 10  # per class and outer step
    assert not torch.equal(before, d.images)


def test_nan_loss_raises(toy, monkeypatch):
    d = _distiller(toy)
    monkeypatch.setattr(GradientMatching, "match", lambda self, net, **kw: (d.images ** 2).sum() * float("nan"))
    with pytest.raises(DistillError, match="nan"):
        d.step(0)


def test_dc_from_noise_beats_its_initialization():
    data = toy_splits(num_classes=3, per_class=20, seed=1)
    d = _distiller(data, ipc=2, init="noise", model_args={"width": 16, "depth": 2}, batch_real=10,
                   method_args={"outer_loop": 2, "inner_loop": 2})
    before, after = accuracy_before_after(d, data, steps=15)
    assert after.mean > before.mean + 20, (before.accuracies, after.accuracies)


# -- the DC evaluation augmentation -------------------------------------------------------------------

def test_dc_augmentation_is_deterministic_from_its_generator_and_leaves_the_global_rng():
    aug = DCAugment("crop_scale_rotate_noise")
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and not torch.equal(a, x)


def test_dc_augmentation_scale_matches_interpolate_and_is_only_for_mnist():
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([[0.8, 1.2], [1.19, 0.81], [1.0, 1.0], [0.9, 1.1], [1.1, 1.1], [0.85, 0.85]])
    for i in range(6):
        h, w = int(float(f[i, 0]) * 28), int(float(f[i, 1]) * 28)
        small = torch.nn.functional.interpolate(x[i:i + 1], [h, w])[0]
        m = max(h, w, 28)
        canvas = torch.zeros(1, m, m)
        canvas[:, (m - h) // 2:(m - h) // 2 + h, (m - w) // 2:(m - w) // 2 + w] = small
        want = canvas[:, (m - 28) // 2:(m - 28) // 2 + 28, (m - 28) // 2:(m - 28) // 2 + 28]
        assert torch.equal(_scale(x[i:i + 1], f[i:i + 1])[0], want)
    assert isinstance(make_augment("dc", "mnist"), DCAugment)
    assert isinstance(make_augment("dc", "fashion_mnist"), DCAugment)
    assert make_augment("dc", "cifar10") is None


# -- presets and the runner ---------------------------------------------------------------------------

def test_paper_presets():
    dc = resolve_config("dc", "mnist", 10, "paper")
    assert (dc.iterations, dc.batch_real, dc.lr_img, dc.momentum_img, dc.init) == (1000, 256, 0.1, 0.5, "noise")
    assert dc.dsa_strategy == "none" and dc.eval.aug == "dc" and dc.sources
    assert resolve_config("dc", "cifar10", 10, "paper").eval.aug == "none"
    dsa = resolve_config("dsa", "cifar10", 10, "paper")
    assert (dsa.iterations, dsa.batch_real, dsa.lr_img, dsa.init) == (1000, 256, 0.1, "real")
    assert dsa.eval.aug == "dsa" and dsa.eval.epochs == 1000
    quick = resolve_config("dsa", "mnist", 10, "quick")
    assert quick.eval.aug == "dsa" and quick.init == "real" and quick.method_args == {"inner_loop": 10}
    assert resolve_config("dc", "mnist", 1, "quick").iterations == 500


def _runner_cfg(**over):
    return resolve_config("dsa", "toy", 2, "quick", **{
        **SMALL, "batch_real": 5, "checkpoint_every": 2, "val_epochs": 2, "eval": {"runs": 0},
        "iterations": 6, "method_args": {"outer_loop": 2, "inner_loop": 2}, **over})


def test_resume_after_a_kill_gives_the_same_set(tmp_path, toy, monkeypatch):
    check_kill_and_resume(GradientMatching, _runner_cfg, toy, tmp_path, monkeypatch)


def test_class_by_class_backward_equals_one_backward_of_the_sum(toy):
    """matching_backward (one class's graph alive at a time) gives bit for bit the loss and the
    image gradient of building the whole sum and calling backward once."""
    from datadistill.methods.gradient import matching_backward, matching_loss
    from datadistill.nets.convnet import ConvNet

    torch.manual_seed(0)
    net = ConvNet(1, 3, (8, 8), width=4, depth=1)
    images = torch.randn(6, 1, 8, 8, requires_grad=True)
    reals = [torch.randn(5, 1, 8, 8) for _ in range(3)]
    syn = lambda: [images[2 * c: 2 * c + 2] * 1.5 for c in range(3)]  # noqa: E731  an op per class, as DSA
    loss = matching_loss(net, reals, syn(), real_chunk=2, classes=[0, 1, 2])
    (g_sum,) = torch.autograd.grad(loss, [images])
    total = matching_backward(net, zip(reals, syn()), [0, 1, 2], [images], real_chunk=2)
    assert torch.equal(total, loss.detach()) and not total.requires_grad
    assert torch.equal(images.grad, g_sum) and g_sum.abs().sum() > 0
