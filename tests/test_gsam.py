"""GSAM (gsam.py): one step against a hand computation on a two-parameter problem, and experts
trained with it (`datadistill experts --optimizer gsam`), recorded in the manifest."""
import json
import math

import pytest
import torch
from torch import nn

from datadistill.cli import main
from datadistill.errors import ConfigError
from datadistill.gsam import GSAM, GSAMSettings
from datadistill.methods.trajectory import ExpertSettings, open_experts, train_experts

from toydata import toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


class Quartic(nn.Module):
    """L(w) = w1^4 / 4 + 3 w1 w2 + w2^2: grad (w1^3 + 3 w2, 3 w1 + 2 w2)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self):
        w1, w2 = self.w
        return w1**4 / 4 + 3 * w1 * w2 + w2**2


def grad(w1, w2):
    return [w1**3 + 3 * w2, 3 * w1 + 2 * w2]


def hand_step(w, lr, rho, alpha, adaptive):
    g = grad(*w)
    if adaptive:
        norm = math.sqrt(sum((abs(wi) * gi) ** 2 for wi, gi in zip(w, g)))
        e = [rho * gi * wi**2 / norm for wi, gi in zip(w, g)]
    else:
        norm = math.sqrt(sum(gi**2 for gi in g))
        e = [rho * gi / norm for gi in g]
    gp = grad(*[wi + ei for wi, ei in zip(w, e)])
    inner = sum(a * b for a, b in zip(g, gp))
    n_gp = math.sqrt(sum(b**2 for b in gp))
    d = [b - alpha * (a - inner / n_gp**2 * b) for a, b in zip(g, gp)]
    return [wi - lr * di for wi, di in zip(w, d)]


@pytest.mark.parametrize("adaptive", [True, False])
def test_one_step_against_hand_computation(adaptive):
    w0, lr, rho, alpha = [0.8, -0.5], 0.1, 0.3, 0.4
    m = Quartic(w0)
    opt = GSAM(m.parameters(), lr=lr, settings=GSAMSettings(rho, alpha, adaptive))

    def closure():
        opt.zero_grad()
        loss = m()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == pytest.approx(0.8**4 / 4 + 3 * 0.8 * -0.5 + 0.25)  # the loss at w, not w + e
    want = hand_step(w0, lr, rho, alpha, adaptive)
    assert m.w.tolist() == pytest.approx(want, rel=1e-12)
    # alpha 0 is SAM: the gradient at w + e, nothing more
    m2 = Quartic(w0)
    opt2 = GSAM(m2.parameters(), lr=lr, settings=GSAMSettings(rho, 0.0, adaptive))
    opt2.step(lambda: (opt2.zero_grad(), (l := m2()).backward(), l)[-1])
    assert m2.w.tolist() == pytest.approx(hand_step(w0, lr, rho, 0.0, adaptive), rel=1e-12)
    assert m2.w.tolist() != pytest.approx(want, rel=1e-6)


def test_batch_norm_statistics_are_updated_by_the_first_pass_only():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    opt = GSAM(net.parameters(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = net(x).square().mean()
        loss.backward()
        return loss

    ref = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ref.load_state_dict(net.state_dict())
    ref(x)  # one forward in train mode: the statistics one pass gives
    opt.module = net
    opt.step(closure)
    torch.testing.assert_close(net[1].running_mean, ref[1].running_mean)
    assert net[1].momentum == ref[1].momentum


@pytest.fixture(scope="module")
def small():
    return toy_splits(num_classes=3, per_class=12, channels=1, size=8)


def test_gsam_experts_are_recorded_and_differ_from_sgd_ones(tmp_path, small):
    base = dict(num_experts=1, epochs=2, model_args={"width": 4, "depth": 1}, batch_size=8)
    train_experts(ExpertSettings("toy", **base), tmp_path / "sgd", data=small, device="cpu", progress=False,
                  log=lambda m: None)
    train_experts(ExpertSettings("toy", optimizer="gsam", rho=0.5, **base), tmp_path / "gsam", data=small, device="cpu",
                  progress=False, log=lambda m: None)
    m_sgd = json.loads((tmp_path / "sgd" / "manifest.json").read_text())
    m_gsam = json.loads((tmp_path / "gsam" / "manifest.json").read_text())
    assert m_sgd["optimizer"] == {"kind": "sgd"}
    assert m_gsam["optimizer"] == {"kind": "gsam", "rho": 0.5, "alpha": 0.4, "adaptive": True}
    assert m_sgd["fingerprint"] != m_gsam["fingerprint"]
    a, b = open_experts(tmp_path / "sgd"), open_experts(tmp_path / "gsam")
    assert torch.equal(a.params(0, 0), b.params(0, 0))  # the same initialization
    assert not torch.equal(a.params(0, 2), b.params(0, 2))  # another path
    # a folder of SGD experts is not extended with GSAM ones (nor the other way round)
    with pytest.raises(ConfigError, match="optimizer"):
        train_experts(ExpertSettings("toy", optimizer="gsam", **{**base, "num_experts": 2}), tmp_path / "sgd",
                      data=small, device="cpu", progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="optimizer"):
        train_experts(ExpertSettings("toy", **{**base, "num_experts": 2}), tmp_path / "gsam", data=small, device="cpu",
                      progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="rho"):
        ExpertSettings("toy", optimizer="gsam", rho=0.0).validate()


def test_cli_experts_optimizer_flag(tmp_path, capsys):
    from data_fixtures import write_mnist

    write_mnist(tmp_path / "data" / "mnist")
    rc = main(["experts", "--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--experts", "1", "--epochs", "1",
               "--batch-size", "8", "--device", "cpu", "--no-progress", "--optimizer", "gsam", "--gsam-alpha", "0.2",
               "--out", str(tmp_path / "e")])
    assert rc == 0
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert m["optimizer"]["kind"] == "gsam" and m["optimizer"]["alpha"] == 0.2
    with pytest.raises(SystemExit) as e:
        main(["experts", "--dataset", "mnist", "--optimizer", "adam", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "optimizer" in capsys.readouterr().err
