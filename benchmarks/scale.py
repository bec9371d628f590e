"""Data at scale (issue 19): distillation cost and memory as the dataset grows from 10,000 to
1,281,167 images (ImageNet-1K's training set), with the images out of core.

For each size N, generated data in the downsampled-ImageNet format (``imagenet32``: ten
``train_data_batch_*.npz`` of N/10 images, 1000 classes, and a ``val_data.npz`` of 50,000) is
written under --scale-root (default /work/scale_data, not the repository), then, each in its own
process so that its peak resident memory (ru_maxrss) is its own:

- ``generate``: the files (once; not measured);
- ``build``: the first load, which packs the image store (cache build seconds, images/s);
- ``dm`` / ``dsa``: `run.setup.prepare` out of core, then timed outer iterations (the first one
  is a warm-up and not counted): seconds per iteration; DM at IPC 1 with 8 real images per class,
  DSA with one outer and one inner step (the per-iteration work is the same at every N: what
  must not grow with N is the time of drawing the class batches out of the store);
- ``draw``: the data side alone: the 1000 class batches of an iteration and a random minibatch
  of 256, timed without any network (the networks' compute is what the other processes on a
  shared machine disturb);
- ``eval``: one evaluation epoch: a fresh ConvNet trained one epoch on a 1000-image set, then its
  test pass over the 50,000 test images read from the store;
- ``rded``: RDED (issue 20) at IPC 10 (fewer when the smallest class has fewer training images) with the paper's
  selection (300 candidates per class, 5 crops each, factor 1 at 32 px), every class, then the
  relabelling with soft labels stored: distillation seconds, the teacher's share of them, peak
  RSS and the labels' bytes. The teacher is a ConvNet-BN (width 32) at its seeded initialization,
  imported with `import_teacher`: the data is random, so only the cost means anything, and the
  cost of scoring a crop does not depend on the weights. No accuracy.

Networks: ConvNet width 32 (depth 3 at 32x32), 1 thread. Targets (the issue's): seconds per DM
iteration within 10 % across the sizes, and peak RSS under 4 GB at 1.28M images, where the same
data as float32 in memory would be 15.7 GB.

    python benchmarks/scale.py                       all sizes (hours on one CPU thread at 1.28M)
    python benchmarks/scale.py --sizes 10000,100000  some of them
    python benchmarks/scale.py --smoke               2,000 images in a temporary folder (the code path)
    python benchmarks/scale.py --resume              keep the rows already in the results file
    python benchmarks/scale.py --plot                results/scale.png from the JSON (also drawn after a run)
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import check_flags, redraw, results_file, rss_mb, run_jobs, save_figure, timed_steps

NAME = "scale"
SIZES = (10_000, 100_000, 1_281_167)
TEST_IMAGES = 50_000
NET = {"width": 32}
DM_ITERS = 4  # the first is a warm-up
DSA_ITERS = 3
DRAW_ROUNDS = 7


def _arg(argv: list[str], flag: str, default: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv else default


def generate(folder: Path, n: int, test: int, side: int = 32, seed: int = 0) -> dict:
    """Write the downsampled-ImageNet files of n training images (ten batches) and `test` test
    images into `folder` unless a complete set is there; returns what it did."""
    import numpy as np

    done = folder / "complete"
    if done.is_file() and done.read_text() == f"{n} {test} {side}":
        return {"generated": False}
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, n, 11).astype(int)
    for i in range(11):
        k = int(bounds[i + 1] - bounds[i]) if i < 10 else test
        labels = (np.arange(k) + (bounds[i] if i < 10 else 0)) % 1000 + 1  # every class, 1-based
        data = rng.integers(0, 256, (k, 3 * side * side), dtype=np.uint8)
        name = f"train_data_batch_{i + 1}.npz" if i < 10 else "val_data.npz"
        extra = {"mean": data.mean(0)} if i < 10 else {}
        np.savez(folder / name, data=data, labels=labels, **extra)
        del data
    done.write_text(f"{n} {test} {side}")
    return {"generated": True, "generate_seconds": time.perf_counter() - t0}


def _root(job: dict) -> Path:
    return Path(job["scale_root"]) / f"n{job['n']}"


def _cfg(job: dict, method: str, **over):
    from datadistill.config import resolve_config

    args = {"inner_loop": 1, "outer_loop": 1} if method == "dsa" else {}
    return resolve_config(method, "imagenet32", 1, "quick", device="cpu", data_root=str(_root(job)), storage="disk",
                          model_args=dict(NET), batch_real=8, eval={"runs": 0}, method_args=args, **over)


def job_generate(job: dict) -> dict:
    return {**generate(_root(job) / "imagenet32", job["n"], job["test"]), "peak_rss_mb": rss_mb()}


def job_build(job: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(1)
    out: dict = {}
    shutil.rmtree(_root(job) / "imagenet32" / ".cache", ignore_errors=True)
    from datadistill.data import load_dataset

    t0 = time.perf_counter()
    data = load_dataset("imagenet32", _root(job), storage="disk", progress=False, workers=job.get("workers", 1))
    seconds = time.perf_counter() - t0
    cache = next((_root(job) / "imagenet32" / ".cache").glob("imagenet32-*"))
    size = sum(p.stat().st_size for p in cache.iterdir())
    total = job["n"] + job["test"]
    return {**out, "cache_build_seconds": seconds, "images_per_second": total / seconds, "cache_bytes": size,
            "train_images": len(data.train), "float32_bytes_in_memory": total * 3 * 32 * 32 * 4,
            "workers": job.get("workers", 1), "peak_rss_mb": rss_mb(),
            "decoding_workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _iterations(job: dict, method: str, iters: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from datadistill.run import prepare
    from datadistill.run.setup import load_data

    cfg = _cfg(job, method)
    t0 = time.perf_counter()
    data = load_data(cfg, progress=False)
    run = prepare(cfg, data=data, progress=False)
    setup = time.perf_counter() - t0
    times = timed_steps(run.distiller, 0, iters, torch.device("cpu"))
    timed = times[1:]
    return {"setup_seconds": setup, "iteration_seconds": times, "seconds_per_iteration": sum(timed) / len(timed),
            "min_seconds_per_iteration": min(timed),
            "out_of_core": data.train.out_of_core, "peak_rss_mb": rss_mb()}


def job_draw(job: dict) -> dict:
    """The data side alone, without the networks' compute (which the other processes on a shared
    machine disturb far more): per round, one real batch of 8 images for each of the 1000
    classes (what a DM / DSA iteration draws from the store) and one random minibatch of 256."""
    import torch

    torch.set_num_threads(1)
    from datadistill.run.setup import load_data

    cfg = _cfg(job, "dm")
    data = load_data(cfg, progress=False)
    train = data.train
    g = torch.Generator().manual_seed(0)
    rounds, minibatch = [], []
    train.indices_per_class  # noqa: B018 (computed once, as the distiller does before its first iteration)
    for _ in range(DRAW_ROUNDS):
        t = time.perf_counter()
        for c in range(data.spec.num_classes):
            train.class_batch(c, 8, g)
        rounds.append(time.perf_counter() - t)
        t = time.perf_counter()
        train.images[torch.randperm(len(train), generator=g)[:256]]
        minibatch.append(time.perf_counter() - t)
    return {"class_batches_seconds": rounds, "class_batches_median_seconds": sorted(rounds)[len(rounds) // 2],
            "minibatch_256_median_seconds": sorted(minibatch)[len(minibatch) // 2], "peak_rss_mb": rss_mb()}


def job_dm(job: dict) -> dict:
    return _iterations(job, "dm", DM_ITERS)


def job_dsa(job: dict) -> dict:
    return _iterations(job, "dsa", DSA_ITERS)


def job_eval(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from datadistill.methods import initial_synset
    from datadistill.nets import make_net
    from datadistill.rng import make_generator
    from datadistill.run.setup import load_data
    from datadistill.train import accuracy, train_model

    cfg = _cfg(job, "dm")
    data = load_data(cfg, progress=False)
    syn = initial_synset(data.train, 1, "real", make_generator(0, "init"))
    spec = data.spec
    net = make_net("convnet", spec.channels, spec.num_classes, spec.im_size, generator=make_generator(0, "net"), **NET)
    t0 = time.perf_counter()
    train_model(net, syn.images, syn.labels, epochs=1, lr=0.01, generator=make_generator(0, "eval"))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = accuracy(net, data.test.images, data.test.labels)
    test_s = time.perf_counter() - t0
    return {"train_epoch_seconds": train_s, "test_pass_seconds": test_s, "test_images": len(data.test),
            "test_images_per_second": len(data.test) / test_s, "eval_seconds": train_s + test_s, "test_accuracy": acc,
            "peak_rss_mb": rss_mb()}


def job_rded(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from datadistill.config import resolve_config
    from datadistill.methods.decoupled.relabel import Relabeller
    from datadistill.nets import make_net
    from datadistill.rng import make_generator
    from datadistill.run import prepare
    from datadistill.run.setup import load_data
    from datadistill.teacher import import_teacher

    data = load_data(_cfg(job, "dm"), progress=False)
    spec = data.spec
    folder = _root(job) / "rded-teacher"
    folder.mkdir(parents=True, exist_ok=True)
    net = make_net("convnet_bn", spec.channels, spec.num_classes, spec.im_size, generator=make_generator(0, "teacher"),
                   **NET)
    torch.save(net.state_dict(), folder / "init.pt")
    import_teacher(folder / "init.pt", "imagenet32", "convnet_bn", folder / "teacher", model_args=dict(NET),
                   data=data, device="cpu", progress=False)
    ipc = max(1, min(10, min(data.train.class_counts())))  # 10, or what the smallest class allows (validation split out)
    cfg = resolve_config("rded", "imagenet32", ipc, "quick", device="cpu", data_root=str(_root(job)), storage="disk",
                         model_args=dict(NET), artifacts={"teacher": str(folder / "teacher")}, iterations=spec.num_classes,
                         eval={"runs": 0})
    t0 = time.perf_counter()
    run = prepare(cfg, data=data, progress=False)
    setup = time.perf_counter() - t0
    teacher = {"began": 0.0, "seconds": 0.0}  # its forward passes, timed apart from reading and cropping

    def began(*_):
        teacher["began"] = time.perf_counter()

    def ended(*_):
        teacher["seconds"] += time.perf_counter() - teacher["began"]

    run.distiller.teacher.register_forward_pre_hook(began)
    run.distiller.teacher.register_forward_hook(ended)
    times = timed_steps(run.distiller, 0, cfg.iterations, torch.device("cpu"))
    t = time.perf_counter()
    syn = Relabeller.for_run(cfg, run.artifacts, torch.device("cpu"))(run.distiller.synthetic_set())
    relabel_s = time.perf_counter() - t
    crops = sum(min(cfg.method_args["mipc"], n) for n in data.train.class_counts()) * cfg.method_args["num_crop"]
    return {"ipc": ipc, "setup_seconds": setup, "distill_seconds": sum(times), "seconds_per_class": sum(times) / len(times),
            "teacher_seconds": teacher["seconds"], "crops_scored": crops, "crops_per_second": crops / sum(times),
            "relabel_seconds": relabel_s, "stored_label_bytes": syn.meta["labels"].get("stored_bytes"),
            "images": len(syn), "teacher": "convnet_bn width 32, seeded initialization (imported)",
            "out_of_core": data.train.out_of_core, "peak_rss_mb": rss_mb()}


JOBS = {"generate": job_generate, "build": job_build, "dm": job_dm, "dsa": job_dsa, "eval": job_eval, "draw": job_draw,
        "rded": job_rded}


def plan(sizes, scale_root: str, test: int) -> list[dict]:
    return [{"job": j, "n": n, "test": test, "scale_root": scale_root} for n in sizes for j in JOBS]


def summary(rows: list[dict]) -> dict:
    """Per size: the cache build, DM / DSA seconds per iteration, the evaluation epoch and the peak
    RSS over its jobs; and the targets' checks."""
    out: dict[str, dict] = {}
    for r in rows:
        job = r["spec"]["job"]
        if "error" in r or job == "generate":
            continue
        s = out.setdefault(str(r["spec"]["n"]), {"peak_rss_mb": 0.0})
        s["peak_rss_mb"] = max(s["peak_rss_mb"], r["peak_rss_mb"])
        s[f"{job}_peak_rss_mb"] = r["peak_rss_mb"]
        if job == "build":
            s.update(cache_build_seconds=r["cache_build_seconds"], cache_bytes=r["cache_bytes"],
                     float32_bytes_in_memory=r["float32_bytes_in_memory"])
        elif job in ("dm", "dsa"):
            s[f"{job}_seconds_per_iteration"] = r["seconds_per_iteration"]
            s[f"{job}_min_seconds_per_iteration"] = min(r["iteration_seconds"][1:])
        elif job == "draw":
            s["class_batches_seconds"] = r["class_batches_median_seconds"]
            s["minibatch_256_seconds"] = r["minibatch_256_median_seconds"]
        elif job == "rded":
            s.update(rded_distill_seconds=r["distill_seconds"], rded_teacher_seconds=r["teacher_seconds"],
                     rded_crops_per_second=r["crops_per_second"], rded_stored_label_bytes=r["stored_label_bytes"])
        else:
            s["eval_epoch_seconds"] = r["eval_seconds"]
    checks = {}
    for key in ("dm_seconds_per_iteration", "dm_min_seconds_per_iteration", "class_batches_seconds"):
        vals = [v[key] for v in out.values() if key in v]
        if len(vals) > 1:
            checks[f"{key}_spread"] = (max(vals) - min(vals)) / min(vals)
            checks[f"{key}_within_10_percent"] = checks[f"{key}_spread"] <= 0.10
    if str(SIZES[-1]) in out:
        top = out[str(SIZES[-1])]
        checks["peak_rss_under_4gb_at_1.28m"] = top["peak_rss_mb"] < 4096
        checks["peak_rss_under_4gb_at_1.28m_without_dsa"] = max(
            v for k, v in top.items() if k.endswith("_peak_rss_mb") and not k.startswith("dsa")) < 4096
    rss = {k: [v.get(f"{k}_peak_rss_mb") for v in out.values()] for k in ("build", "dm", "dsa", "eval")}
    checks["peak_rss_growth_mb"] = {k: (max(v) - min(v)) if all(x is not None for x in v) and v else None
                                    for k, v in rss.items()}
    return {"summary": out, "checks": checks, "threads": 1, "load_average": os.getloadavg()}


def plot(doc: dict, dest: Path) -> Path:
    """Two panels over the number of training images (log scale): seconds per iteration of DM and
    DSA (mean of the timed iterations, and the fastest; the warm-up left out) and the peak resident memory of every job, with the float32
    size of the same data in memory for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["results"] if "peak_rss_mb" in r and "error" not in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for job in ("dm", "dsa"):
        done = sorted((r["spec"]["n"], r) for r in rows if r["spec"]["job"] == job and "seconds_per_iteration" in r)
        if done:
            xs = [n for n, _ in done]
            left.plot(xs, [r["seconds_per_iteration"] for _, r in done], "o-", label=f"{job} (mean)")
            left.plot(xs, [min(r["iteration_seconds"][1:]) for _, r in done], "x--", label=f"{job} (fastest timed)")
    for job in ("build", "dm", "dsa", "eval"):
        done = sorted((r["spec"]["n"], r["peak_rss_mb"]) for r in rows if r["spec"]["job"] == job)
        if done:
            right.plot([n for n, _ in done], [m / 1024 for _, m in done], "o-", label=job)
    sizes = sorted({r["spec"]["n"] + r["spec"]["test"] for r in rows})
    right.plot([n - TEST_IMAGES for n in sizes], [n * 3 * 32 * 32 * 4 / 2**30 for n in sizes], ":", color="gray",
               label="the images as float32")
    right.axhline(4, color="red", linewidth=0.8, label="4 GB target")
    for ax, what in ((left, "seconds / iteration"), (right, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    right.set_yscale("log")
    return save_figure(fig, dest)


def main(argv: list[str]) -> Path | None:
    check_flags(argv)
    dest = results_file(NAME, argv)  # results/scale_smoke.json with --smoke
    if "--plot" in argv:
        return redraw(plot, dest)
    smoke = "--smoke" in argv
    if smoke:
        root = tempfile.mkdtemp(prefix="scale-smoke-")
        sizes, test = (2_000,), 1_000
    else:
        root = _arg(argv, "--scale-root", "/work/scale_data")
        sizes = tuple(int(v) for v in _arg(argv, "--sizes", ",".join(map(str, SIZES))).split(","))
        test = TEST_IMAGES
    try:
        run_jobs(NAME, plan(sizes, root, test), JOBS, argv, label_keys=("job", "n"), dest=dest, extra=summary)
        redraw(plot, dest)
    finally:
        if smoke:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv)
