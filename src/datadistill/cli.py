"""The `datadistill` command. Thin: parses arguments, calls the API, prints results.

Errors the user can fix are printed as one line (`error: ...`) with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from .errors import ConfigError, DatadistillError
from .fileio import check_out_dir, check_out_file, is_html, is_json, is_png, safetensors_format
from .perf import tune_allocator


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def _typed(tp, flag: str):
    """An argparse type that converts as typed.coerce does (1e2 is an integer, 1e-5 a float)."""
    from .typed import coerce

    def convert(text: str):
        try:
            return coerce(text, tp, "the value")
        except DatadistillError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def add_field_flags(p: argparse.ArgumentParser, klass: type, prefix: str = "", skip: tuple[str, ...] = (),
                    required: tuple[str, ...] = ()) -> None:
    """One flag per field of the config dataclass `klass` that carries help (config.option):
    ``--<prefix><field-name>`` unless the field names its flag; booleans as --x / --no-x, dicts as
    repeatable KEY=VALUE, lists comma-separated. Every default is None (not given: the preset's or
    the dataclass's value); values are checked against the field's type when the config is built."""
    from dataclasses import fields

    from .typed import field_types

    types_ = field_types(klass)
    for f in fields(klass):
        meta = f.metadata
        if "help" not in meta or f.name in skip:
            continue
        flag = meta.get("name") or "--" + (prefix + f.name).replace("_", "-")
        kw: dict = dict(dest=prefix.replace("-", "_") + f.name, default=None, help=meta["help"])
        tp = types_[f.name]
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif getattr(tp, "__origin__", None) is dict or tp is dict:
            kw.update(type=_kv, action="append", metavar=meta.get("metavar", "KEY=VALUE"))
        else:
            if tp in (int, float, int | None, float | None):
                kw["type"] = _typed(tp, flag)
            if "choices" in meta:
                kw["choices"] = list(meta["choices"])
            if "metavar" in meta:
                kw["metavar"] = meta["metavar"]
        if f.name in required:
            kw["required"] = True
        p.add_argument(flag, **kw)


def given_fields(a: argparse.Namespace, klass: type, prefix: str = "") -> dict:
    """The fields of `klass` given on the command line (see add_field_flags), as config values."""
    from dataclasses import fields

    out = {}
    for f in fields(klass):
        v = getattr(a, prefix.replace("-", "_") + f.name, None)
        if v is not None and "help" in f.metadata:
            out[f.name] = dict(v) if isinstance(v, list) and v and isinstance(v[0], tuple) else v
    return out


def _storage_shorthands(p: argparse.ArgumentParser) -> None:
    """--in-memory / --out-of-core: shorthands of --storage memory / disk."""
    p.add_argument("--in-memory", dest="storage", action="store_const", const="memory",
                   help="keep the dataset in memory as float32 (--storage memory)")
    p.add_argument("--out-of-core", dest="storage", action="store_const", const="disk",
                   help="read the dataset from the uint8 image store a batch at a time (--storage disk)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--data-root", default=None, help="folder with <dataset>/ files (default: $DATADISTILL_DATA or ~/.cache/datadistill)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="datadistill", description="Dataset distillation: condense a labelled image dataset into a few synthetic images per class.")
    from ._version import __version__

    ap.add_argument("--version", action="version", version=f"datadistill {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    from .artifacts import available_artifacts
    from .config import DistillConfig, EvalConfig
    from .interop import export_formats, import_formats
    from .methods import available_methods
    from .methods.trajectory import ExpertSettings

    p = sub.add_parser("distill", help="distill a dataset into a synthetic set (resumes an existing --out folder)",
                       description="Distill a dataset into a synthetic set. Every option not given comes from the "
                                   "preset; the resolved values are written to config.yaml in the run folder.")
    add_field_flags(p, DistillConfig)
    for act in p._actions:  # the registry is the list of methods (config checks the name)
        if act.dest == "method":
            act.help = f"distillation method: {', '.join(available_methods())} (default dm; README, docs/methods/)"
    add_field_flags(p, EvalConfig, prefix="eval-")
    _storage_shorthands(p)
    for kind, art in available_artifacts().items():
        p.add_argument(f"--{kind}", default=None, metavar="DIR", dest=kind,
                       help=f"{art.description} for the methods that need them (made by `{art.command}`)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<method>-ipc<ipc>)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="set the run up, print the peak memory it is estimated to need (trajectory methods: per "
                        "unroll mode) and what the device has, and exit without distilling or writing anything")

    p = sub.add_parser("experts", help="train expert trajectories for trajectory matching (mtt, datm, pad); resumes an "
                                       "existing --out folder")
    add_field_flags(p, ExpertSettings, required=("dataset",))
    p.add_argument("--preset", default="quick", choices=["quick", "paper"],
                   help="quick (a few short experts, default) or paper (100 experts of 50 epochs)")
    p.add_argument("--out", required=True, help="experts folder")
    _common(p)

    from .teacher import TeacherSettings

    p = sub.add_parser("teacher", help="train a teacher network on the full training split (soft-label evaluation, "
                                       "decoupled methods); resumes an existing --out folder")
    add_field_flags(p, TeacherSettings, required=("dataset",))
    p.add_argument("--preset", default="quick", choices=["quick", "paper"],
                   help="quick (a few epochs, default) or paper (presets/artifacts/teacher.yaml)")
    p.add_argument("--from", dest="from_file", default=None, metavar="FILE",
                   help="import this state dict (torch.save of a state_dict, read with weights_only=True) instead "
                        "of training")
    p.add_argument("--out", required=True, help="teacher folder")
    _common(p)

    p = sub.add_parser("difficulty", help="EL2N difficulty score of every training sample (what --curriculum el2n orders by)")
    p.add_argument("--dataset", required=True, help="mnist-5k, mnist, fashion_mnist, cifar10, cifar100, svhn, folder:PATH")
    p.add_argument("--preset", default="quick", choices=["quick", "paper"],
                   help="quick (default: a few networks, few epochs) or paper (10 networks x 20 epochs)")
    p.add_argument("--nets", type=int, default=None, help="networks averaged (overrides the preset)")
    p.add_argument("--epochs", type=int, default=None, help="epochs each network trains before scoring (overrides the preset)")
    p.add_argument("--model", default=None, help="network (default convnet)")
    p.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a network variant, e.g. width=64 (repeatable)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 256)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="scores file (.safetensors); kept if it already holds these scores")
    _common(p)

    p = sub.add_parser("evaluate", help="train fresh networks on a synthetic set and test them on real data")
    p.add_argument("run", help="a run folder or a .safetensors synthetic set")
    p.add_argument("--models", default="convnet", help="comma-separated networks (convnet,lenet,alexnet,vgg11,resnet18,mlp,...)")
    p.add_argument("--runs", type=int, default=None, help="training runs per network (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 1000 with DSA, 300 without)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the set's learned lr, else 0.01)")
    p.add_argument("--aug", choices=["dsa", "dc", "none"], default=None,
                   help="training augmentation: dsa (default), dc (the DC paper's, MNIST family only) or none")
    p.add_argument("--dsa-digit-rule", action=argparse.BooleanOptionalAction, default=None,
                   help="drop flip from DSA on digit datasets (mnist/svhn names; default); --no-dsa-digit-rule: the "
                        "strategy as given, as the reference code")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["test", "val"], default="test", help="test (default) or the validation split")
    p.add_argument("--gain", action="store_true",
                   help="also evaluate a random real subset of the same size and class balance, and report the gain over it")
    p.add_argument("--batched", action=argparse.BooleanOptionalAction, default=None,
                   help="train a network's runs together (default: on a GPU, when there are several and the network "
                        "has no batch norm; on a CPU they train faster one after another); --no-batched: never")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="fp32 (default) or bf16: autocast of the forward passes (training and test)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each training step's forward and loss (off by default: changes rounding and "
                        "compiles first; pays for long trainings, docs/speed.md)")
    p.add_argument("--channels-last", action="store_true",
                   help="train in the channels-last memory layout, one run at a time (off by default; slower on "
                        "the CPUs measured, docs/speed.md)")
    from .protocols import protocol_names

    p.add_argument("--protocol", choices=protocol_names(), default=None,
                   help="a named protocol (presets/protocols/*.yaml, each with its source); flags given override it")
    p.add_argument("--teacher", default=None, metavar="DIR",
                   help="teacher folder for --labels teacher (or in place of the one a set relabelled in teacher "
                        "mode records); refused where no teacher labels")
    p.add_argument("--labels", choices=["auto", "hard", "teacher"], default=None,
                   help="auto (the set's own), hard (the classes the images were made for, else the arg-max of "
                        "soft labels) or teacher (every batch relabelled)")
    p.add_argument("--loss", choices=["ce", "kl", "soft_ce", "mse_gt"], default=None, help="the student's loss")
    p.add_argument("--temperature", type=float, default=None, help="temperature of kl / soft_ce (default 1)")
    p.add_argument("--mix", choices=["none", "cutmix", "mixup"], default=None, help="batch mixing")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="the student's optimizer")
    p.add_argument("--schedule", choices=["step", "cosine"], default=None, help="the student's lr schedule")
    p.add_argument("--lr-grid", default=None, metavar="A,B",
                   help="choose the lr from these on the validation split when the set has no learned lr")
    p.add_argument("--scores", action="store_true",
                   help="DD-Ranking's HLR, IOR, LRS and ARS (needs the full-data accuracy: --baseline FILE or the "
                        "file `datadistill baseline` writes)")
    p.add_argument("--baseline", default=None, metavar="FILE",
                   help="baseline JSON with the full-data accuracy (default runs/baseline-<dataset>-<model>.json)")
    p.add_argument("--format", default=None, choices=import_formats(),
                   help="RUN is a set saved by another code base in this format, imported on the fly (see `datadistill import`)")
    p.add_argument("--dataset", default=None, help="with --format: the dataset the set was distilled from")
    _import_flags(p)
    _common(p)

    p = sub.add_parser("baseline", help="train on the full training split: accuracy, seconds and FLOPs to compare against")
    p.add_argument("--dataset", required=True, help="mnist-5k, mnist, fashion_mnist, cifar10, cifar100, svhn, folder:PATH")
    p.add_argument("--model", default="convnet", help="network (default convnet)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 5: minutes on a CPU for small datasets)")
    p.add_argument("--runs", type=int, default=1, help="training runs from different initializations (default 1)")
    p.add_argument("--aug", choices=["none", "dsa"], default="none", help="training augmentation (default none)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a network variant, e.g. width=64 (repeatable)")
    p.add_argument("--out", default=None, help="JSON file (default runs/baseline-<dataset>-<model>.json)")
    _common(p)

    p = sub.add_parser("show", help="write an image grid (initial vs final) of a run or a synthetic set")
    p.add_argument("run", help="a run folder or a .safetensors synthetic set")
    p.add_argument("--out", default=None, help="PNG path (default: show.png in the run folder, or beside the file)")

    p = sub.add_parser("export", help="export a synthetic set as images, or in the layout another code base reads")
    p.add_argument("run", help="a run folder or a .safetensors synthetic set")
    p.add_argument("dest", help="output folder (imagefolder, mtt, datm, pad, ddranking; vico: a folder or a .pt file) "
                                "or PNG file (grid)")
    p.add_argument("--format", choices=export_formats(), default="imagefolder",
                   help="imagefolder (default), grid, or a published layout (docs/interop.md)")

    p = sub.add_parser("import", help="convert a set saved by another code base (MTT, DC/DSA/DM, DATM, PAD, "
                                      "DD-Ranking, an image folder) into a datadistill synthetic set")
    p.add_argument("source", metavar="FILE_OR_DIR", help="the saved files (docs/interop.md: each format's layout)")
    p.add_argument("--format", required=True, choices=import_formats(), help="the layout of FILE_OR_DIR")
    p.add_argument("--dataset", required=True, help="the dataset the set was distilled from (its classes, size, normalization)")
    p.add_argument("--out", required=True, metavar="FILE", help="the synthetic set to write (.safetensors)")
    _import_flags(p)
    _common(p)

    p = sub.add_parser("nas", help="architecture-search proxy: rank ConvNet variants on the set vs on real data (validation split)")
    p.add_argument("run", help="a run folder or a .safetensors synthetic set")
    p.add_argument("--variants", default="default", choices=["default", "small"],
                   help="ConvNet family: default (15 variants around the default ConvNet) or small (9, width 16)")
    p.add_argument("--real-subset", type=int, default=None, metavar="N",
                   help="train the real side on N images per class (stratified, fixed seed) instead of the whole training split")
    p.add_argument("--val-subset", type=int, default=None, metavar="N",
                   help="test on N validation images per class (stratified, fixed seed) instead of the whole validation split")
    p.add_argument("--epochs-syn", type=int, default=300, help="epochs on the synthetic set (default 300)")
    p.add_argument("--epochs-real", type=int, default=10, help="epochs on the real data (default 10)")
    p.add_argument("--runs", type=int, default=1, help="training runs per variant and side (default 1)")
    p.add_argument("--aug", choices=["dsa", "dc", "none"], default="dsa", help="augmentation on the synthetic side (default dsa)")
    p.add_argument("--aug-real", choices=["dsa", "dc", "none"], default="none", help="augmentation on the real side (default none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (default: nas.json in the run folder, or <set>.nas.json beside the file)")
    _common(p)

    p = sub.add_parser("continual", help="class-incremental learning with a distilled or selected memory")
    p.add_argument("--dataset", default=None, help="dataset (default: the memory run's, else mnist-5k)")
    p.add_argument("--steps", type=int, default=5, help="class-incremental steps; classes split in class order (default 5)")
    p.add_argument("--ipc", type=int, default=None, help="memory images per class (default 10; a RUN memory: the set's)")
    p.add_argument("--memory", default="dm", help="dm (default), random, herding (or another method), or a RUN folder / .safetensors set")
    p.add_argument("--preset", default="quick", choices=["quick", "paper"], help="preset of the per-step distillation and evaluation")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations per step (overrides the preset)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs on the memory per step (default: the preset's evaluation, quick 300)")
    p.add_argument("--runs", type=int, default=None, help="training runs per step (default: the preset's, quick 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (default runs/continual-<dataset>-<memory>-<steps>steps-ipc<ipc>.json)")
    _common(p)

    p = sub.add_parser("report", help="one self-contained HTML page with the grids, curves, evaluations of runs and a comparison")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--out", default="report.html", help="HTML file (default report.html)")
    p.add_argument("--title", default="datadistill report")

    p = sub.add_parser("datasets", help="list the datasets and whether their files are present")
    p.add_argument("--data-root", default=None)
    return ap


# ------------------------------------------------------------------------------- commands
def cmd_distill(a: argparse.Namespace) -> int:
    from . import dist
    from .artifacts import available_artifacts
    from .config import DistillConfig, EvalConfig, resolve_config
    from .run import default_out, run_distillation

    given = given_fields(a, DistillConfig)
    given["eval"] = given_fields(a, EvalConfig, prefix="eval-")
    if "dsa_digit_rule" in given:  # shorthand: --[no-]dsa-digit-rule for the evaluation too, unless it says otherwise
        given["eval"].setdefault("dsa_digit_rule", given["dsa_digit_rule"])
    given["artifacts"] = {k: getattr(a, k) for k in available_artifacts() if getattr(a, k)}
    cfg = resolve_config(**given)
    if a.dry_run:
        return _print_dry_run(cfg, progress=not a.no_progress)
    out = check_out_dir(Path(a.out) if a.out else default_out(cfg), kind="run")
    res = run_distillation(cfg, out, progress=not a.no_progress)  # joins torchrun's process group, if any
    if not dist.is_main():  # the other processes of a torchrun launch hold the same set
        return 0
    print(f"synthetic set: {out / 'synset.safetensors'} ({len(res.synset)} images); "
          f"distillation {res.distill_seconds:.0f} s, peak memory {res.peak_memory_mb:.0f} MiB")
    labels = res.synset.meta.get("labels")
    if isinstance(labels, dict) and labels.get("source") == "teacher":  # relabelled by a teacher (--teacher DIR)
        how = (f"stored per {labels['granularity']}, {labels['stored_bytes']:,} bytes" if labels["mode"] == "stored"
               else "made on the fly by the teacher at evaluation (none stored)")
        print(f"soft labels of {labels['teacher']}: {how}")
    for ev_res in res.evals:
        print(f"test accuracy {ev_res.summary()}")
    return 0


def _print_dry_run(cfg, progress: bool) -> int:
    from .run import dry_run

    rec = dry_run(cfg, progress=progress)
    it = rec["iteration"]
    print(f"{rec['method']} on {rec['dataset']}, IPC {rec['ipc']}, device {rec['device']}: setup peak "
          f"{rec['setup'].get('peak_cuda_mb', rec['setup']['peak_rss_mb']):,.0f} MiB")
    if "unroll_mib" in it:
        modes = ", ".join(f"{m} {v:,.0f} MiB" for m, v in it["unroll_mib"].items())
        print(f"one iteration: {it['iteration_mib']:,.0f} MiB with unroll={it['unroll']} (estimated {it['how']}; "
              f"per mode: {modes})")
    elif "iteration_mib" in it:
        print(f"one iteration: {it['iteration_mib']:,.0f} MiB ({it['how']})")
    else:
        print(f"one iteration: {it['how']}")
    fits = rec.get("fits")
    print(f"estimated peak {rec['estimated_peak_mib']:,.0f} MiB; available {rec['available_mib']:,.0f} MiB "
          f"({rec['available_source']})" + ("" if fits is None else ("; fits" if fits else "; does NOT fit")))
    print(json.dumps(rec))
    return 0


def cmd_experts(a: argparse.Namespace) -> int:
    from . import dist
    from .methods.trajectory import ExpertSettings, expert_settings, train_experts

    given = given_fields(a, ExpertSettings)
    settings = expert_settings(given.pop("dataset"), a.preset, **given)
    report = train_experts(settings, check_out_dir(a.out, kind="experts"), data_root=a.data_root, device=a.device or "auto", progress=not a.no_progress)
    if dist.is_main():  # under torchrun every process returns the report; one prints it
        print(report.summary())
    return 0


def cmd_teacher(a: argparse.Namespace) -> int:
    from .teacher import TeacherSettings, import_teacher, teacher_settings, train_teacher

    given = given_fields(a, TeacherSettings)
    dataset = given.pop("dataset")
    check_out_dir(a.out, kind="teacher")
    if a.from_file:
        m = import_teacher(a.from_file, dataset, given.get("model", "convnet_bn"), a.out,
                           model_args=given.get("model_args"), data_root=a.data_root, device=a.device or "auto",
                           progress=not a.no_progress)
    else:
        m = train_teacher(teacher_settings(dataset, a.preset, **given), a.out, data_root=a.data_root,
                          device=a.device or "auto", progress=not a.no_progress, log=_stderr)
    print(f"teacher {m['model']} on {dataset} in {a.out}: test accuracy {m['test_accuracy']:.2f} %, validation "
          f"{m['val_accuracy']:.2f} %")
    return 0


def cmd_difficulty(a: argparse.Namespace) -> int:
    from .data import load_dataset
    from .methods.trajectory.difficulty import check_scores_path, ensure_scores
    from .methods.trajectory import expert_settings
    from .rng import resolve_device

    settings = expert_settings(a.dataset, a.preset, curriculum="el2n", score_nets=a.nets, score_epochs=a.epochs,
                               model=a.model, model_args=dict(a.model_arg) or None, batch_size=a.batch_size, seed=a.seed)
    check_scores_path(a.out)
    data = load_dataset(a.dataset, a.data_root, progress=not a.no_progress)
    scores, computed = ensure_scores(a.out, data.train, settings.score_settings(), device=resolve_device(a.device or "auto"),
                                     progress=not a.no_progress, log=_stderr)
    v = scores.values
    what = f"computed in {scores.seconds:.0f} s" if computed else "already there (same data and settings)"
    print(f"{len(v)} EL2N scores of {a.dataset} ({scores.settings['num_nets']} networks x {scores.settings['epochs']} "
          f"epochs) in {a.out}, {what}: mean {float(v.mean()):.3f}, min {float(v.min()):.3f}, max {float(v.max()):.3f}")
    return 0


def _import_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--normalized", action="store_true", default=None,
                   help="the images are normalized with the dataset's mean/std (where the files do not say)")
    g.add_argument("--unnormalized", dest="normalized", action="store_false", default=None,
                   help="the images are [0, 1] pixels (where the files do not say)")
    g.add_argument("--zca-from", default=None, metavar="RUN_OR_SET",
                   help="the images are ZCA-whitened with the whitening of this run, set or experts folder")
    p.add_argument("--exp", type=int, default=None, metavar="K",
                   help="vico: the experiment of the file to take (default 0)")


def _import_set(a: argparse.Namespace):
    """The set `datadistill import` / `evaluate --format` names, read from the foreign files."""
    from .interop import read_set

    if not a.dataset:
        raise ConfigError(f"--format {a.format} needs --dataset (the dataset the set was distilled from)")
    syn = read_set(a.source if hasattr(a, "source") else a.run, a.format, a.dataset, data_root=a.data_root,
                   normalized=a.normalized, zca_from=a.zca_from, exp=a.exp, progress=not a.no_progress)
    info = syn.meta["imported"]
    exp = f", experiment {info['exp']} of {info['experiments']}" if "experiments" in info else ""
    lr = f", learned lr {syn.lr:g}" if syn.lr is not None else ""
    print(f"imported {len(syn)} images (stored {info['images']}), {'soft' if syn.soft else 'hard'} labels "
          f"({syn.ipc} per class){lr}{exp} from {info['source']} ({a.format})", file=sys.stderr)
    return syn


def cmd_import(a: argparse.Namespace) -> int:
    from .synset import FORMAT

    check_out_file(a.out, kind="a datadistill synthetic set", replaces=lambda p: safetensors_format(p) == FORMAT)
    syn = _import_set(a)
    print(syn.save(a.out))
    return 0


def _load_set(path: str):
    from .synset import SyntheticSet

    return SyntheticSet.load(path)


def _data_root(a: argparse.Namespace, syn) -> str | None:
    return a.data_root or syn.default_data_root()


def cmd_evaluate(a: argparse.Namespace) -> int:
    from . import dist
    from .config import EvalConfig, check_protocol
    from .data import load_dataset
    from .evaluate import evaluate, protocol_with
    from .fileio import write_json
    from .rng import resolve_device

    if a.dataset and not a.format:
        raise ConfigError("--dataset names the dataset of a set given with --format; drop it, or give --format")
    syn = _load_set(a.run) if a.format is None else _import_set(a)
    models = _models(a.models, "--models")
    if a.epochs is not None and a.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {a.epochs}")
    if a.lr is not None and not a.lr > 0:
        raise ConfigError(f"--lr must be > 0, got {a.lr}")
    if a.lr is not None and a.lr_grid:
        raise ConfigError("--lr fixes the learning rate and --lr-grid chooses one on the validation split; give one")
    from .run.folder import EVALUATE

    target = Path(a.run)
    dest = check_out_file(target / EVALUATE if target.is_dir() else target.parent / f"{target.stem}.{EVALUATE}",
                          "the results file", kind="a JSON file", replaces=is_json)
    # Under torchrun each process trains its share of every network's runs (evaluate gathers them).
    device = dist.process_device(resolve_device(a.device or "auto"))  # under torchrun: one GPU per process
    dist.init_from_env(device)
    main_process = dist.is_main()
    given = {"models": models, "runs": a.runs, "epochs": a.epochs, "lr": a.lr, "aug": a.aug, "gain": a.gain or None,
             "batched": a.batched, "precision": a.precision, "compile": a.compile or None,
             "channels_last": a.channels_last or None, "teacher": a.teacher, "labels": a.labels, "loss": a.loss,
             "temperature": a.temperature, "mix": a.mix, "optimizer": a.optimizer, "schedule": a.schedule,
             "lr_grid": a.lr_grid, "dsa_digit_rule": a.dsa_digit_rule}
    if a.protocol:
        from .protocols import differences, load_protocol, protocol_source

        protocol = load_protocol(a.protocol, **given)
        if main_process:
            diff = differences(protocol)
            print(f"protocol {a.protocol} ({' '.join(protocol_source(a.protocol)['source'].split())[:160]}...); "
                  f"differs from datadistill's in: {', '.join(diff) or 'nothing'}", file=sys.stderr)
    else:
        protocol = protocol_with(EvalConfig(runs=5), {k: v for k, v in given.items() if v is not None})
        check_protocol(protocol)
    from .train import TEMPERATURE_LOSSES

    if a.temperature is not None and protocol.loss not in TEMPERATURE_LOSSES:
        raise ConfigError(f"--temperature applies to the {' and '.join(TEMPERATURE_LOSSES)} losses; this evaluation's loss is "
                          f"{protocol.loss} (add --loss kl, or drop --temperature)")
    splits = load_dataset(syn.spec.name, _data_root(a, syn), image_size=syn.spec.im_size, progress=not a.no_progress)
    test = splits.val if a.split == "val" else splits.test
    results = []
    for m in protocol.models:
        r = evaluate(syn, protocol, model=m, test=test, split=a.split, train=splits.train if a.gain else None,
                     val=splits.val, device=device, seed=a.seed, progress=not a.no_progress)
        results.append(r)
        if main_process:
            print(r.summary(), file=sys.stderr)
    if not main_process:
        return 0
    print(format_table(results))
    for r in results:
        if "gain" in r.extra:
            print(f"{r.model}: random real subset {r.extra['random_mean']:.2f} +- {r.extra['random_std']:.2f} %, "
                  f"gain {r.extra['gain']:+.2f} points")
    doc = [r.to_dict() for r in results]
    if a.scores:
        doc[0]["extra"]["scores"] = _scores(a, syn, protocol, splits, device)
    write_json(dest, doc)
    print(f"saved {dest}")
    return 0


def _scores(a: argparse.Namespace, syn, protocol, splits, device) -> dict:
    """DD-Ranking's scores of the set for the protocol's first network, printed and returned."""
    import json

    from .run import run_name
    from .scores import rank_scores

    model = protocol.models[0]
    path = Path(a.baseline) if a.baseline else Path("runs") / f"baseline-{run_name(syn.spec.name)}-{model}.json"
    if not path.is_file():
        raise ConfigError(f"--scores needs the full-data accuracy of {model} on {syn.spec.name}: run `datadistill "
                          f"baseline --dataset {syn.spec.name} --model {model}` first (it writes {path}), or give "
                          "--baseline FILE")
    try:
        full = float(json.loads(path.read_text())["test_mean"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a baseline file of `datadistill baseline` ({e})") from None
    s = rank_scores(syn, protocol, model, full, test=splits.test, train=splits.train, val=splits.val, device=device,
                    seed=a.seed, progress=not a.no_progress)
    print(f"DD-Ranking scores ({model}, protocol {protocol.protocol}, {protocol.runs} runs; full data {full:.2f} %): "
          + ", ".join(f"{k.upper()} {s[k]['mean']:.3f} +- {s[k]['std']:.3f}" for k in ("lrs", "ars"))
          + "; " + ", ".join(f"{k} {s[k]['mean']:+.2f} +- {s[k]['std']:.2f} points"
                             for k in ("hlr", "ior", "gain_aug", "gain_noaug")))
    return s


def _models(text: str, flag: str) -> list[str]:
    """The networks of a comma-separated list, every name checked before any work."""
    from .nets import list_nets

    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise ConfigError(f"{flag} is empty; give at least one network, e.g. {flag} convnet")
    unknown = [m for m in models if m.lower() not in list_nets()]
    if unknown:
        raise ConfigError(f"{flag}: unknown network(s) {', '.join(map(repr, unknown))}; valid choices: {', '.join(list_nets())}")
    return models


def format_table(results) -> str:
    head = f"{'model':<14}{'accuracy (%)':>18}{'runs':>6}{'train s/run':>13}{'train GFLOPs':>14}"
    lines = [head, "-" * len(head)]
    for r in results:
        acc = f"{r.mean:.2f} +- {r.std:.2f}"
        lines.append(f"{r.model:<14}{acc:>18}{r.runs:>6}{r.train_seconds / r.runs:>13.1f}{r.flops.get('train_total', 0) / 1e9:>14.1f}")
    return "\n".join(lines)


def cmd_baseline(a: argparse.Namespace) -> int:
    from .baseline import DEFAULT_EPOCHS, full_data_baseline
    from .evaluate import DEFAULT_LR
    from .fileio import write_json
    from .run import run_name

    dest = check_out_file(Path(a.out) if a.out else Path("runs") / f"baseline-{run_name(a.dataset)}-{a.model}.json",
                          kind="a JSON file", replaces=is_json)
    res = full_data_baseline(
        a.dataset, model=a.model, epochs=a.epochs if a.epochs is not None else DEFAULT_EPOCHS, runs=a.runs,
        lr=a.lr if a.lr is not None else DEFAULT_LR, aug=a.aug, seed=a.seed, model_args=dict(a.model_arg),
        data_root=a.data_root, device=a.device or "auto", progress=not a.no_progress,
    )
    print(res.table())
    write_json(dest, res.to_dict())
    print(f"saved {dest}")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from .report import save_comparison
    from .run.folder import GRID_INIT, SHOW

    target = Path(a.run)
    syn = _load_set(a.run)
    if a.out:
        dest = Path(a.out)
    else:
        dest = target / SHOW if target.is_dir() else target.with_suffix(".png")
    init = target / GRID_INIT if target.is_dir() and (target / GRID_INIT).exists() else None
    save_comparison(syn, check_out_file(dest, kind="a PNG image", replaces=is_png), init_grid=init)
    print(dest)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .interop import write_set

    print(write_set(_load_set(a.run), a.dest, a.format))
    return 0


def cmd_datasets(a: argparse.Namespace) -> int:
    from .data import list_datasets

    rows = list_datasets(a.data_root)
    for r in rows:
        mark = "present" if r["present"] else "missing"
        print(f"{r['name']:<15}{mark:<9}{r.get('description', '')}")
        print(f"{'':<15}{'':<9}{r.get('path', r.get('folder', ''))}")
        if not r["present"] and r.get("layout"):  # where the files go
            print(f"{'':<15}{'':<9}layout: {r['layout']}")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_nas(a: argparse.Namespace) -> int:
    from .apps.nas import architecture_search
    from .data import load_dataset
    from .fileio import write_json

    syn = _load_set(a.run)
    target = Path(a.run)
    if a.out:
        dest = Path(a.out)
    else:
        dest = target / "nas.json" if target.is_dir() else target.parent / f"{target.stem}.nas.json"
    check_out_file(dest, kind="a JSON file", replaces=is_json)
    splits = load_dataset(syn.spec.name, _data_root(a, syn), image_size=syn.spec.im_size, progress=not a.no_progress)
    res = architecture_search(
        syn, splits, variants=a.variants, real_subset=a.real_subset, val_subset=a.val_subset, epochs_syn=a.epochs_syn,
        epochs_real=a.epochs_real, runs=a.runs, aug=a.aug, aug_real=a.aug_real, seed=a.seed,
        device=a.device or "auto", progress=not a.no_progress, log=_stderr,
    )
    print(res.table())
    write_json(dest, res.to_dict())
    print(f"saved {dest}")
    return 0


def cmd_continual(a: argparse.Namespace) -> int:
    from .apps.continual import continual_learning
    from .fileio import write_json
    from .methods import available_methods

    is_method = a.memory in available_methods()
    dataset = a.dataset or (None if not is_method else "mnist-5k")
    ipc = a.ipc if a.ipc is not None else (10 if is_method else None)
    if a.out:
        check_out_file(a.out, kind="a JSON file", replaces=is_json)
    res = continual_learning(
        dataset, steps=a.steps, ipc=ipc, memory=a.memory, preset=a.preset, epochs=a.epochs, runs=a.runs,
        seed=a.seed, data_root=a.data_root, device=a.device or "auto",
        distill_options={"iterations": a.iterations} if a.iterations is not None else None,
        progress=not a.no_progress, log=_stderr,
    )
    print(res.table())
    if a.out:
        dest = Path(a.out)
    else:
        mem = a.memory if is_method else Path(a.memory).name.replace(".safetensors", "")
        from .run import run_name

        dest = Path("runs") / f"continual-{run_name(res.dataset)}-{mem}-{res.steps}steps-ipc{res.ipc}.json"
    write_json(dest, res.to_dict())
    print(f"saved {dest}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(a.runs, check_out_file(a.out, kind="an HTML file", replaces=is_html), title=a.title))
    return 0


COMMANDS = {
    "distill": cmd_distill,
    "experts": cmd_experts,
    "difficulty": cmd_difficulty,
    "teacher": cmd_teacher,
    "evaluate": cmd_evaluate,
    "baseline": cmd_baseline,
    "show": cmd_show,
    "export": cmd_export,
    "import": cmd_import,
    "datasets": cmd_datasets,
    "nas": cmd_nas,
    "continual": cmd_continual,
    "report": cmd_report,
}


def _bounded_by_memory(a: argparse.Namespace) -> bool:
    """A trajectory-matching distillation (a method that needs experts): its unroll, not the speed
    of allocation, is what limits it, and the tuned allocator keeps freed blocks resident. Measured
    (benchmarks/speed.py --mtt-memory, MTT CIFAR-10 IPC 10, plain unroll, 30 steps): 13,181 MiB peak
    tuned, 10,600 MiB with glibc's defaults (the reference code's 11.8 GB), about 10 % slower."""
    if a.command != "distill" or not getattr(a, "method", None):
        return False
    from .methods import get_method

    try:
        return "experts" in get_method(a.method).requires
    except DatadistillError:  # an unknown method: said by the command itself
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _bounded_by_memory(args):
        tune_allocator()  # 2x faster CPU training steps on glibc; see perf.py
    try:
        rc = COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here
        return rc
    except DatadistillError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `datadistill datasets | head`: the reader left; nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 1
    except OSError as e:  # the place, not the input: a full disk, no permission, a vanished file
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{(e.strerror or str(e)).lower()}; check the path, its permissions and the free "
              "space, then run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    raise SystemExit(main())
