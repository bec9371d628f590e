import pytest
import torch

from datadistill.config import resolve_config
from datadistill.methods import get_method, initial_synset
from datadistill.methods.distribution import class_means, mean_embedding_loss
from datadistill.rng import make_generator

from toydata import accuracy_before_after, toy_splits


def test_mean_embedding_loss_by_hand():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    real_y = torch.tensor([0, 0, 1])
    syn = torch.tensor([[0.0, 0.0], [4.0, 4.0]])
    syn_y = torch.tensor([0, 1])
    assert torch.equal(class_means(real, real_y, 2), torch.tensor([[2.0, 3.0], [10.0, 0.0]]))
    # class 0: (2-0)^2 + (3-0)^2 = 13; class 1: (10-4)^2 + (0-4)^2 = 52
    assert mean_embedding_loss(real, real_y, syn, syn_y, 2).item() == pytest.approx(65.0)


def test_classes_without_synthetic_images_are_ignored():
    real = torch.tensor([[1.0], [5.0]])
    loss = mean_embedding_loss(real, torch.tensor([0, 1]), torch.tensor([[0.0]]), torch.tensor([0]), 2)
    assert loss.item() == pytest.approx(1.0)


def _distiller(data, **over):
    cfg = resolve_config("dm", "toy", 2, "quick", device="cpu", batch_real=6,
                         model_args={"width": 16, "depth": 2}, **over)
    d = get_method("dm")(cfg, data, torch.device("cpu"))
    d.init(initial_synset(data.train, cfg.ipc, cfg.init, make_generator(0, "init")))
    return d


def test_gradient_step_reduces_loss_on_fixed_network(toy):
    d = _distiller(toy, dsa_strategy="none")
    net = d.fresh_net(frozen=True)
    state = d.gen.get_state()

    def loss():
        d.gen.set_state(state)  # the same real batches each time
        xr, yr, xs, ys = d.augmented_batches()
        return mean_embedding_loss(net.embed(xr), yr, net.embed(xs), ys, 3)

    before = loss()
    before.backward()
    with torch.no_grad():
        d.images -= 1e-3 * d.images.grad / d.images.grad.norm()
    assert loss().item() < before.item()


def test_dsa_is_shared_between_real_and_synthetic(toy):
    d = _distiller(toy)
    calls = []
    real_call = d.dsa.__class__.__call__

    def spy(self, x, params):
        calls.append(params)
        return real_call(self, x, params)

    d.dsa.__class__.__call__ = spy
    try:
        d.augmented_batches()
    finally:
        d.dsa.__class__.__call__ = real_call
    assert len(calls) == 2 * 3
    for c in range(3):
        assert calls[2 * c] is calls[2 * c + 1]


def test_dm_from_noise_beats_its_initialization():
    data = toy_splits(num_classes=3, per_class=20, seed=1)
    d = _distiller(data, init="noise", lr_img=1.0, dsa_strategy="none")
    before, after = accuracy_before_after(d, data, steps=40)
    assert after.mean > before.mean + 20, (before.accuracies, after.accuracies)
