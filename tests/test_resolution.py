"""Networks sized to the resolution (issue 19): ConvNet's depth from the image size unless given,
recorded in config.yaml; ResNet-18 at 64/128/224."""
from __future__ import annotations

import pytest
import torch
import yaml

from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.nets import make_net
from datadistill.nets.convnet import depth_for_size
from datadistill.run import run_distillation

from toydata import toy_splits


@pytest.mark.parametrize("side,depth", [(8, 3), (28, 3), (32, 3), (64, 4), (128, 5), (224, 5)])
def test_convnet_depth_from_the_image_size(side, depth):
    assert depth_for_size((side, side)) == depth
    net = make_net("convnet", 3, 10, side, width=4)
    assert net.depth == depth
    assert net(torch.zeros(2, 3, side, side)).shape == (2, 10)


def test_a_given_depth_wins():
    assert make_net("convnet", 3, 10, 64, width=4, depth=2).depth == 2
    assert make_net("convnet_bn", 3, 10, 128, width=4, depth=3).depth == 3
    with pytest.raises(ConfigError, match="1 to 6"):
        make_net("convnet", 3, 10, 64, depth=7)


@pytest.mark.parametrize("side,stem", [(32, "small"), (64, "small"), (128, "small"), (224, "imagenet")])
def test_resnet18_at_each_resolution(side, stem):
    net = make_net("resnet18", 3, 5, side)
    assert net.stem_kind == stem
    assert net(torch.zeros(1, 3, side, side)).shape == (1, 5)
    assert make_net("resnet18_bn", 3, 5, side, stem="small").stem_kind == "small"


def test_config_yaml_says_the_depth_it_picked(tmp_path):
    data = toy_splits(num_classes=2, per_class=4, channels=1, size=64)
    cfg = resolve_config("dm", "toy", 1, "quick", device="cpu", model_args={"width": 4}, iterations=1,
                         eval={"runs": 0}, batch_real=2, val_epochs=1)
    run_distillation(cfg, tmp_path / "run", data=data, progress=False, log=lambda m: None)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["resolved"]["convnet_depth"] == 4 and "64x64" in saved["resolved"]["convnet_depth_rule"]
    # resuming the same folder is the same run
    run_distillation(cfg, tmp_path / "run", data=data, progress=False, log=lambda m: None)
    given = resolve_config("dm", "toy", 1, "quick", device="cpu", model_args={"width": 4, "depth": 2}, iterations=1,
                           eval={"runs": 0}, batch_real=2, val_epochs=1)
    run_distillation(given, tmp_path / "run2", data=data, progress=False, log=lambda m: None)
    assert "convnet_depth" not in yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["resolved"]


# -- artifacts made before (depth 3 spelled out) or since (depth None) the depth followed the size ----
def test_sized_variants_fill_what_the_builder_derives_from_the_size():
    from datadistill.nets import sized_variants

    assert sized_variants("convnet", 28)["depth"] == 3 and sized_variants("convnet_bn", (64, 64))["depth"] == 4
    assert sized_variants("convnet", 64, {"depth": 2})["depth"] == 2
    assert sized_variants("convnet", 32, {"depth": None}) == sized_variants("convnet", 32, {"depth": 3})
    assert sized_variants("resnet18", 32)["stem"] == "small" and sized_variants("resnet18_bn", 224)["stem"] == "imagenet"
    assert sized_variants("resnet18", 32, {"norm": "instance"}) == sized_variants("resnet18", 32)  # no stem key: the default
    assert sized_variants("mlp", 28) == sized_variants("mlp", 64)  # nothing derived from the size


def _rewrite_depth(manifest, depth):
    import json

    m = json.loads(manifest.read_text())
    m["model_args"]["depth"] = depth
    manifest.write_text(json.dumps(m))


@pytest.mark.usefixtures("one_thread")
def test_a_teacher_or_experts_folder_keeps_matching_whichever_way_its_depth_was_written(tmp_path):
    from datadistill.methods.trajectory import train_experts
    from datadistill.methods.trajectory.experts import ExpertSettings, check_experts, open_experts
    from datadistill.teacher import teacher_settings, train_teacher

    data = toy_splits(num_classes=3, per_class=8, channels=1, size=8)
    quiet = dict(data=data, device="cpu", progress=False)
    s = teacher_settings("toy", "quick", epochs=1, model_args={"width": 4}, batch_size=8)
    first = train_teacher(s, tmp_path / "t", log=lambda m: None, **quiet)
    assert first["model_args"]["depth"] == 3  # recorded as built
    es = ExpertSettings(dataset="toy", num_experts=1, epochs=1, model_args={"width": 4}, batch_size=8, zca=False)
    train_experts(es, tmp_path / "e", log=lambda m: None, **quiet)
    for depth in (None, 3):  # as the commits since / before the size rule wrote it
        _rewrite_depth(tmp_path / "t" / "manifest.json", depth)
        said = []
        assert train_teacher(s, tmp_path / "t", log=said.append, **quiet)["test_accuracy"] == first["test_accuracy"]
        assert "already trained" in said[0]
        _rewrite_depth(tmp_path / "e" / "manifest.json", depth)
        said = []
        train_experts(es, tmp_path / "e", log=said.append, **quiet)
        assert any("already trained" in m for m in said), said
        check_experts(open_experts(tmp_path / "e"), data.spec, "convnet", {"width": 4}, False)
    _rewrite_depth(tmp_path / "t" / "manifest.json", 2)  # another network: refused, as before
    with pytest.raises(ConfigError, match="other settings"):
        train_teacher(s, tmp_path / "t", log=lambda m: None, **quiet)
    _rewrite_depth(tmp_path / "e" / "manifest.json", 2)
    with pytest.raises(ConfigError, match="model depth: experts 2, this run 3"):
        check_experts(open_experts(tmp_path / "e"), data.spec, "convnet", {"width": 4}, False)
