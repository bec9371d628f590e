"""Coreset baselines: the selection rules by hand, and random / herding / k-center through the runner."""
import pytest
import torch

from datadistill.config import resolve_config
from datadistill.errors import ConfigError, DistillError
from datadistill.methods import get_method
from datadistill.methods.coreset import herding_select, k_center_select
from datadistill.run import run_distillation
from datadistill.synset import SyntheticSet

METHODS = ["random", "herding", "k-center"]
SMALL = dict(device="cpu", model_args={"width": 8, "depth": 2}, eval={"runs": 0})


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- selection rules
def test_herding_by_hand_1d():
    # points 0, 1, 2, 6: class mean mu = 9 / 4 = 2.25
    # step 1: |x - 2.25| = 2.25, 1.25, 0.25, 3.75            -> index 2 (x = 2), sum 2
    # step 2: |(2 + x)/2 - 2.25| for x = 0, 1, 6: 1.25, 0.75, 1.75 -> index 1 (x = 1), sum 3
    # step 3: |(3 + x)/3 - 2.25| for x = 0, 6: 1.25, 0.75          -> index 3 (x = 6), sum 9
    # step 4: only index 0 is left                                   -> index 0
    # (the nearest-to-mean order would be 2, 1, 0, 3: herding takes 6 to pull the mean back up)
    x = torch.tensor([0.0, 1.0, 2.0, 6.0])
    assert herding_select(x, 4) == [2, 1, 3, 0]
    assert herding_select(x[:, None], 2) == [2, 1]
    assert herding_select(x, 0) == []


def test_herding_by_hand_2d_and_ties():
    # (0,0), (2,0), (0,2), (2,2): mean (1,1); all four are at distance sqrt(2): tie -> index 0.
    # step 2: (s + x)/2 with s = (0,0): (1,0), (0,1), (1,1) for indices 1, 2, 3
    #         distances to (1,1): 1, 1, 0                       -> index 3 (the opposite corner)
    # step 3: (s + x)/3 with s = (2,2): (4/3, 2/3), (2/3, 4/3) are tied -> index 1
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert herding_select(x, 4) == [0, 3, 1, 2]


def test_k_center_by_hand_2d():
    # points p0 (0,0), p1 (1,0), p2 (0,1), p3 (10,0), p4 (5,5); mean (16/5, 6/5) = (3.2, 1.2)
    # squared distances to the mean: 11.68, 6.28, 10.28, 47.68, 17.68 -> start at p1
    # squared distance to nearest center {p1}: p0 1, p2 2, p3 81, p4 41             -> p3
    # {p1, p3}: p0 min(1, 100) = 1, p2 min(2, 101) = 2, p4 min(41, 50) = 41           -> p4
    # {p1, p3, p4}: p0 min(1, 100, 50) = 1, p2 min(2, 101, 41) = 2                   -> p2, then p0
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 0.0], [5.0, 5.0]])
    assert k_center_select(x, 5) == [1, 3, 4, 2, 0]
    assert k_center_select(x, 2) == [1, 3]


def test_k_center_by_hand_1d_and_ties():
    # points 0, 4, 5, 6, 10: mean 5 -> start at index 2 (x = 5)
    # distances to {5}: 5, 1, 0, 1, 5: tie between 0 and 10 -> lowest index, 0
    # distances to {5, 0}: -, 1, 0, 1, 5                         -> index 4 (x = 10)
    # distances to {5, 0, 10}: 4 -> 1, 6 -> 1: tie               -> index 1, then index 3
    x = torch.tensor([0.0, 4.0, 5.0, 6.0, 10.0])
    assert k_center_select(x, 5) == [2, 0, 4, 1, 3]


def test_rules_refuse_more_points_than_there_are():
    with pytest.raises(ValueError, match="cannot select 3 of 2"):
        herding_select(torch.zeros(2, 1), 3)
    with pytest.raises(ValueError, match="cannot select 3 of 2"):
        k_center_select(torch.zeros(2, 1), 3)


def test_selection_never_repeats_on_duplicates():
    x = torch.zeros(4, 3)  # all points identical: every rule must still return distinct indices
    assert sorted(herding_select(x, 4)) == [0, 1, 2, 3]
    assert sorted(k_center_select(x, 4)) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- through the runner
def _cfg(method, ipc=3, seed=0, method_args=None, **over):
    args = {} if method == "random" else {"embed_epochs": 1}
    args.update(method_args or {})
    return resolve_config(method, "toy", ipc, "quick", seed=seed, method_args=args, **{**SMALL, **over})


@pytest.mark.parametrize("method", METHODS)
def test_selects_real_training_images(method, toy):
    res = run_distillation(_cfg(method), None, data=toy, progress=False)
    syn = res.synset
    idx = syn.meta["selected_indices"]
    assert len(idx) == 9 and len(set(idx)) == 9
    assert torch.equal(syn.images, toy.train.images[torch.tensor(idx)])  # exact copies of train rows
    assert torch.equal(syn.labels, toy.train.labels[torch.tensor(idx)])
    assert syn.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # hard labels, ipc per class
    assert syn.meta["method"] == method and syn.meta["iterations"] == 0
    assert res.evals == [] and res.resumed_from == 0


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_for_a_seed(method, toy):
    a = run_distillation(_cfg(method), None, data=toy, progress=False).synset
    b = run_distillation(_cfg(method), None, data=toy, progress=False).synset
    assert a.meta["selected_indices"] == b.meta["selected_indices"]
    assert torch.equal(a.images, b.images)


def test_random_depends_on_the_seed(toy):
    draws = {tuple(run_distillation(_cfg("random", seed=s), None, data=toy, progress=False)
                   .synset.meta["selected_indices"]) for s in range(4)}
    assert len(draws) > 1


@pytest.mark.parametrize("method", METHODS)
def test_ipc_larger_than_a_class_is_refused(method, toy):
    with pytest.raises(ConfigError, match="larger than class"):
        run_distillation(_cfg(method, ipc=13), None, data=toy, progress=False)
    with pytest.raises(ConfigError, match="larger than class"):  # the method's own check (no real start)
        run_distillation(_cfg(method, ipc=13, init="noise"), None, data=toy, progress=False)


def test_whole_class_is_allowed(toy):
    syn = run_distillation(_cfg("k-center", ipc=12), None, data=toy, progress=False).synset
    assert sorted(syn.meta["selected_indices"]) == list(range(36))


def test_herding_matches_the_rule_on_its_embedding(toy):
    """With a random embedding network, the selection is herding_select on that network's features."""
    cfg = _cfg("herding", method_args={"embedding": "random"})
    d = get_method("herding")(cfg, toy, torch.device("cpu"))
    net = d.embedding_net()  # the first draw from a fresh generator, as in init()
    with torch.no_grad():
        feats = net.embed(toy.train.images)
    want = []
    for c in range(3):
        idx = toy.train.indices_per_class[c]
        want += idx[herding_select(feats[idx], 3)].tolist()
    syn = run_distillation(cfg, None, data=toy, progress=False).synset
    assert syn.meta["selected_indices"] == want
    assert syn.meta["embedding"] == "random" and syn.meta["embedding_epochs"] == 0


def test_run_folder_and_resume(tmp_path, toy):
    cfg = _cfg("herding", eval={"runs": 1, "epochs": 2, "aug": "none"})
    first = run_distillation(cfg, tmp_path / "run", data=toy, progress=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"synset.safetensors", "config.yaml", "grid_init.png", "grid_final.png", "checkpoint.pt", "eval.json"} <= files
    saved = SyntheticSet.load(tmp_path / "run")
    assert saved.meta["selected_indices"] == first.synset.meta["selected_indices"]
    again = run_distillation(cfg, tmp_path / "run", data=toy, progress=False)
    assert torch.equal(again.synset.images, first.synset.images)


def test_options_are_checked_and_step_is_refused(toy):
    with pytest.raises(ConfigError, match="embedding"):
        get_method("k-center")(_cfg("k-center", method_args={"embedding": "pixels"}), toy, torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown method option"):
        get_method("random")(_cfg("random", method_args={"embed_epochs": 3}), toy, torch.device("cpu"))
    d = get_method("random")(_cfg("random"), toy, torch.device("cpu"))
    assert d.learns_images is False
    with pytest.raises(DistillError, match="no iterations"):
        d.step(0)


def test_presets_have_no_iterations_and_cite_sources():
    for method in METHODS:
        for preset in ("quick", "paper"):
            cfg = resolve_config(method, "mnist", 10, preset)
            assert cfg.iterations == 0 and cfg.sources
        assert resolve_config(method, "mnist", 10, "paper").eval.runs == 5
        assert resolve_config(method, "mnist", 10, "paper").eval.epochs == 1000
        assert resolve_config(method, "mnist", 10, "quick").eval.epochs == 300
    assert resolve_config("herding", "mnist", 10, "quick").method_args["embed_epochs"] == 1
    assert resolve_config("herding", "mnist-5k", 10, "quick").method_args["embed_epochs"] == 5
    assert resolve_config("k-center", "cifar10", 10, "paper").method_args == {"embedding": "trained", "embed_epochs": 20}
