"""Batched training (N networks through the one loop) against sequential training, the unchanged
single-network loop, evaluate's batched/sequential choice and flag, and the torchrun split of runs."""
import json
import math
import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from datadistill.augment import DSA
from datadistill.cli import main
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate
from datadistill.nets import make_net
from datadistill.rng import make_generator
from datadistill.synset import SyntheticSet
from datadistill.train import batching_blocker, classification_loss, train_model, train_models

from toydata import toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

NET = {"width": 6, "depth": 2}
KW = dict(epochs=5, lr=0.05, batch_size=5, momentum=0.9, weight_decay=5e-3, decay_at=(0.4, 0.8))


@pytest.fixture(scope="module")
def small():
    return toy_splits(num_classes=3, per_class=4, channels=1, size=8)  # 12 images: batches of 5, 5, 2


def dsa_aug():
    dsa = DSA("color_crop_cutout_scale_rotate")
    return lambda x, g: dsa(x, dsa.sample(x.shape[0], g, siamese=False))


def fresh(n, dtype=torch.float32, model="convnet", args=NET, channels=1, size=8):
    gens = [make_generator(0, "batched-test", r) for r in range(n)]
    nets = [make_net(model, channels, 3, size, generator=g, **args).to(dtype) for g in gens]
    return nets, gens


def reference_train(net, images, labels, *, epochs, lr, generator, batch_size, momentum, weight_decay, decay_at, aug):
    """The training loop as it was before batching was added (torch.optim.SGD on one module)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    milestones = {max(1, int(round(epochs * f))) for f in decay_at if 0 < f < 1}
    net.train()
    n = images.shape[0]
    for ep in range(epochs):
        if ep in milestones:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            x, y = images[idx], labels[idx]
            if aug is not None:
                x = aug(x, generator)
            loss = classification_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return float(loss.detach())


def test_train_model_is_bitwise_the_loop_it_was(small):
    (a,), (ga,) = fresh(1)
    (b,), (gb,) = fresh(1)
    x, y = small.train.images, small.train.labels
    epochs_seen = []
    res = train_model(a, x, y, generator=ga, aug=dsa_aug(), on_epoch_end=lambda ep, net: epochs_seen.append((ep, net is a)), **KW)
    ref_loss = reference_train(b, x, y, generator=gb, aug=dsa_aug(), **KW)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert res.final_loss == ref_loss and res.steps == KW["epochs"] * 3 and res.epochs == KW["epochs"]
    assert epochs_seen == [(e, True) for e in range(KW["epochs"])]
    assert torch.equal(ga.get_state(), gb.get_state())  # the same number of draws, in the same order


@pytest.mark.parametrize("soft", [False, True])
def test_batched_equals_sequential_in_float64(small, soft):
    """float64 makes rounding negligible: any difference in randomness, order of draws, SGD
    (weight decay, momentum's first step, the lr milestones) or loss would show far above 1e-9."""
    x = small.train.images.double()
    y = torch.softmax(torch.randn(12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1) if soft \
        else small.train.labels
    seq, seq_g = fresh(3, torch.float64)
    bat, bat_g = fresh(3, torch.float64)
    before = [p.clone() for p in bat[1].parameters()]
    seq_res = [train_model(n, x, y, generator=g, aug=dsa_aug(), **KW) for n, g in zip(seq, seq_g)]
    bat_res = train_models(bat, x, y, generators=bat_g, aug=dsa_aug(), **KW)
    assert not torch.equal(before[0], next(bat[1].parameters()))  # trained values were written back
    for r in range(3):
        for p, q in zip(seq[r].parameters(), bat[r].parameters()):
            torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-10)
        assert bat_res[r].final_loss == pytest.approx(seq_res[r].final_loss, rel=1e-9)
        assert bat_res[r].steps == seq_res[r].steps
        assert torch.equal(seq_g[r].get_state(), bat_g[r].get_state())
    # the runs really differ from each other (own init, shuffling and augmentation)
    assert not torch.allclose(next(bat[0].parameters()), next(bat[1].parameters()))


def test_batched_mlp_and_float32_tolerance(small):
    x, y = small.train.images, small.train.labels
    seq, seq_g = fresh(2, model="mlp", args={})
    bat, bat_g = fresh(2, model="mlp", args={})
    for n, g in zip(seq, seq_g):
        train_model(n, x, y, generator=g, **KW)
    train_models(bat, x, y, generators=bat_g, **KW)
    for r in range(2):
        for p, q in zip(seq[r].parameters(), bat[r].parameters()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_batch_norm_cannot_be_stacked(small):
    nets, gens = fresh(2, model="convnet_bn", args=NET)
    reason = batching_blocker(nets)
    assert reason is not None and "BatchNorm2d" in reason and "running_mean" in reason
    with pytest.raises(ConfigError, match="one at a time"):
        train_models(nets, small.train.images, small.train.labels, generators=gens, **KW)
    assert batching_blocker(fresh(2)[0]) is None
    with pytest.raises(ConfigError, match="2 networks but 1 generators"):
        train_models(fresh(2)[0], small.train.images, small.train.labels, generators=gens[:1], **KW)


def test_batched_training_reports_a_diverging_network(small):
    nets, gens = fresh(2)
    with pytest.raises(Exception, match="lower the learning rate"):
        train_models(nets, small.train.images * 1e6, small.train.labels, generators=gens, **{**KW, "lr": 1e6})


def _set(data):
    return SyntheticSet(data.train.images.clone(), data.train.labels.clone(), data.spec)


EVAL = dict(model="convnet", runs=3, epochs=4, aug="dsa", device="cpu", progress=False, model_args=NET, batch_size=5)


def test_evaluate_batched_equals_sequential(small):
    syn = _set(small)
    seq = evaluate(syn, test=small.test, batched=False, **EVAL)
    bat = evaluate(syn, test=small.test, **{**EVAL, "batched": True})
    auto = evaluate(syn, test=small.test, **EVAL)  # auto on a CPU: one after another
    assert auto.extra["batched"] is False and "CPU" in auto.extra["batched_reason"]
    assert auto.accuracies == seq.accuracies
    assert seq.extra["batched"] is False and "batched=False" in seq.extra["batched_reason"]
    assert bat.extra["batched"] is True and "batched_reason" not in bat.extra
    assert bat.extra["processes"] == 1
    assert bat.accuracies == pytest.approx(seq.accuracies, abs=1e-9)  # 9 test images: any change is 11 points
    assert bat.flops == seq.flops
    assert len(bat.train_seconds_per_run) == 3 and bat.train_seconds == pytest.approx(sum(bat.train_seconds_per_run))
    one = evaluate(syn, test=small.test, **{**EVAL, "runs": 1})
    assert one.extra["batched"] is False and one.extra["batched_reason"] == "a single run"
    assert one.accuracies == pytest.approx(seq.accuracies[:1], abs=1e-9)  # run r is run r whatever the run count


def test_evaluate_falls_back_for_batch_norm(small):
    syn = _set(small)
    kw = {**EVAL, "model": "convnet_bn", "runs": 2, "epochs": 1}
    res = evaluate(syn, test=small.test, **kw)
    assert res.extra["batched"] is False and "BatchNorm2d" in res.extra["batched_reason"]
    with pytest.raises(ConfigError, match="batched='auto' or False"):
        evaluate(syn, test=small.test, batched=True, **kw)
    with pytest.raises(ConfigError, match="batched must be"):
        evaluate(syn, test=small.test, batched="yes", **kw)


def test_cli_batched_flag(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["distill", "--method", "random", "--ipc", "1", "--eval-runs", "0", "--device", "cpu",
                 "--no-progress", "--out", str(run)]) == 0
    common = ["evaluate", str(run), "--models", "mlp", "--runs", "2", "--epochs", "2", "--aug", "none",
              "--device", "cpu", "--no-progress"]
    assert main(common) == 0
    (auto,) = json.loads((run / "evaluate.json").read_text())
    assert main(common + ["--batched"]) == 0
    (bat,) = json.loads((run / "evaluate.json").read_text())
    assert main(common + ["--no-batched"]) == 0
    (seq,) = json.loads((run / "evaluate.json").read_text())
    assert bat["extra"]["batched"] is True and seq["extra"]["batched"] is False
    assert auto["extra"]["batched"] is False and "CPU" in auto["extra"]["batched_reason"]  # auto on a CPU
    assert bat["accuracies"] == pytest.approx(seq["accuracies"], abs=1e-9)
    capsys.readouterr()
    assert main(common[:3] + ["convnet_bn", "--batched"] + common[4:]) == 2
    assert "cannot train the runs together" in capsys.readouterr().err


# -- torchrun split: 2 gloo processes on the loopback ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _split_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        small = toy_splits(num_classes=3, per_class=4, channels=1, size=8)
        res = evaluate(_set(small), test=small.test, **{**EVAL, "batched": True})  # each process stacks its share
        with open(f"{out}/{rank}.json", "w") as f:
            json.dump(res.to_dict(), f)
    finally:
        tdist.destroy_process_group()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_evaluate_runs_split_across_two_processes(small, tmp_path):
    single = evaluate(_set(small), test=small.test, **{**EVAL, "batched": True})
    # fork: the children start with everything imported (spawn would spend ~15 s importing torch twice)
    mp.start_processes(_split_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every process returns the whole, gathered result
    for d in ranks:
        assert d["extra"]["processes"] == 2 and d["extra"]["batched"] is True
        assert d["accuracies"] == pytest.approx(single.accuracies, abs=1e-9)  # runs in order, same values
        assert len(d["train_seconds_per_run"]) == 3 and all(math.isfinite(s) for s in d["train_seconds_per_run"])
