"""The `datadistill` command. Thin: parses arguments, calls the API, prints results.

Errors the user can fix are printed as one line (`error: ...`) with exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from .errors import ConfigError, DatadistillError
from .perf import tune_allocator


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--data-root", default=None, help="folder with <dataset>/ files (default: $DATADISTILL_DATA or ~/.cache/datadistill)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="datadistill", description="Dataset distillation: condense a labelled image dataset into a few synthetic images per class.")
    from ._version import __version__

    ap.add_argument("--version", action="version", version=f"datadistill {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="distill a dataset into a synthetic set (resumes an existing --out folder)")
    p.add_argument("--method", default="dm", help="dm (default); see README for the others")
    p.add_argument("--dataset", default="mnist-5k", help="mnist-5k (default, offline), mnist, fashion_mnist, cifar10, cifar100, svhn, folder:PATH")
    p.add_argument("--ipc", type=int, default=10, help="images per class (default 10)")
    p.add_argument("--preset", default="quick", choices=["quick", "paper"], help="quick (minutes on a CPU, default) or paper (the paper's protocol)")
    p.add_argument("--init", choices=["real", "noise"], default=None, help="start from random real images or Gaussian noise")
    p.add_argument("--iterations", type=int, default=None, help="outer iterations (overrides the preset)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default 0)")
    p.add_argument("--model", default=None, help="network used for distillation (default convnet)")
    p.add_argument("--lr-img", type=float, default=None, help="learning rate of the synthetic images")
    p.add_argument("--batch-real", type=int, default=None, help="real images per class per iteration")
    p.add_argument("--image-size", type=int, default=None, help="resize folder: datasets to this size")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")
    p.add_argument("--val-every", type=int, default=None, help="iterations between validation-accuracy checks (0: only at the end)")
    p.add_argument("--eval-runs", type=int, default=None, help="evaluation runs at the end (0 skips evaluation)")
    p.add_argument("--eval-epochs", type=int, default=None, help="epochs per evaluation run")
    p.add_argument("--eval-models", default=None, help="comma-separated networks to evaluate on (default convnet)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="fp32 (default) or bf16: autocast of the loss's forward passes (dm and datadam only)")
    p.add_argument("--eval-precision", choices=["fp32", "bf16"], default=None,
                   help="fp32 (default) or bf16: autocast of the evaluation's forward passes")
    p.add_argument("--eval-compile", action="store_true", default=None,
                   help="torch.compile the evaluation's training steps (off by default: changes rounding and "
                        "compiles first; pays for long trainings, docs/speed.md)")
    p.add_argument("--eval-channels-last", action="store_true", default=None,
                   help="train the evaluation's networks in the channels-last memory layout, one at a time "
                        "(off by default; slower on the CPUs measured, docs/speed.md)")
    p.add_argument("--dsa-digit-rule", action=argparse.BooleanOptionalAction, default=None,
                   help="drop flip from DSA on digit datasets (mnist/svhn names; default); --no-dsa-digit-rule: the strategy as given, as the reference code")
    p.add_argument("--opt", type=_kv, action="append", default=[], metavar="KEY=VALUE", help="a method-specific option (repeatable)")
    p.add_argument("--experts", default=None, metavar="DIR", help="expert trajectories for --method mtt or pad (made by `datadistill experts`)")
    p.add_argument("--zca", action=argparse.BooleanOptionalAction, default=None,
                   help="ZCA-whiten the training images before distilling (default: the preset's)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<method>-ipc<ipc>)")
    _common(p)

    p = sub.add_parser("experts", help="train expert trajectories for trajectory matching (mtt); resumes an existing --out folder")
    p.add_argument("--dataset", required=True, help="mnist-5k, mnist, fashion_mnist, cifar10, cifar100, svhn, folder:PATH")
    p.add_argument("--preset", default="quick", choices=["quick", "paper"],
                   help="quick (a few short experts, default) or paper (100 experts of 50 epochs)")
    p.add_argument("--experts", type=int, default=None, dest="num_experts", metavar="N", help="number of experts (overrides the preset)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per expert (overrides the preset)")
    p.add_argument("--model", default=None, help="network (default convnet)")
    p.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a network variant, e.g. width=64 (repeatable)")
    p.add_argument("--zca", action=argparse.BooleanOptionalAction, default=None,
                   help="train on ZCA-whitened images (default: the preset's; CIFAR on)")
    p.add_argument("--lr-teacher", type=float, default=None, help="experts' SGD learning rate (default 0.01)")
    p.add_argument("--batch-size", type=int, default=None, help="experts' batch size (default 256)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0); expert i depends only on it and i")
    p.add_argument("--curriculum", choices=["none", "el2n"], default=None,
                   help="el2n: PAD's data scheduler (easy samples first by EL2N, harder ones added, easiest removed "
                        "later; presets/pad.yaml); none (default): all samples every epoch, as MTT")
    p.add_argument("--init-ratio", type=float, default=None, help="curriculum: share of each class (easiest) at epoch 0 (default 0.75)")
    p.add_argument("--add-end-epoch", type=int, default=None, help="curriculum: epoch by which all samples are in (default 20)")
    p.add_argument("--rm-epoch-first", type=int, default=None, help="curriculum: after this epoch the easiest --rm-ratio-first go (default 40)")
    p.add_argument("--rm-ratio-first", type=float, default=None, dest="rm_easy_ratio_first", help="curriculum: default 0.1")
    p.add_argument("--rm-epoch-second", type=int, default=None, help="curriculum: after this epoch the easiest --rm-ratio-second go (default 60)")
    p.add_argument("--rm-ratio-second", type=float, default=None, dest="rm_easy_ratio_second", help="curriculum: default 0.2")
    p.add_argument("--scores", default=None, metavar="FILE",
                   help="curriculum: EL2N scores file (from `datadistill difficulty`; computed and written there if absent; "
                        "default: computed into the experts folder)")
    p.add_argument("--score-nets", type=int, default=None, help="curriculum: EL2N networks averaged (default: the preset's)")
    p.add_argument("--score-epochs", type=int, default=None, help="curriculum: epochs before EL2N scoring (default: the preset's)")
    p.add_argument("--out", required=True, help="experts folder")
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
    p.add_argument("--runs", type=int, default=5, help="training runs per network (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 1000 with DSA, 300 without)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the set's learned lr, else 0.01)")
    p.add_argument("--aug", choices=["dsa", "dc", "none"], default="dsa",
                   help="training augmentation: dsa (default), dc (the DC paper's, MNIST family only) or none")
    p.add_argument("--dsa-digit-rule", action=argparse.BooleanOptionalAction, default=True,
                   help="drop flip from DSA on digit datasets (mnist/svhn names; default); --no-dsa-digit-rule: the strategy as given, as the reference code")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["test", "val"], default="test", help="test (default) or the validation split")
    p.add_argument("--gain", action="store_true",
                   help="also evaluate a random real subset of the same size and class balance, and report the gain over it")
    p.add_argument("--batched", action=argparse.BooleanOptionalAction, default=None,
                   help="train a network's runs together (default: on a GPU, when there are several and the network "
                        "has no batch norm; on a CPU they train faster one after another); --no-batched: never")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default) or bf16: autocast of the forward passes (training and test)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each training step's forward and loss (off by default: changes rounding and "
                        "compiles first; pays for long trainings, docs/speed.md)")
    p.add_argument("--channels-last", action="store_true",
                   help="train in the channels-last memory layout, one run at a time (off by default; slower on "
                        "the CPUs measured, docs/speed.md)")
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

    p = sub.add_parser("export", help="export a synthetic set as images usable anywhere")
    p.add_argument("run", help="a run folder or a .safetensors synthetic set")
    p.add_argument("dest", help="output folder (imagefolder) or PNG file (grid)")
    p.add_argument("--format", choices=["imagefolder", "grid"], default="imagefolder")

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
    from .config import resolve_config
    from .runner import default_out, run_distillation

    ev = {"runs": a.eval_runs, "epochs": a.eval_epochs, "precision": a.eval_precision, "compile": a.eval_compile,
          "channels_last": a.eval_channels_last, "dsa_digit_rule": a.dsa_digit_rule}
    if a.eval_models:
        ev["models"] = [m.strip() for m in a.eval_models.split(",") if m.strip()]
    cfg = resolve_config(
        a.method, a.dataset, a.ipc, a.preset, init=a.init, iterations=a.iterations, seed=a.seed,
        model=a.model, lr_img=a.lr_img, batch_real=a.batch_real, image_size=a.image_size,
        checkpoint_every=a.checkpoint_every, val_every=a.val_every, device=a.device, data_root=a.data_root,
        method_args=dict(a.opt) or None, eval=ev, experts=a.experts, zca=a.zca, precision=a.precision,
        dsa_digit_rule=a.dsa_digit_rule,
    )
    out = Path(a.out) if a.out else default_out(cfg)
    res = run_distillation(cfg, out, progress=not a.no_progress)  # joins torchrun's process group, if any
    from . import dist

    if not dist.is_main():  # the other processes of a torchrun launch hold the same set
        return 0
    print(f"synthetic set: {out / 'synset.safetensors'} ({len(res.synset)} images); "
          f"distillation {res.distill_seconds:.0f} s, peak memory {res.peak_memory_mb:.0f} MiB")
    for ev_res in res.evals:
        print(f"test accuracy {ev_res.summary()}")
    return 0


def cmd_experts(a: argparse.Namespace) -> int:
    from . import dist
    from .experts import expert_settings, train_experts

    settings = expert_settings(
        a.dataset, a.preset, num_experts=a.num_experts, epochs=a.epochs, model=a.model,
        model_args=dict(a.model_arg) or None, zca=a.zca, lr_teacher=a.lr_teacher, batch_size=a.batch_size, seed=a.seed,
        curriculum=a.curriculum, init_ratio=a.init_ratio, add_end_epoch=a.add_end_epoch,
        rm_epoch_first=a.rm_epoch_first, rm_easy_ratio_first=a.rm_easy_ratio_first, rm_epoch_second=a.rm_epoch_second,
        rm_easy_ratio_second=a.rm_easy_ratio_second, scores=a.scores, score_nets=a.score_nets,
        score_epochs=a.score_epochs,
    )
    report = train_experts(settings, a.out, data_root=a.data_root, device=a.device or "auto", progress=not a.no_progress)
    if dist.is_main():  # under torchrun every process returns the report; one prints it
        print(report.summary())
    return 0


def cmd_difficulty(a: argparse.Namespace) -> int:
    from .data import load_dataset
    from .difficulty import ensure_scores
    from .experts import expert_settings
    from .rng import resolve_device

    settings = expert_settings(a.dataset, a.preset, curriculum="el2n", score_nets=a.nets, score_epochs=a.epochs,
                               model=a.model, model_args=dict(a.model_arg) or None, batch_size=a.batch_size, seed=a.seed)
    data = load_dataset(a.dataset, a.data_root, progress=not a.no_progress)
    scores, computed = ensure_scores(a.out, data.train, settings.score_settings(), device=resolve_device(a.device or "auto"),
                                     progress=not a.no_progress, log=_stderr)
    v = scores.values
    what = f"computed in {scores.seconds:.0f} s" if computed else "already there (same data and settings)"
    print(f"{len(v)} EL2N scores of {a.dataset} ({scores.settings['num_nets']} networks x {scores.settings['epochs']} "
          f"epochs) in {a.out}, {what}: mean {float(v.mean()):.3f}, min {float(v.min()):.3f}, max {float(v.max()):.3f}")
    return 0


def _load_set(path: str):
    from .synset import SyntheticSet

    return SyntheticSet.load(path)


def _data_root(a: argparse.Namespace, syn) -> str | None:
    if a.data_root:
        return a.data_root
    if os.environ.get("DATADISTILL_DATA"):
        return None
    return (syn.meta.get("config") or {}).get("data_root")


def cmd_evaluate(a: argparse.Namespace) -> int:
    from . import dist
    from .data import load_dataset
    from .evaluate import evaluate
    from .fileio import write_json
    from .rng import resolve_device

    syn = _load_set(a.run)
    # Under torchrun each process trains its share of every network's runs (evaluate gathers them).
    device = dist.process_device(resolve_device(a.device or "auto"))  # under torchrun: one GPU per process
    dist.init_from_env(device)
    main_process = dist.is_main()
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models:
        raise ConfigError("--models is empty; give at least one network, e.g. --models convnet")
    splits = load_dataset(syn.spec.name, _data_root(a, syn), image_size=syn.spec.im_size, progress=not a.no_progress)
    test = splits.val if a.split == "val" else splits.test
    results = []
    for m in models:
        r = evaluate(syn, model=m, runs=a.runs, epochs=a.epochs, lr=a.lr, aug=a.aug, test=test, split=a.split,
                     device=device, seed=a.seed, progress=not a.no_progress,
                     gain=a.gain, train=splits.train if a.gain else None,
                     batched="auto" if a.batched is None else a.batched, precision=a.precision,
                     compile=a.compile, channels_last=a.channels_last, dsa_digit_rule=a.dsa_digit_rule)
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
    target = Path(a.run)
    dest = (target if target.is_dir() else target.parent) / ("evaluate.json" if target.is_dir() else f"{target.stem}.evaluate.json")
    write_json(dest, [r.to_dict() for r in results])
    print(f"saved {dest}")
    return 0


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

    res = full_data_baseline(
        a.dataset, model=a.model, epochs=a.epochs if a.epochs is not None else DEFAULT_EPOCHS, runs=a.runs,
        lr=a.lr if a.lr is not None else DEFAULT_LR, aug=a.aug, seed=a.seed, model_args=dict(a.model_arg),
        data_root=a.data_root, device=a.device or "auto", progress=not a.no_progress,
    )
    print(res.table())
    name = a.dataset.replace("folder:", "folder-").replace("/", "_").strip("_.")
    dest = Path(a.out) if a.out else Path("runs") / f"baseline-{name}-{a.model}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest, res.to_dict())
    print(f"saved {dest}")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from .report import save_comparison

    target = Path(a.run)
    syn = _load_set(a.run)
    if a.out:
        dest = Path(a.out)
    else:
        dest = target / "show.png" if target.is_dir() else target.with_suffix(".png")
    init = target / "grid_init.png" if target.is_dir() and (target / "grid_init.png").exists() else None
    save_comparison(syn, dest, init_grid=init)
    print(dest)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    syn = _load_set(a.run)
    if a.format == "grid":
        print(syn.save_grid(a.dest))
    else:
        out = syn.export_imagefolder(a.dest)
        print(f"{len(syn)} images in {syn.spec.num_classes} class folders under {out}")
    return 0


def cmd_datasets(a: argparse.Namespace) -> int:
    from .data import list_datasets

    rows = list_datasets(a.data_root)
    for r in rows:
        mark = "present" if r["present"] else "missing"
        print(f"{r['name']:<15}{mark:<9}{r.get('description', '')}")
        print(f"{'':<15}{'':<9}{r.get('path', r.get('folder', ''))}")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_nas(a: argparse.Namespace) -> int:
    from .apps.nas import architecture_search
    from .data import load_dataset
    from .fileio import write_json

    syn = _load_set(a.run)
    splits = load_dataset(syn.spec.name, _data_root(a, syn), image_size=syn.spec.im_size, progress=not a.no_progress)
    res = architecture_search(
        syn, splits, variants=a.variants, real_subset=a.real_subset, val_subset=a.val_subset, epochs_syn=a.epochs_syn,
        epochs_real=a.epochs_real, runs=a.runs, aug=a.aug, aug_real=a.aug_real, seed=a.seed,
        device=a.device or "auto", progress=not a.no_progress, log=_stderr,
    )
    print(res.table())
    target = Path(a.run)
    if a.out:
        dest = Path(a.out)
    else:
        dest = target / "nas.json" if target.is_dir() else target.parent / f"{target.stem}.nas.json"
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
        name = res.dataset.replace("folder:", "folder-").replace("/", "_").strip("_.")
        dest = Path("runs") / f"continual-{name}-{mem}-{res.steps}steps-ipc{res.ipc}.json"
    write_json(dest, res.to_dict())
    print(f"saved {dest}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(a.runs, a.out, title=a.title))
    return 0


COMMANDS = {
    "distill": cmd_distill,
    "experts": cmd_experts,
    "difficulty": cmd_difficulty,
    "evaluate": cmd_evaluate,
    "baseline": cmd_baseline,
    "show": cmd_show,
    "export": cmd_export,
    "datasets": cmd_datasets,
    "nas": cmd_nas,
    "continual": cmd_continual,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()  # 2x faster CPU training steps on glibc; see perf.py
    try:
        return COMMANDS[args.command](args)
    except DatadistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
