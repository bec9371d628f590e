"""The DSA departure from the reference code (the digit no-flip rule) as an option (issue 23): config fields for the
distillation and the evaluation, the CLI flag, and the methods and evaluation using them."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from datadistill.cli import main
from datadistill.config import resolve_config
from datadistill.data import DatasetSplits, ImageData
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate, make_augment
from datadistill.methods.registry import get_method
from toydata import toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


def digits_splits() -> DatasetSplits:
    """The toy data under a digit dataset's name (so the digit rule applies to it)."""
    toy = toy_splits()
    spec = dataclasses.replace(toy.spec, name="mnist-toy")
    return DatasetSplits(*(ImageData(d.images, d.labels, spec) for d in (toy.train, toy.val, toy.test)))


@pytest.mark.parametrize("method", ["dm", "dsa"])
def test_methods_follow_the_digit_rule(method):
    data = digits_splits()
    default = get_method(method)(resolve_config(method, "mnist", 1, "quick"), data, torch.device("cpu"))
    assert "flip" not in default.dsa.ops
    cfg = resolve_config(method, "mnist", 1, "quick", dsa_digit_rule=False)
    ref = get_method(method)(cfg, data, torch.device("cpu"))
    assert ref.dsa.ops == ("color", "crop", "cutout", "flip", "scale", "rotate")


def test_evaluation_follows_its_own_fields():
    aug = make_augment("dsa", "mnist", digit_rule=False)
    assert aug is not None
    cfg = resolve_config("dsa", "mnist", 1, "paper", eval={"dsa_digit_rule": False})
    assert cfg.dsa_digit_rule and not cfg.eval.dsa_digit_rule  # distillation and evaluation are separate
    assert cfg.eval.dsa_options() == {"dsa_strategy": "color_crop_cutout_flip_scale_rotate", "dsa_digit_rule": False}
    data = digits_splits()
    kw = dict(model="convnet", runs=1, epochs=1, aug="dsa", test=data.test, device="cpu", progress=False,
              model_args={"width": 8, "depth": 1})
    with_rule = evaluate(data.train, **kw)
    as_given = evaluate(data.train, dsa_digit_rule=False, **kw)
    assert with_rule.extra["dsa_strategy"] == "color_crop_cutout_scale_rotate"
    assert as_given.extra["dsa_strategy"] == "color_crop_cutout_flip_scale_rotate"


def test_non_boolean_values_are_config_errors():
    with pytest.raises(ConfigError, match="dsa_digit_rule"):
        resolve_config("dsa", "mnist", 1, "quick", dsa_digit_rule="yes")
    with pytest.raises(ConfigError, match="dsa_digit_rule"):
        resolve_config("dsa", "mnist", 1, "quick", eval={"dsa_digit_rule": 0})


def test_cli_flag_reaches_both_configs(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cfg, out, progress=True):
        seen["cfg"] = cfg
        raise ConfigError("stop here")

    monkeypatch.setattr("datadistill.runner.run_distillation", fake_run)
    assert main(["distill", "--method", "dsa", "--ipc", "1", "--no-dsa-digit-rule", "--out", str(tmp_path / "r")]) == 2
    assert seen["cfg"].dsa_digit_rule is False and seen["cfg"].eval.dsa_digit_rule is False
    assert main(["distill", "--method", "dsa", "--ipc", "1", "--out", str(tmp_path / "r")]) == 2
    assert seen["cfg"].dsa_digit_rule is True and seen["cfg"].eval.dsa_digit_rule is True
