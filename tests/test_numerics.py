"""The bf16 precision switch: off by default, autocast only where asked, refused where unsupported."""
import pytest
import torch

from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate
from datadistill.methods import get_method, initial_synset
from datadistill.nets import make_net
from datadistill.numerics import autocast, check_precision
from datadistill.rng import make_generator
from datadistill.train import train_model

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        check_precision("fp16")
    with pytest.raises(ConfigError, match="unknown precision"):
        resolve_config("dm", "toy", 2, "quick", precision="half")
    with pytest.raises(ConfigError, match="unknown precision"):
        resolve_config("dm", "toy", 2, "quick", eval={"precision": "int8"})


def test_fp32_is_a_no_op_and_bf16_autocasts_convolutions():
    x = torch.randn(2, 1, 8, 8)
    conv = torch.nn.Conv2d(1, 2, 3)
    with autocast(CPU, "fp32"):
        assert conv(x).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16


def _conv_dtypes(net):
    seen = []
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


def test_train_model_uses_bf16_only_when_asked_and_keeps_fp32_parameters(toy):
    for precision, want in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        net = make_net("convnet", 1, 3, (28, 28), generator=make_generator(0, "n"), width=8, depth=1)
        seen = _conv_dtypes(net)
        train_model(net, toy.train.images, toy.train.labels, epochs=1, lr=0.01, generator=make_generator(0, "t"),
                    precision=precision)
        assert seen and set(seen) == {want}
        assert all(p.dtype == torch.float32 for p in net.parameters())


def test_bf16_evaluation_is_close_to_fp32_and_recorded(toy):
    kw = dict(model="convnet", runs=2, epochs=20, aug="none", test=toy.test, device="cpu",
              model_args={"width": 16, "depth": 2}, progress=False)
    a = evaluate(toy.train, precision="fp32", **kw)
    b = evaluate(toy.train, precision="bf16", **kw)
    assert a.extra["precision"] == "fp32" and b.extra["precision"] == "bf16"
    assert abs(a.mean - b.mean) <= 20.0  # 15 test images: at most 3 flips out of rounding
    assert b.mean > 100 / 3 + 20  # well above chance: bf16 training still learns


def _dm(toy, precision):
    cfg = resolve_config("dm", "toy", 2, "quick", device="cpu", batch_real=6, dsa_strategy="none",
                         model_args={"width": 16, "depth": 2}, precision=precision)
    d = get_method("dm")(cfg, toy, CPU)
    d.init(initial_synset(toy.train, cfg.ipc, cfg.init, make_generator(0, "init")))
    return d


def test_dm_bf16_step_gives_nearly_the_fp32_gradient(toy):
    grads = {}
    for precision in ("fp32", "bf16"):
        d = _dm(toy, precision)
        d.step(0)  # same seed, iteration 0: the same network and real batches
        grads[precision] = d.images.grad.clone()
        assert d.images.dtype == torch.float32 and d.images.grad.dtype == torch.float32
    g32, g16 = grads["fp32"], grads["bf16"]
    cos = torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0)
    assert not torch.equal(g32, g16)  # bf16 was really used
    assert cos > 0.95


def test_second_order_methods_refuse_bf16(toy):
    for method in ("mtt", "pad"):  # their whole loss differentiates through the student's gradients
        with pytest.raises(ConfigError, match="precision bf16 is available for the distillation of "
                                              "datadam, dc, dm, dsa only"):
            resolve_config(method, "toy", 2, "quick", device="cpu", precision="bf16")  # before any work
        cfg = resolve_config(method, "toy", 2, "quick", device="cpu")
        cfg.precision = "bf16"  # a config built around the check: the method refuses it itself
        with pytest.raises(ConfigError, match="not " + method):
            get_method(method)(cfg, toy, CPU)


@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_gradient_matching_runs_only_its_first_order_parts_in_bf16(toy, method, monkeypatch):
    """The real-batch gradients and the inner loop under autocast; the synthetic gradients (the
    second-order path) and the matching in fp32, so the image gradient stays close to fp32's."""
    import datadistill.methods.gradient as gm

    seen = {"real": [], "syn": [], "inner": []}
    real_r, real_s, real_t = gm.real_gradients, gm.synthetic_gradients, gm.train_model
    monkeypatch.setattr(gm, "real_gradients", lambda *a, **k: (seen["real"].append(torch.is_autocast_enabled("cpu")),
                                                                real_r(*a, **k))[1])
    monkeypatch.setattr(gm, "synthetic_gradients", lambda *a, **k: (seen["syn"].append(torch.is_autocast_enabled("cpu")),
                                                                     real_s(*a, **k))[1])
    monkeypatch.setattr(gm, "train_model", lambda *a, **k: (seen["inner"].append(k["precision"]), real_t(*a, **k))[1])
    grads = {}
    for precision in ("fp32", "bf16"):
        for v in seen.values():
            v.clear()
        cfg = resolve_config(method, "toy", 2, "quick", device="cpu", batch_real=6, precision=precision,
                             model_args={"width": 16, "depth": 2}, method_args={"outer_loop": 2, "inner_loop": 1})
        d = get_method(method)(cfg, toy, CPU)
        d.init(initial_synset(toy.train, cfg.ipc, cfg.init, make_generator(0, "init")))
        d.opt_img.step = lambda: None  # keep the images: compare the gradients of the last outer step
        d.step(0)
        grads[precision] = d.images.grad.clone()
        bf16 = precision == "bf16"
        assert set(seen["real"]) == {bf16} and set(seen["syn"]) == {False} and set(seen["inner"]) == {precision}
        assert d.images.grad.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(grads["fp32"].flatten(), grads["bf16"].flatten(), dim=0)
    assert not torch.equal(grads["fp32"], grads["bf16"]) and cos > 0.9


def test_upcast_only_raises_reduced_precision():
    from datadistill.methods.distribution import mean_embedding_loss
    from datadistill.numerics import upcast

    assert upcast(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert upcast(torch.ones(2, dtype=torch.float64)).dtype == torch.float64
    f = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    assert mean_embedding_loss(f, y, f[:2], y[:2], 2).dtype == torch.float64  # float64 checks stay float64
