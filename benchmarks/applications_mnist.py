"""Applications on MNIST, IPC 10: the architecture-search proxy of a DM set, the same set on six
architectures, and a 5-step class-incremental learning curve with DM vs random vs herding memories.

    python benchmarks/applications_mnist.py                  # all three parts
    python benchmarks/applications_mnist.py --part nas       # only the NAS proxy
    python benchmarks/applications_mnist.py --part crossarch # only the cross-architecture table
    python benchmarks/applications_mnist.py --part continual # only the continual-learning curves

Writes benchmarks/results/applications_mnist.json (updated after each part, so a part can be rerun
alone) and, for the NAS part, the DM run folder runs/bench-apps-mnist-dm-ipc10 (resumable) with its
nas.json. Data: $DATADISTILL_DATA, else ../shared/data.

Sizing (per-image training costs measured on the 2-core CPU of the development machine, one
thread, while other jobs ran: the default ConvNet 6.3 ms per image forward + backward; the 15
networks of the `default` family together 123 ms; DSA adds about 40%):

NAS part, about 35-40 minutes on that CPU:
  - DM, quick preset (600 iterations, 64 real images per class): about 11 minutes.
  - synthetic side: the 100 images x 50 epochs with DSA (not the quick protocol's 300:
    that alone would take about 85 minutes for 15 networks) -> about 15 minutes;
  - real side: a stratified subset of 100 images per class (1,000 images) x 5 epochs, no
    augmentation -> about 10 minutes. The whole training split (54,000 images) would cost 54x
    more per epoch; the JSON also gives the real side's seconds extrapolated linearly to it;
  - every network tested on a stratified 100 images per class of the validation split (1,000 of
    6,000; all 6,000 would add about 8 minutes of testing).
  Both sides train briefly (50 and 20 SGD steps at batch 256), so the "real" ranking is itself that
  of short training on 1,000 real images: the correlation says how well the set stands in for that.
  Raise --nas-epochs-syn / --nas-epochs-real / --nas-real-subset on a faster machine.

Cross-architecture part: the NAS part's DM set (reloaded from its run folder) trained from scratch
on convnet, lenet, alexnet, vgg11, resnet18 and mlp, 3 runs of the quick protocol each (300 epochs,
DSA). ResNet-18 dominates: about 6x the ConvNet's FLOPs per image and batch norm (its runs train one
after another), 16 minutes a run on one thread beside another benchmark (AlexNet 7, VGG-11 6); the
part took 68 minutes with --crossarch-runs 2 (about 100 with the default 3).

Continual part, 43 minutes measured (estimated below at about an hour): 5 steps of 2 classes; per step, DM (quick preset,
600 iterations on the step's 2 classes: about 2.5 minutes), random (instant) or herding (the quick
preset's 1-epoch embedding network on the step's ~10,800 images: about 1.5 minutes); then a ConvNet
trained from scratch on the memory (20, 40, ..., 100 images) with the quick evaluation protocol
(300 epochs, DSA, lr 0.01, 1 run): about 13 minutes per memory over the 5 steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, REPO, RESULTS, command_line, machine, update_keys  # noqa: E402

NAME = "applications_mnist"
MEMORIES = ("dm", "random", "herding")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


DM_RUN = REPO / "runs" / "bench-apps-mnist-dm-ipc10"


def dm_run(args, data):
    """The DM set (MNIST IPC 10, quick preset) the NAS and cross-architecture parts use: distilled
    into DM_RUN, or resumed / reloaded from there. Returns (config, run result, wall seconds)."""
    from datadistill.config import resolve_config
    from datadistill.run import run_distillation

    cfg = resolve_config("dm", "mnist", 10, "quick", data_root=args.data_root, device=args.device, eval={"runs": 0})
    t0 = time.perf_counter()
    run = run_distillation(cfg, DM_RUN, data=data, progress=False, log=log)
    return cfg, run, time.perf_counter() - t0


def distillation_info(cfg, run, wall: float) -> dict:
    return {"method": "dm", "preset": "quick", "iterations": cfg.iterations, "run": str(DM_RUN),
            "distill_seconds": run.distill_seconds, "wall_seconds": wall, "resumed_from": run.resumed_from}


def nas_part(args, data) -> dict:
    from datadistill.apps.nas import architecture_search
    from datadistill.fileio import write_json

    cfg, run, distill_wall = dm_run(args, data)
    res = architecture_search(
        run.synset, data, variants=args.nas_family, real_subset=args.nas_real_subset, val_subset=args.nas_val_subset,
        epochs_syn=args.nas_epochs_syn, epochs_real=args.nas_epochs_real, runs=args.nas_runs, aug="dsa",
        aug_real="none", seed=0, device=args.device, log=log,
    )
    print(res.table(), file=sys.stderr)
    doc = res.to_dict()
    write_json(DM_RUN / "nas.json", doc)
    full = len(data.train)
    doc["extrapolated_full_real_seconds"] = res.real_seconds * full / max(1, res.real_images)
    doc["extrapolated_note"] = (f"real-side seconds scaled linearly from {res.real_images} to the {full} images of the "
                                "training split at the same epochs (an estimate, not a measurement)")
    doc["distillation"] = distillation_info(cfg, run, distill_wall)
    return doc


def crossarch_part(args, data) -> dict:
    """The DM set evaluated on each network of --models under its quick evaluation protocol (300
    epochs, DSA, lr 0.01), --crossarch-runs runs each (batch-norm-free networks trained together)."""
    from datadistill.evaluate import evaluate

    cfg, run, distill_wall = dm_run(args, data)
    rows = []
    for m in args.models:
        log(f"cross-architecture: {m}, {args.crossarch_runs} runs of {cfg.eval.resolved_epochs()} epochs")
        r = evaluate(run.synset, cfg.eval, model=m, runs=args.crossarch_runs, epochs=cfg.eval.resolved_epochs(),
                     test=data.test, device=args.device, seed=0, progress=False)
        log(r.summary())
        rows.append(r.to_dict())
    return {"models": rows, "distillation": distillation_info(cfg, run, distill_wall)}


def continual_part(args, data) -> dict:
    from datadistill.apps.continual import continual_learning

    out = {}
    for memory in args.memories:
        log(f"continual learning, {args.steps} steps, memory {memory}")
        t0 = time.perf_counter()
        res = continual_learning(
            "mnist", steps=args.steps, ipc=10, memory=memory, preset="quick", epochs=args.continual_epochs,
            runs=args.continual_runs, data=data, device=args.device, seed=0, log=log,
        )
        print(res.table(), file=sys.stderr)
        out[memory] = {**res.to_dict(), "wall_seconds": time.perf_counter() - t0}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["nas", "crossarch", "continual", "all"], default="all")
    ap.add_argument("--models", default="convnet,lenet,alexnet,vgg11,resnet18,mlp",
                    type=lambda s: [m for m in s.split(",") if m], help="cross-architecture networks")
    ap.add_argument("--crossarch-runs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=os.environ.get("DATADISTILL_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--nas-family", default="default", choices=["default", "small"])
    ap.add_argument("--nas-real-subset", type=int, default=100, help="real images per class (default 100)")
    ap.add_argument("--nas-val-subset", type=int, default=100, help="validation images per class (default 100)")
    ap.add_argument("--nas-epochs-syn", type=int, default=50)
    ap.add_argument("--nas-epochs-real", type=int, default=5)
    ap.add_argument("--nas-runs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--memories", default=",".join(MEMORIES), type=lambda s: [m for m in s.split(",") if m])
    ap.add_argument("--continual-epochs", type=int, default=None, help="default: the quick protocol's 300")
    ap.add_argument("--continual-runs", type=int, default=None, help="default: the quick protocol's 1")
    args = ap.parse_args(argv[1:])

    from datadistill.data import load_dataset

    RESULTS.mkdir(parents=True, exist_ok=True)
    dest = RESULTS / f"{NAME}.json"
    data = load_dataset("mnist", args.data_root, progress=False)
    parts = ["nas", "crossarch", "continual"] if args.part == "all" else [args.part]
    run_part = {"nas": nas_part, "crossarch": crossarch_part, "continual": continual_part}
    this_machine = machine()
    for part in parts:
        t0 = time.perf_counter()
        result = run_part[part](args, data)
        wall = time.perf_counter() - t0
        # each part carries its own provenance; the file is re-read first, so parts run by
        # different processes (--part nas and --part continual side by side) all land in it
        run = {"command": command_line(argv), "date": time.strftime("%Y-%m-%d %H:%M"), "machine": this_machine}
        update_keys(dest, {"benchmark": NAME, part: result, part + "_wall_seconds": wall, part + "_run": run})
        log(f"{part}: {wall / 60:.1f} minutes; wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
