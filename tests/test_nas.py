"""Architecture-search proxy: rank metrics by hand and against scipy, the family, and end to end on toy data."""
import json
import math

import pytest
import torch
from scipy import stats

from datadistill.apps import nas as nas_mod
from datadistill.apps.nas import (
    FAMILIES,
    architecture_search,
    best_agreement,
    competition_ranks,
    family,
    rank_correlations,
    stratified_subset,
    variant_name,
)
from datadistill.cli import main
from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.methods import initial_synset
from datadistill.nets import make_net
from datadistill.rng import make_generator
from datadistill.run import run_distillation
from toydata import toy_splits


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- rank metrics
def test_identical_and_reversed_rankings():
    a = [10.0, 30.0, 20.0, 50.0, 40.0]
    same = rank_correlations(a, [x * 2 + 1 for x in a])  # a monotone transform keeps the ranking
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    rev = rank_correlations(a, [-x for x in a])
    assert rev["spearman"] == pytest.approx(-1.0) and rev["kendall"] == pytest.approx(-1.0)


def test_small_permutation_by_hand():
    # x = 1 2 3 4, y = 1 3 2 4: of the 6 pairs only (2, 3) is discordant -> tau = (5 - 1) / 6 = 2/3
    # rank differences d = 0 1 1 0, sum d^2 = 2 -> rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    r = rank_correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["kendall"] == pytest.approx(2 / 3)
    assert r["spearman"] == pytest.approx(0.8)


def test_matches_scipy_with_ties():
    a = [55.0, 61.0, 61.0, 40.0, 72.0, 58.0]
    b = [60.0, 70.0, 65.0, 50.0, 69.0, 70.0]
    r = rank_correlations(a, b)
    assert r["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic)
    assert r["kendall"] == pytest.approx(stats.kendalltau(a, b).statistic)
    assert 0 <= r["spearman_p"] <= 1 and 0 <= r["kendall_p"] <= 1


def test_undefined_correlations_are_nan():
    assert math.isnan(rank_correlations([1.0], [2.0])["spearman"])
    assert math.isnan(rank_correlations([5.0, 5.0, 5.0], [1.0, 2.0, 3.0])["kendall"])
    with pytest.raises(ValueError):
        rank_correlations([1, 2], [1, 2, 3])


def test_competition_ranks():
    assert competition_ranks([90, 80, 90, 70]) == [1, 3, 1, 4]
    assert competition_ranks([1.0]) == [1]


def test_best_agreement():
    agree = best_agreement([50, 60, 55], [60, 70, 65])
    assert agree == {"best_syn": 1, "best_real": 1, "agree": True, "syn_best_real_rank": 1, "regret": 0.0}
    # synthetic picks variant 1 (60); on real data it scores 65 and two variants beat it: rank 3
    d = best_agreement([50, 60, 55], [70, 65, 72])
    assert d["best_syn"] == 1 and d["best_real"] == 2 and not d["agree"]
    assert d["syn_best_real_rank"] == 3 and d["regret"] == pytest.approx(7.0)
    # a tie with the real best counts as agreement even if argmax picks another index
    t = best_agreement([50, 60, 55], [72, 72, 60])
    assert t["agree"] and t["syn_best_real_rank"] == 1 and t["best_real"] == 0


# ----------------------------------------------------------------------------- the family
def test_default_family_covers_the_axes():
    fam = family("default")
    assert fam[0] == {"width": 128, "depth": 3, "norm": "instance", "act": "relu", "pool": "avg"}
    assert {v["depth"] for v in fam} == {1, 2, 3, 4}
    assert {v["width"] for v in fam} == {32, 64, 128, 256}
    assert {v["norm"] for v in fam} == {"none", "batch", "layer", "instance", "group"}
    assert {v["act"] for v in fam} == {"relu", "sigmoid", "leakyrelu"}
    assert {v["pool"] for v in fam} == {"avg", "max", "none"}
    names = [variant_name(v, fam[0]) for v in fam]
    assert names[0] == "default" and len(set(names)) == len(fam) == 15
    assert "norm=batch" in names and "pool=none" in names
    for v in fam + family("small"):  # every variant builds, for 28x28 grey and 32x32 colour inputs
        make_net("convnet", 1, 10, (28, 28), **v)
        make_net("convnet", 3, 10, (32, 32), **v)
    family("small")[0]["width"] = 999  # copies: the registry is not modified
    assert FAMILIES["small"][0]["width"] == 16
    with pytest.raises(ConfigError, match="unknown architecture family"):
        family("huge")


def test_stratified_subset():
    toy = toy_splits(num_classes=3, per_class=12)
    sub = stratified_subset(toy.train, 5, make_generator(0, "s"))
    assert sub.class_counts() == [5, 5, 5]
    again = stratified_subset(toy.train, 5, make_generator(0, "s"))
    assert torch.equal(sub.images, again.images)
    assert stratified_subset(toy.train, 100, make_generator(0, "s")).class_counts() == [12, 12, 12]


# ----------------------------------------------------------------------------- end to end
@pytest.fixture
def toy4():
    return toy_splits(num_classes=4)


def _syn(data, ipc=2):
    syn = initial_synset(data.train, ipc, "real", make_generator(0, "nas-test"))
    syn.meta["method"] = "random"
    return syn


def test_search_on_toy_data_selects_on_validation(toy4, monkeypatch):
    seen = []
    real_evaluate = nas_mod.evaluate

    def spy(data, **kw):
        seen.append((kw["test"], kw["split"], len(data)))
        return real_evaluate(data, **kw)

    monkeypatch.setattr(nas_mod, "evaluate", spy)
    res = architecture_search(_syn(toy4), toy4, variants="small", epochs_syn=2, epochs_real=1, aug="none",
                              device="cpu", real_subset=6)
    assert all(test is toy4.val and split == "val" for test, split, _ in seen)  # never the test split
    assert [n for *_, n in seen[:2]] == [8, 24]  # synthetic: 2 x 4 classes; real: 6 x 4 classes
    assert len(res.variants) == len(FAMILIES["small"]) and res.split == "val"
    assert res.real_images == 24 and res.real_subset == 6 and res.syn_images == 8 and res.val_images == len(toy4.val)
    for v in res.variants:
        assert 0 <= v.syn_mean <= 100 and 0 <= v.real_mean <= 100 and v.syn_seconds > 0 and v.real_seconds > 0
    assert res.variants[0].name == "default" and res.best_syn in [v.name for v in res.variants]
    assert sorted(v.real_rank for v in res.variants)[0] == 1
    assert res.syn_seconds == pytest.approx(sum(v.syn_seconds for v in res.variants))
    d = json.loads(json.dumps(res.to_dict()))  # JSON-clean (NaN -> null)
    assert d["spearman"] is None or -1 <= d["spearman"] <= 1
    assert "validation split" in res.table()


def test_custom_variants_and_errors(toy4):
    res = architecture_search(_syn(toy4), toy4, variants=[{"width": 8, "depth": 1}, {"width": 8, "depth": 2, "name": "deeper"}],
                              epochs_syn=1, epochs_real=1, aug="none", device="cpu")
    assert [v.name for v in res.variants] == ["width=8,depth=1", "deeper"] and res.family == "custom"
    with pytest.raises(ConfigError):
        architecture_search(_syn(toy4), toy4, variants=[], device="cpu")
    with pytest.raises(ConfigError, match="does not match"):
        architecture_search(_syn(toy4), toy_splits(num_classes=3), variants="small", device="cpu")


def test_cli_writes_nas_json(tmp_path, toy4, monkeypatch, capsys):
    cfg = resolve_config("random", "toy", 2, "quick", device="cpu", eval={"runs": 0})
    run_distillation(cfg, tmp_path / "run", data=toy4, progress=False)
    monkeypatch.setattr("datadistill.data.load_dataset", lambda *a, **k: toy4)
    args = ["nas", str(tmp_path / "run"), "--variants", "small", "--epochs-syn", "1", "--epochs-real", "1",
            "--aug", "none", "--real-subset", "4", "--val-subset", "2", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Spearman" in out and "default" in out
    doc = json.loads((tmp_path / "run" / "nas.json").read_text())
    assert doc["split"] == "val" and doc["real_subset"] == 4 and len(doc["variants"]) == len(FAMILIES["small"])
    assert doc["real_images"] == 16 and doc["val_images"] == 8 and doc["val_subset"] == 2
