"""The training loop's speed switches, off by default. torch.compile: really compiled when asked,
the same training up to rounding (alone and stacked), a failing compiler reported with what to do.
channels_last: the convolutions really see that layout, the same training up to rounding, the
network given back in the default layout, one run at a time."""
import sys

import pytest
import torch

from datadistill.cli import build_parser
from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate
from datadistill.nets import make_net
from datadistill.rng import make_generator
from datadistill.train import train_model, train_models

pytestmark = pytest.mark.usefixtures("one_thread")
NET = dict(width=8, depth=1)


@pytest.fixture
def compile_calls(monkeypatch):
    """Counts torch.compile calls and still compiles (so the compiled path really runs)."""
    calls = []
    real = torch.compile

    def spy(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    return calls


def _net(seed=0):
    return make_net("convnet", 1, 3, (28, 28), generator=make_generator(seed, "net"), **NET)


def _params(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_compiled_training_matches_eager_alone_and_stacked(toy, compile_calls):
    x, y = toy.train.images, toy.train.labels
    kw = dict(epochs=2, lr=0.01, batch_size=len(x))  # one minibatch shape: a single compilation
    eager, comp = _net(), _net()
    train_model(eager, x, y, generator=make_generator(0, "t"), **kw)
    assert not compile_calls  # off by default
    train_model(comp, x, y, generator=make_generator(0, "t"), compile=True, **kw)
    assert len(compile_calls) == 1
    assert torch.allclose(_params(eager), _params(comp), atol=1e-4)
    assert not torch.equal(_params(comp), _params(_net()))  # it trained

    pair = [_net(1), _net(2)]
    train_models(pair, x, y, generators=[make_generator(r, "t") for r in (1, 2)], compile=True, **kw)
    assert len(compile_calls) == 2
    for r, net in zip((1, 2), pair):
        alone = _net(r)
        train_model(alone, x, y, generator=make_generator(r, "t"), **kw)
        assert torch.allclose(_params(alone), _params(net), atol=1e-4)


def test_a_failing_compiler_says_to_train_without_it(toy, monkeypatch):
    def broken(fn, *args, **kwargs):
        def call(*a):
            raise torch._dynamo.exc.BackendCompilerFailed(fn, RuntimeError("no C++ compiler found"), None)
        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(ConfigError, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler found\); train without compile"):
        train_model(_net(), toy.train.images, toy.train.labels, epochs=1, lr=0.01,
                    generator=make_generator(0, "t"), compile=True)


def test_evaluate_config_and_cli_carry_the_switch(toy, monkeypatch):
    seen = []
    ev = sys.modules["datadistill.evaluate"]  # the package's `evaluate` attribute is the function
    real = ev.train_model
    monkeypatch.setattr(ev, "train_model", lambda *a, **k: (seen.append(k["compile"]), real(*a, **{**k, "compile": False}))[1])
    res = evaluate(toy.train, model="convnet", runs=1, epochs=1, aug="none", test=toy.test, device="cpu",
                   model_args=NET, progress=False, compile=True)
    assert seen == [True] and res.extra["compile"] is True
    assert resolve_config("dm", "toy", 2, "quick").eval.compile is False
    assert resolve_config("dm", "toy", 2, "quick", eval={"compile": True}).eval.compile is True
    with pytest.raises(ConfigError, match="eval compile must be true or false"):
        resolve_config("dm", "toy", 2, "quick", eval={"compile": "yes"})
    p = build_parser()
    assert p.parse_args(["evaluate", "set.safetensors", "--compile"]).compile is True
    assert p.parse_args(["evaluate", "set.safetensors"]).compile is False
    assert p.parse_args(["distill", "--eval-compile"]).eval_compile is True
    assert p.parse_args(["distill"]).eval_compile is None


def test_channels_last_trains_in_that_layout_and_gives_the_network_back(toy):
    x, y = toy.train.images, toy.train.labels
    kw = dict(epochs=2, lr=0.01, batch_size=len(x))
    plain, cl = _net(), _net()
    layouts = []
    for m in cl.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(lambda mod, inp: layouts.append(
                (inp[0].is_contiguous(memory_format=torch.channels_last), mod.weight.is_contiguous(memory_format=torch.channels_last))))
    train_model(plain, x, y, generator=make_generator(0, "t"), **kw)
    train_model(cl, x, y, generator=make_generator(0, "t"), channels_last=True, **kw)
    assert layouts and set(layouts) == {(True, True)}
    assert torch.allclose(_params(plain), _params(cl), atol=1e-4)
    assert all(p.is_contiguous() for p in cl.parameters())  # back in the default layout


def test_channels_last_evaluation_runs_one_at_a_time(toy):
    kw = dict(model="convnet", runs=2, epochs=1, aug="none", test=toy.test, device="cpu", model_args=NET, progress=False)
    res = evaluate(toy.train, channels_last=True, **kw)
    assert res.extra["channels_last"] is True and res.extra["batched"] is False
    assert "one at a time" in res.extra["batched_reason"]
    with pytest.raises(ConfigError, match="drop one of --channels-last and --batched"):
        evaluate(toy.train, channels_last=True, batched=True, **kw)
    assert resolve_config("dm", "toy", 2, "quick", eval={"channels_last": True}).eval.channels_last is True
    with pytest.raises(ConfigError, match="eval channels_last must be true or false"):
        resolve_config("dm", "toy", 2, "quick", eval={"channels_last": 1})
    p = build_parser()
    assert p.parse_args(["evaluate", "set.safetensors", "--channels-last"]).channels_last is True
    assert p.parse_args(["distill", "--eval-channels-last"]).eval_channels_last is True
    assert p.parse_args(["distill"]).eval_channels_last is None
