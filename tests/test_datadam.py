import math

import pytest
import torch

from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.methods import get_method, initial_synset
from datadistill.methods.attention import AttentionMatching, attention_map, sam_loss
from datadistill.methods.distribution import DistributionMatching
from datadistill.rng import make_generator

from toydata import accuracy_before_after, check_kill_and_resume, toy_splits

SMALL = dict(device="cpu", model_args={"width": 16, "depth": 2})


def _distiller(data, ipc=2, **over):
    cfg = resolve_config("datadam", "toy", ipc, "quick", **{**SMALL, "batch_real": 6, **over})
    d = get_method("datadam")(cfg, data, torch.device("cpu"))
    d.init(initial_synset(data.train, cfg.ipc, cfg.init, make_generator(0, "init")))
    return d


# -- the pure functions, by hand ---------------------------------------------------------------

def test_attention_map_by_hand():
    # one image, 2 channels, 2x2; pixels in row-major order
    c0 = [[2.0, 1.0], [0.0, 0.0]]
    c1 = [[0.0, -1.0], [0.0, 0.0]]
    f = torch.tensor([[c0, c1]])
    # p = 1: sum_c |f_c| = [2, 2, 0, 0], L2 norm sqrt(8)
    assert torch.allclose(attention_map(f, 1), torch.tensor([[2.0, 2.0, 0.0, 0.0]]) / math.sqrt(8))
    # p = 4: [2^4 + 0, 1 + 1, 0, 0] = [16, 2, 0, 0], L2 norm sqrt(260)
    assert torch.allclose(attention_map(f, 4), torch.tensor([[16.0, 2.0, 0.0, 0.0]]) / math.sqrt(260))


def test_attention_map_normalizes_each_image_alone():
    c0 = [[1.0, 1.0], [-1.0, 0.0]]
    c1 = [[0.0, -1.0], [1.0, 0.0]]
    img = torch.tensor([c0, c1])
    f = torch.stack([img, 3 * img, torch.zeros_like(img)])  # the same image at another scale, and a blank one
    a = attention_map(f, 4)
    assert a.shape == (3, 4)
    # sum_c |f_c|^4 = [1, 2, 2, 0], L2 norm 3; the scaled copy gives the same map; zeros stay zeros
    want = torch.tensor([1.0, 2.0, 2.0, 0.0]) / 3
    assert torch.allclose(a[0], want) and torch.allclose(a[1], want)
    assert torch.equal(a[2], torch.zeros(4))


@pytest.mark.parametrize("p", [1, 2, 3, 4, 2.5])
def test_attention_map_fast_routes_match_the_formula(p):
    # p = 1, 2, 4 take special routes (in place when no gradient is needed); all must give
    # normalize(sum_c |f_c|^p) and its gradient
    f = torch.randn(3, 5, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = torch.nn.functional.normalize(f.abs().pow(p).sum(1).flatten(1), dim=1)
    with torch.no_grad():
        assert torch.allclose(attention_map(f, p), want)
    g = f.clone().requires_grad_(True)
    got = attention_map(g, p)
    assert torch.allclose(got, want)
    w = torch.randn(got.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (got * w).sum().backward()
    r = f.clone().requires_grad_(True)
    (torch.nn.functional.normalize(r.abs().pow(p).sum(1).flatten(1), dim=1) * w).sum().backward()
    assert torch.allclose(g.grad, r.grad)
    assert torch.equal(f, g.detach())  # the input is never modified in place


def test_sam_loss_by_hand():
    real_y, syn_y = torch.tensor([0, 0, 1]), torch.tensor([0, 1])
    real = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[2.0], [4.0], [0.0]])]
    syn = [torch.tensor([[0.5, 0.5], [0.0, 1.0]]), torch.tensor([[1.0], [1.0]])]
    # layer 0: class 0 means equal (0), class 1 (1,1) vs (0,1) -> 1; layer 1: (3-1)^2 + (0-1)^2 = 5
    assert sam_loss(real, real_y, syn, syn_y, 2).item() == pytest.approx(6.0)
    # a class without synthetic images does not count
    assert sam_loss([r[:2] for r in real], real_y[:2], [s[:1] for s in syn], syn_y[:1], 2).item() == pytest.approx(4.0)
    assert sam_loss([], real_y, [], syn_y, 2).item() == 0.0


# -- the distiller ----------------------------------------------------------------------------

def test_loss_is_zero_when_the_synthetic_set_is_the_real_batch():
    # one image per class, IPC 1, init real: the synthetic set is exactly the real batch
    data = toy_splits(num_classes=3, per_class=1)
    d = _distiller(data, ipc=1, batch_real=1, dsa_strategy="none")
    assert d.loss(0).item() == 0.0
    # the same set in another order (class_batch permutes): zero up to rounding
    data = toy_splits(num_classes=3, per_class=4)
    d = _distiller(data, ipc=4, batch_real=4, dsa_strategy="none")
    assert d.loss(0).item() < 1e-9
    d.init(initial_synset(data.train, 2, "real", make_generator(0, "init")))
    assert d.loss(1).item() > 1e-4


def test_gradients_reach_the_images_through_both_terms(toy):
    for lam in (None, 0.0):  # lam = 0: attention maps alone
        d = _distiller(toy, method_args={"lam": lam})
        d.loss(0).backward()
        g = d.images.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_step_reports_both_terms(toy):
    d = _distiller(toy)
    rec = d.step(0)
    assert set(rec) == {"loss", "sam", "mmd"}
    assert rec["loss"] == pytest.approx(rec["sam"] + 0.01 * rec["mmd"], rel=1e-5)


def test_shares_dms_batches_and_leaves_the_run_generator_alone(toy):
    assert AttentionMatching.augmented_batches is DistributionMatching.augmented_batches
    d = _distiller(toy)
    fresh = make_generator(d.cfg.seed, "distill", "datadam")
    assert torch.equal(d.gen.get_state(), fresh.get_state())  # the constructor's probe used its own RNG


def test_mlp_is_refused_with_the_networks_that_work(toy):
    with pytest.raises(ConfigError, match=r"'mlp' has none; use one of: .*convnet"):
        _distiller(toy, model="mlp", model_args={})


def test_options_are_checked(toy):
    assert _distiller(toy).lam == 0.01
    assert _distiller(toy_splits(size=64), model_args={"width": 8, "depth": 3}).lam == 0.02
    assert _distiller(toy, method_args={"lam": 0.5}).lam == 0.5
    assert _distiller(toy, method_args={"layers": "all"}).layer_index == [0, 1]
    assert _distiller(toy, method_args={"layers": [-1]}).layer_index == [1]
    with pytest.raises(ConfigError, match="single convolutional block"):
        _distiller(toy, model_args={"width": 8, "depth": 1})
    with pytest.raises(ConfigError, match="out of range"):
        _distiller(toy, method_args={"layers": [2]})
    with pytest.raises(ConfigError, match="layers must be"):
        _distiller(toy, method_args={"layers": "some"})
    with pytest.raises(ConfigError, match="power"):
        _distiller(toy, method_args={"power": 0})
    with pytest.raises(ConfigError, match="unknown method option"):
        _distiller(toy, method_args={"p": 4})


def test_presets():
    for dataset, ipc in (("mnist", 1), ("mnist", 10), ("mnist", 50), ("mnist-5k", 10), ("cifar10", 10)):
        dam = resolve_config("datadam", dataset, ipc, "quick")
        dm = resolve_config("dm", dataset, ipc, "quick")
        for key in ("iterations", "batch_real", "lr_img", "momentum_img", "init", "model", "dsa_strategy",
                    "val_epochs", "eval"):
            assert getattr(dam, key) == getattr(dm, key), (dataset, ipc, key)
    paper = resolve_config("datadam", "cifar10", 10, "paper")
    assert (paper.iterations, paper.lr_img, paper.batch_real, paper.init) == (8000, 1.0, 256, "real")
    assert paper.method_args["power"] == 4 and paper.method_args["lam"] is None
    assert (paper.eval.epochs, paper.eval.aug) == (1000, "dsa")
    assert any("github.com/DataDistillation/DataDAM" in s for s in paper.sources)


def test_datadam_from_noise_beats_its_initialization():
    data = toy_splits(num_classes=3, per_class=20, seed=1)
    d = _distiller(data, init="noise", lr_img=1.0, dsa_strategy="none")
    before, after = accuracy_before_after(d, data, steps=40)
    assert after.mean > before.mean + 20, (before.accuracies, after.accuracies)


# -- through the runner: resume ----------------------------------------------------------------

def _cfg(**over):
    return resolve_config("datadam", "toy", 2, "quick", device="cpu", batch_real=5,
                          model_args={"width": 8, "depth": 2}, checkpoint_every=2, val_epochs=2,
                          eval={"runs": 0}, **{"iterations": 6, **over})


def test_resume_after_a_kill_gives_the_same_set(tmp_path, toy, monkeypatch):
    check_kill_and_resume(AttentionMatching, _cfg, toy, tmp_path, monkeypatch)
