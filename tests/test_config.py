import pytest

from datadistill.config import DistillConfig, load_yaml, preset_values, resolve_config, save_yaml
from datadistill.errors import ConfigError


def test_preset_then_overrides():
    cfg = resolve_config("dm", "mnist", 10, "paper")
    assert cfg.iterations == 20000 and cfg.batch_real == 256 and cfg.lr_img == 1.0
    assert cfg.sources and "WACV" in cfg.sources[0]
    cfg = resolve_config("dm", "mnist", 10, "paper", iterations=7, eval={"runs": 2, "epochs": None})
    assert cfg.iterations == 7 and cfg.eval.runs == 2 and cfg.eval.epochs == 1000  # None keeps the preset


def test_yaml_round_trip():
    cfg = resolve_config("dm", "mnist-5k", 3, "quick", seed=5, method_args={})
    assert load_yaml(save_yaml(cfg)) == cfg


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(method="nope"), "unknown method"),
        (dict(preset="fast"), "unknown preset"),
        (dict(ipc=0), "ipc must be"),
        (dict(init="zeros"), "unknown init"),
        (dict(lr_img=-1.0), "lr_img"),
        (dict(colour="red"), "unknown config option"),
    ],
)
def test_bad_values_raise_clear_errors(kwargs, fragment):
    args = dict(method="dm", dataset="mnist", ipc=10, preset="quick")
    args.update(kwargs)
    with pytest.raises(ConfigError, match=fragment):
        resolve_config(**args)


def test_rules_match_dataset_and_ipc(tmp_path, monkeypatch):
    import datadistill.config as config

    rules = {"presets": {"quick": [
        {"set": {"iterations": 1}, "source": "a"},
        {"match": {"dataset": "cifar10"}, "set": {"iterations": 2}, "source": "b"},
        {"match": {"dataset": "cifar10", "ipc": [10, 50]}, "set": {"lr_img": 5.0}, "source": "c"},
    ]}}
    monkeypatch.setattr(config, "load_preset_rules", lambda m: rules)
    assert preset_values("dm", "quick", "mnist", 10) == ({"iterations": 1}, ["a"])
    assert preset_values("dm", "quick", "cifar10", 1) == ({"iterations": 2}, ["a", "b"])
    assert preset_values("dm", "quick", "cifar10", 10) == ({"iterations": 2, "lr_img": 5.0}, ["a", "b", "c"])


def test_from_dict_rejects_unknown_eval_key():
    d = DistillConfig().to_dict()
    d["eval"]["rnus"] = 3
    with pytest.raises(ConfigError, match="unknown eval option"):
        DistillConfig.from_dict(d)
