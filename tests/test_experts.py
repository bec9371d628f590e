"""Expert trajectories (storage, resume, refusal of mismatched experts) and ZCA whitening."""
import json

import pytest
import torch

from datadistill.data import DatasetSpec, ImageData
from datadistill.data.zca import fit_zca, unwhiten_images, whiten
from datadistill.errors import ConfigError
from datadistill.methods.trajectory import (
    ExpertSettings,
    expert_settings,
    load_experts,
    open_experts,
    stored_zca,
    train_experts,
)
from datadistill.methods.trajectory.experts import shard_name
from datadistill.nets import flat_params, make_net
from datadistill.rng import make_generator
from datadistill.synset import SyntheticSet

from toydata import toy_splits

NET = {"width": 4, "depth": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small():
    return toy_splits(num_classes=3, per_class=12, channels=1, size=8)


def settings(**over):
    return ExpertSettings(**{"dataset": "toy", "num_experts": 2, "epochs": 2, "model_args": NET, "batch_size": 8, **over})


def train(s, out, data, **kw):
    return train_experts(s, out, data=data, device="cpu", progress=False, log=lambda m: None, **kw)


# -- ZCA ----------------------------------------------------------------------------------------

def _pixel_space_zca(pixels: torch.Tensor, eps: float):
    """The MTT code's ZCA (kornia ZCAWhitening, unbiased covariance, eps on the eigenvalues) on pixels."""
    x = pixels.reshape(pixels.shape[0], -1).double()
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / (x.shape[0] - 1)
    u, s, _ = torch.linalg.svd(cov)
    return mu, (u * (s + eps).rsqrt()) @ u.T


def test_zca_equals_the_pixel_space_whitening_and_pixels_undo_it():
    g = torch.Generator().manual_seed(0)
    spec = DatasetSpec("rgb", 3, (2, 3), 2, ("a", "b"), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    pixels = torch.rand(40, 3, 2, 3, generator=g) * 0.8 + 0.1
    data = ImageData(spec.normalize(pixels), torch.arange(2).repeat(20), spec)
    zca = fit_zca(data, eps=0.1)
    assert set(zca) == {"mean", "transform", "inverse"} and zca["transform"].shape == (18, 18)
    white = whiten(data, zca).images
    mu, t = _pixel_space_zca(pixels, 0.1)
    expected = ((pixels.reshape(40, -1).double() - mu) @ t).reshape(white.shape)
    torch.testing.assert_close(white.double(), expected, rtol=1e-4, atol=1e-5)
    # inverse: back to normalized space, and SyntheticSet.pixels() back to the [0, 1] pixels
    torch.testing.assert_close(unwhiten_images(white, zca), data.images, rtol=1e-4, atol=1e-4)
    syn = SyntheticSet(white, data.labels, spec, zca=zca)
    torch.testing.assert_close(syn.pixels(), pixels, rtol=1e-4, atol=1e-4)


def test_zca_with_tiny_eps_gives_identity_covariance():
    g = torch.Generator().manual_seed(1)
    spec = DatasetSpec("g", 1, (2, 2), 2, ("a", "b"), (0.5,), (0.25,))
    mix = torch.randn(4, 4, generator=g)
    x = (torch.randn(500, 4, generator=g) @ mix).reshape(500, 1, 2, 2)
    data = ImageData(x, torch.zeros(500, dtype=torch.long), spec)
    white = whiten(data, fit_zca(data, eps=1e-9)).images.reshape(500, -1).double()
    cov = (white - white.mean(0)).T @ (white - white.mean(0)) / 499
    torch.testing.assert_close(cov, torch.eye(4, dtype=torch.float64), atol=1e-3, rtol=0)


# -- storage and loading --------------------------------------------------------------------------

def test_round_trip_manifest_and_rows(tmp_path, small):
    rep = train(settings(), tmp_path / "ex", small)
    assert rep.num_experts == 2 and rep.trained_now == [0, 1] and len(rep.test_accuracies) == 2
    assert rep.disk_bytes > 0 and "test accuracy" in rep.summary()
    m = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert m["format"] == "datadistill.experts" and m["dataset"]["name"] == "toy"
    assert m["model"] == "convnet" and m["model_args"]["width"] == 4 and m["model_args"]["norm"] == "instance"
    assert m["epochs"] == 2 and m["lr_teacher"] == 0.01 and m["momentum"] == 0 and m["weight_decay"] == 0
    assert m["batch_size"] == 8 and m["seed"] == 0 and m["augmentation"]["per_sample"] is True
    assert m["zca"]["enabled"] is False and m["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert [e["index"] for e in m["experts"]] == [0, 1]
    assert all({"test_accuracy", "seconds", "bytes", "file"} <= set(e) for e in m["experts"])
    assert m["package_version"]

    ex = load_experts(tmp_path / "ex", small.spec, "convnet", NET)
    assert ex.num_experts == 2 and ex.epochs == 2
    traj = ex.trajectory(1)
    net = make_net("convnet", 1, 3, (8, 8), generator=make_generator(0, "expert", 1), **NET)
    assert traj.shape == (3, ex.num_params) and traj.dtype == torch.float32
    assert torch.equal(traj[0], flat_params(net))  # the start is the expert's initialization
    assert not torch.equal(traj[1], traj[0]) and not torch.equal(traj[2], traj[1])
    assert torch.equal(ex.params(1, 2), traj[2])
    with pytest.raises(IndexError):
        ex.params(0, 3)


def test_kill_after_one_expert_then_rerun_trains_only_the_rest(tmp_path, small, monkeypatch):
    full = tmp_path / "full"
    train(settings(num_experts=3), full, small)

    import datadistill.methods.trajectory.training as experts_mod

    real = experts_mod.train_model
    calls = []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training expert 1
        return real(*a, **k)

    monkeypatch.setattr(experts_mod, "train_model", dying)
    out = tmp_path / "ex"
    with pytest.raises(KeyboardInterrupt):
        train(settings(num_experts=3), out, small)
    assert [e["index"] for e in json.loads((out / "manifest.json").read_text())["experts"]] == [0]
    # what a hard kill can leave: a temporary file, and a shard the manifest does not list
    (out / f".{shard_name(1)}.x1y2.tmp").write_bytes(b"half a shard")
    (out / shard_name(2)).write_bytes(b"not a finished expert")
    assert open_experts(out).num_experts == 1  # loading sees only the listed expert

    calls.clear()
    monkeypatch.setattr(experts_mod, "train_model", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    rep = train(settings(num_experts=3), out, small)
    assert len(calls) == 2 and rep.trained_now == [1, 2] and rep.skipped == [0]
    assert not list(out.glob(".*.tmp"))
    a, b = open_experts(full), open_experts(out)
    for i in range(3):  # expert i depends only on the seed and i: same as an uninterrupted run
        assert torch.equal(a.trajectory(i), b.trajectory(i))
    calls.clear()
    assert train(settings(num_experts=3), out, small).trained_now == [] and not calls


def test_other_settings_in_the_same_folder_are_refused(tmp_path, small):
    train(settings(num_experts=1), tmp_path / "ex", small)
    with pytest.raises(ConfigError, match="epochs"):
        train(settings(num_experts=1, epochs=3), tmp_path / "ex", small)
    assert train(settings(num_experts=2), tmp_path / "ex", small).trained_now == [1]  # more experts: fine


def test_mismatched_experts_are_refused_with_what_differs(tmp_path, small):
    train(settings(num_experts=1), tmp_path / "ex", small)
    other = DatasetSpec("other", 1, (8, 8), 3, ("0", "1", "2"), (0.5,), (0.25,))
    with pytest.raises(ConfigError, match="dataset: experts 'toy', this run 'other'"):
        load_experts(tmp_path / "ex", other, "convnet", NET)
    with pytest.raises(ConfigError, match="model width: experts 4, this run 8"):
        load_experts(tmp_path / "ex", small.spec, "convnet", {**NET, "width": 8})
    with pytest.raises(ConfigError, match="model: experts 'convnet', this run 'mlp'"):
        load_experts(tmp_path / "ex", small.spec, "mlp")
    with pytest.raises(ConfigError, match="ZCA: experts off, this run on"):
        load_experts(tmp_path / "ex", small.spec, "convnet", NET, zca=True)
    with pytest.raises(ConfigError, match="ZCA: experts off"):
        stored_zca(tmp_path / "ex", small.spec, "convnet", NET)
    with pytest.raises(Exception, match="no experts there"):
        load_experts(tmp_path / "nothing", small.spec, "convnet", NET)


def test_zca_experts_store_the_whitening_they_were_trained_under(tmp_path, small):
    train(settings(num_experts=1, zca=True), tmp_path / "ex", small)
    m = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert m["zca"]["enabled"] is True and m["zca"]["eps"] == 0.1
    zca = stored_zca(tmp_path / "ex", small.spec, "convnet", NET)
    ref = fit_zca(small.train)
    assert all(torch.allclose(zca[k], ref[k]) for k in ref)
    with pytest.raises(ConfigError, match="ZCA: experts on, this run off"):
        load_experts(tmp_path / "ex", small.spec, "convnet", NET, zca=False)


def test_presets_and_cli_parser():
    s = expert_settings("cifar10", "paper")
    assert (s.num_experts, s.epochs, s.lr_teacher, s.batch_size, s.zca) == (100, 50, 0.01, 256, True) and s.sources
    q = expert_settings("cifar10", "quick", num_experts=2, zca=None)
    assert q.num_experts == 2 and q.zca is True and q.epochs == 20  # CIFAR-10's quick experts
    assert expert_settings("cifar100", "quick").epochs == 8 and expert_settings("mnist", "quick").epochs == 2
    assert expert_settings("mnist", "quick").zca is False
    with pytest.raises(ConfigError, match="unknown experts option"):
        expert_settings("mnist", "quick", colour="red")
    from datadistill.cli import build_parser

    a = build_parser().parse_args(["experts", "--dataset", "cifar10", "--experts", "3", "--no-zca", "--out", "d"])
    assert (a.num_experts, a.zca, a.out) == (3, False, "d")
    a = build_parser().parse_args(["distill", "--method", "mtt", "--experts", "d", "--zca"])
    assert (a.experts, a.zca) == ("d", True)


# -- torchrun: the experts split over processes ----------------------------------------------------

def _experts_worker(rank: int, port: int, folder: str, curriculum: bool) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    extra = dict(curriculum="el2n", init_ratio=0.5, add_end_epoch=1, score_nets=1, score_epochs=1) if curriculum else {}
    rep = train(settings(num_experts=3, **extra), folder, toy_splits(num_classes=3, per_class=12, channels=1, size=8))
    json.dump({"trained_now": rep.trained_now, "listed": rep.num_experts},
              open(os.path.join(folder, f"rank{rank}.json"), "w"))


def test_two_processes_split_the_experts_and_write_the_one_process_files(tmp_path, small):
    """~15 s (two spawned Python processes); with the data scheduler, so process 1 also takes the
    EL2N scores process 0 wrote."""
    curriculum = True
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path / "two"
    folder.mkdir()
    mp.start_processes(_experts_worker, args=(port, str(folder), curriculum), nprocs=2, join=True, start_method="spawn")
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["trained_now"] == [0, 2] and ranks[1]["trained_now"] == [1]  # round robin, each once
    assert ranks[0]["listed"] == ranks[1]["listed"] == 3
    extra = dict(curriculum="el2n", init_ratio=0.5, add_end_epoch=1, score_nets=1, score_epochs=1) if curriculum else {}
    train(settings(num_experts=3, **extra), tmp_path / "one", small)
    a, b = open_experts(tmp_path / "one"), open_experts(folder)
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert [e["index"] for e in b.manifest["experts"]] == [0, 1, 2]
    for i in range(3):
        assert torch.equal(a.trajectory(i), b.trajectory(i))
    assert not list(folder.glob(".*.tmp"))
