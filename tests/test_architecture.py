"""The spine (issue 16): registration is an import, artifacts resolved from what a method requires,
the run setup shared by the loop and the benchmarks, the protocol passed whole, flags and options
from typed fields, old run folders still read."""
from __future__ import annotations

import dataclasses
import importlib
import warnings

import pytest
import torch
import yaml

from datadistill.artifacts import available_artifacts
from datadistill.cli import build_parser, main
from datadistill.config import DistillConfig, EvalConfig, preset_files, resolve_config
from datadistill.errors import ConfigError
from datadistill.evaluate import evaluate
from datadistill.methods import ImageDistiller, available_methods, get_method, register_method
from datadistill.methods.registry import _METHODS
from datadistill.methods.trajectory import ExpertSettings, train_experts
from datadistill.run import prepare, run_distillation
from datadistill.run.folder import CONFIG, RunFolder, run_name

from conftest import TINY_NET

pytestmark = pytest.mark.usefixtures("one_thread")
NET = TINY_NET


@pytest.fixture(scope="module")
def small(tiny):
    return tiny


@pytest.fixture(scope="module")
def experts(tiny_experts):
    return tiny_experts


def mtt_cfg(experts, **over):
    base = dict(device="cpu", model_args=NET, iterations=2, checkpoint_every=1, val_epochs=1, eval={"runs": 0},
                experts=experts, method_args={"syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2})
    return resolve_config("mtt", "toy", 2, "quick", **{**base, **over})


# -- registration ------------------------------------------------------------------------------
def test_registered_methods_and_preset_files_match_one_to_one():
    assert available_methods() == preset_files()


def test_a_method_without_a_preset_file_runs_on_its_defaults(small):
    @register_method("plain-noise-test")
    class Plain(ImageDistiller):  # the smallest image-learning method: pull the images to zero
        def loss(self, it):
            return self.images.square().mean()

    try:
        assert "plain-noise-test" in available_methods()
        cfg = resolve_config("plain-noise-test", "toy", 2, "quick", device="cpu", iterations=3, eval={"runs": 0},
                             val_epochs=1, model_args=NET)
        assert cfg.lr_img == DistillConfig.lr_img and cfg.sources == []
        res = run_distillation(cfg, None, data=small, progress=False, log=lambda m: None)
        start = prepare(cfg, data=small, progress=False).syn0
        assert res.synset.images.square().mean() < start.images.square().mean()
    finally:
        _METHODS.pop("plain-noise-test")


# -- artifacts ------------------------------------------------------------------------------------
def test_artifact_kinds_give_distill_flags():
    assert "experts" in available_artifacts()
    a = build_parser().parse_args(["distill", "--method", "mtt", "--experts", "E"])
    assert a.experts == "E"


def test_a_method_that_needs_experts_says_how_to_make_them(small):
    cfg = resolve_config("mtt", "toy", 2, "quick", device="cpu", model_args=NET)
    with pytest.raises(ConfigError, match="datadistill experts --dataset toy --out EXPERTS_DIR"):
        prepare(cfg, data=small, progress=False)
    pad = resolve_config("pad", "toy", 2, "quick", device="cpu", model_args=NET)
    with pytest.raises(ConfigError, match="--curriculum el2n --out EXPERTS_DIR"):
        prepare(pad, data=small, progress=False)


def test_an_artifact_the_method_does_not_use_is_refused(small, experts):
    cfg = resolve_config("dm", "toy", 2, "quick", device="cpu", model_args=NET, experts=experts)
    with pytest.raises(ConfigError, match="method dm does not use --experts.*mtt, pad"):
        prepare(cfg, data=small, progress=False)


def test_the_run_records_the_artifact_fingerprint_and_refuses_other_contents(tmp_path, small, experts):
    import shutil

    out, mine = tmp_path / "run", tmp_path / "experts"
    shutil.copytree(experts, mine)
    run_distillation(mtt_cfg(str(mine)), out, data=small, progress=False, log=lambda m: None)
    saved = yaml.safe_load((out / CONFIG).read_text())
    fp = saved["artifact_fingerprints"]["experts"]
    assert saved["artifacts"] == {"experts": str(mine)} and len(fp) == 16
    # the same folder name with other experts inside: the resume is refused
    shutil.rmtree(mine)
    train_experts(ExpertSettings("toy", num_experts=2, epochs=3, model_args=NET, batch_size=8, seed=1), mine,
                  data=small, device="cpu", progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="artifact_fingerprints.experts"):
        run_distillation(mtt_cfg(str(mine), iterations=3), out, data=small, progress=False, log=lambda m: None)


def test_an_old_config_with_a_top_level_experts_key_still_resumes(tmp_path, small, experts):
    out = tmp_path / "run"
    first = run_distillation(mtt_cfg(experts), out, data=small, progress=False, log=lambda m: None)
    d = yaml.safe_load((out / CONFIG).read_text())
    d["experts"] = d.pop("artifacts")["experts"]  # the layout before artifacts
    d.pop("artifact_fingerprints")
    (out / CONFIG).write_text(yaml.safe_dump(d))
    assert DistillConfig.from_dict(d).artifacts == {"experts": experts}
    again = run_distillation(mtt_cfg(experts, iterations=3), out, data=small, progress=False, log=lambda m: None)
    assert again.resumed_from == 2 and first.synset.images.shape == again.synset.images.shape


# -- the protocol passed whole -------------------------------------------------------------------
def test_evaluate_takes_the_protocol_whole_and_the_keyword_form_is_the_same(small):
    syn = prepare(resolve_config("random", "toy", 2, "quick", device="cpu"), data=small, progress=False).syn0
    kw = dict(test=small.test, device="cpu", model_args=NET, progress=False)
    p = EvalConfig(runs=2, epochs=3, aug="none", lr=0.05, momentum=0.5, weight_decay=0.0)
    a = evaluate(syn, p, **kw)
    b = evaluate(syn, runs=2, epochs=3, aug="none", lr=0.05, momentum=0.5, weight_decay=0.0, **kw)
    c = evaluate(syn, p, runs=1, **kw)
    assert a.accuracies == b.accuracies and (a.lr, a.epochs, a.runs) == (0.05, 3, 2)
    assert c.accuracies == a.accuracies[:1]
    with pytest.raises(ConfigError, match="unknown evaluation setting"):
        evaluate(syn, p, colour="red", **kw)


def test_validation_uses_the_whole_protocol_with_one_run():
    cfg = resolve_config("dm", "toy", 2, "quick", val_epochs=7, eval={"lr": 0.03, "momentum": 0.2, "runs": 5})
    v = cfg.validation_protocol()
    assert (v.runs, v.epochs, v.lr, v.momentum, v.models) == (1, 7, 0.03, 0.2, [cfg.model])


# -- flags and options from typed fields ------------------------------------------------------------
def test_every_config_field_with_help_has_a_flag_that_reaches_the_config():
    p = build_parser()
    flags = {o for a in p._subparsers._group_actions[0].choices["distill"]._actions for o in a.option_strings}
    for klass, prefix in ((DistillConfig, ""), (EvalConfig, "eval-")):
        for f in dataclasses.fields(klass):
            if "help" in f.metadata:
                assert (f.metadata.get("name") or "--" + (prefix + f.name).replace("_", "-")) in flags, f.name
    from datadistill.cli import given_fields

    a = p.parse_args(["distill", "--eval-lr", "0.02", "--momentum-img", "0.9", "--opt", "real_chunk=1e2",
                      "--model-arg", "width=16", "--eval-models", "convnet,mlp", "--no-zca"])
    over = given_fields(a, DistillConfig)
    cfg = resolve_config(**over, eval=given_fields(a, EvalConfig, prefix="eval-"))
    assert (cfg.eval.lr, cfg.momentum_img, cfg.model_args["width"], cfg.eval.models, cfg.zca) == \
        (0.02, 0.9, 16, ["convnet", "mlp"], False)
    assert cfg.method_args == {"real_chunk": "1e2"}  # YAML 1.1 reads 1e2 as a string; the method converts it
    assert get_method("dm").Options is not None


@pytest.mark.parametrize("value, expected", [("1e-5", 1e-5), ("0.001", 1e-3), ("3", 3.0)])
def test_method_options_are_converted_to_their_field_types(experts, small, value, expected):
    from datadistill.methods.base import parse_options

    o = parse_options(get_method("mtt").Options, {"lr_lr": yaml.safe_load(value)})
    assert o.lr_lr == expected and isinstance(o.lr_lr, float)
    assert parse_options(get_method("dm").Options, {"real_chunk": 1e2}).real_chunk == 100


@pytest.mark.parametrize("opt, fragment", [
    ("real_chunk=abc", "method option real_chunk must be an integer, got 'abc'"),
    ("real_chunk=2.5", "method option real_chunk must be an integer, got 2.5"),
    ("colour=red", "unknown method option"),
])
def test_a_mistyped_option_is_one_error_line(opt, fragment, capsys, tmp_path):
    assert main(["distill", "--opt", opt, "--iterations", "1", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err


@pytest.mark.parametrize("key, value, fragment", [
    ("iterations", "abc", "iterations must be an integer, got 'abc'"),
    ("lr_img", [1, 2], "lr_img must be a number, got [1, 2]"),
    ("zca", "maybe", "zca must be true or false"),
])
def test_config_yaml_values_are_type_checked(key, value, fragment):
    d = DistillConfig().to_dict()
    d[key] = value
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        DistillConfig.from_dict(d)


# -- names -----------------------------------------------------------------------------------------
def test_run_name_is_file_name_safe():
    assert run_name("folder:./my_images") == "folder-my_images"
    assert run_name("folder:/data/x/y") == "folder-data_x_y"
    assert run_name("mnist") == "mnist"
    assert RunFolder("r").path.name == "r"


@pytest.mark.parametrize("old, new", [("datadistill.runner", "run_distillation"),
                                      ("datadistill.experts", "train_experts"),
                                      ("datadistill.difficulty", "compute_scores"),
                                      ("datadistill.methods.pad", "PAD")])
def test_the_old_module_names_still_import_with_a_deprecation_warning(old, new):
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(old)
    assert hasattr(mod, new) and any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_the_setup_is_the_loops(small):
    """The benchmarks' starting point (prepare) is the loop's: same starting set as the run's grid."""
    cfg = resolve_config("dm", "toy", 2, "quick", device="cpu", iterations=0, model_args=NET, eval={"runs": 0})
    a = prepare(cfg, data=small, progress=False)
    b = run_distillation(cfg, None, data=small, progress=False, log=lambda m: None)
    assert torch.equal(a.syn0.images, b.synset.images)
