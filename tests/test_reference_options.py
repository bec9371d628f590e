"""The augmentation's departures from the reference code (VICO-UoE/DatasetCondensation) as options
(issue 23): DSA's digit no-flip rule (config fields for the distillation and the evaluation, the
CLI flag, the methods and the evaluation using them) and the DC augmentation's rotation."""
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
    assert (cfg.eval.dsa_strategy, cfg.eval.dsa_digit_rule, cfg.eval.dc_rotate) == (
        "color_crop_cutout_flip_scale_rotate", False, "bilinear")
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

    monkeypatch.setattr("datadistill.run.run_distillation", fake_run)
    assert main(["distill", "--method", "dsa", "--ipc", "1", "--no-dsa-digit-rule", "--out", str(tmp_path / "r")]) == 2
    assert seen["cfg"].dsa_digit_rule is False and seen["cfg"].eval.dsa_digit_rule is False
    assert main(["distill", "--method", "dsa", "--ipc", "1", "--out", str(tmp_path / "r")]) == 2
    assert seen["cfg"].dsa_digit_rule is True and seen["cfg"].eval.dsa_digit_rule is True


def test_dc_spline_rotation_is_scipys_centre_window():
    import numpy as np
    from scipy.ndimage import rotate as nd_rotate

    from datadistill.augment_eval import DCAugment, _rotate, _rotate_spline

    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    degrees = torch.tensor([30, -12, 44])
    got = _rotate_spline(x, degrees, 0.25)
    for i, d in enumerate(degrees.tolist()):
        r = nd_rotate(x[i].numpy(), angle=d, axes=(-2, -1), cval=0.25)
        top, left = (r.shape[-2] - 28) // 2, (r.shape[-1] - 28) // 2
        np.testing.assert_allclose(got[i].numpy(), r[:, top:top + 28, left:left + 28], rtol=1e-5, atol=1e-5)
    bilinear = _rotate(x, degrees, 0.25)
    assert (got - bilinear).abs().max() > 1e-2  # a different resampling
    aug = make_augment("dc", "mnist", dc_rotate="spline")
    assert isinstance(aug, DCAugment) and aug.rotate_mode == "spline"
    assert make_augment("dc", "mnist").rotate_mode == "bilinear"  # the default stays
    g = torch.Generator().manual_seed(4)
    assert aug(x, g).shape == x.shape
    with pytest.raises(ConfigError, match="rotation"):
        DCAugment(rotate_mode="cubic")
    with pytest.raises(ConfigError, match="dc_rotate"):
        resolve_config("dc", "mnist", 1, "paper", eval={"dc_rotate": "cubic"})


def test_experts_follow_the_digit_rule():
    from datadistill.methods.trajectory.experts import ExpertSettings
    from datadistill.methods.trajectory.experts import identity_of as _identity

    spec = digits_splits().spec
    default = _identity(ExpertSettings(dataset="mnist"), spec, 36)["augmentation"]["strategy"]
    as_given = _identity(ExpertSettings(dataset="mnist", dsa_digit_rule=False), spec, 36)["augmentation"]["strategy"]
    assert "flip" not in default and as_given == "color_crop_cutout_flip_scale_rotate"
    with pytest.raises(ConfigError, match="dsa_digit_rule"):
        ExpertSettings(dataset="mnist", dsa_digit_rule="no").validate()
