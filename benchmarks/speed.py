"""Speed of the distillation methods and of the evaluation protocol against this machine's ceiling.

Measured in one run, on the current machine (`--device`, default auto: the GPU if there is one):

- the ceiling: fp32 matrix-product throughput (best of several large square products), and bf16's
  where it runs faster than fp32 (reported, not used as the ceiling: every method runs in fp32);
- per method (dm, datadam, dc, dsa, mtt) and dataset (mnist, the cifar10 subset), at fixed settings
  (the `paper` preset, IPC 10, batch_real 256, the default ConvNet): seconds per distillation
  iteration (`distiller.step`), FLOPs per iteration (`torch.utils.flop_counter.FlopCounterMode`
  around one step: convolutions and matrix products, forward and backward; element-wise work is
  not counted), the achieved FLOP/s and its fraction of the fp32 ceiling; `ideal_seconds` =
  FLOPs / ceiling and `ratio_to_ideal` = seconds / ideal_seconds (the target for DM and DataDAM:
  at most 1.5); for gradient and trajectory matching (dc, dsa, mtt) a `torch.profiler` table of
  the three most expensive operators (self time) and the three most expensive annotated regions;
- the evaluation of a synthetic set (the real-image initialization of IPC 10) with 5 runs, once
  one run after another and once trained together (`evaluate(batched=...)`), with the speed-up and
  the largest per-run accuracy difference; fewer epochs than the protocol's 1000 (`eval_epochs`,
  default 50), since the speed-up does not depend on the number of epochs;
- the precision switch (`precision="bf16"`, datadistill/numerics.py) where bf16 matrix products run:
  DM's and DataDAM's iterations again under bf16 autocast (`bf16.speedup_vs_fp32`), and the batched
  evaluation again under it (`bf16.speedup_train_vs_fp32_batched`, `bf16.mean_difference_vs_fp32`:
  same seeds, so the accuracy difference is what bf16 costs or gains);
- the training loop's other switches (datadistill/train.py): the sequential evaluation again with
  each training step through `torch.compile` (`compile`), and in the channels-last memory layout
  (`channels_last`): `speedup_train_vs_fp32_sequential` (compile's includes its compilations) and
  `mean_difference_vs_fp32` at the same seeds.

MTT needs expert trajectories; the benchmark trains one short expert on 512 training images into
benchmarks/_work/speed-experts-<dataset> (the cost of an MTT iteration does not depend on how good
the expert is) and sets max_start_epoch to 1 so that the expert needs only `expert_epochs` epochs,
and lr_lr to 0: the step size's gradient is still computed, but the step size is not moved (the
short expert's trajectory sent it below zero within one iteration at the paper's 1e-5).

Usage:
    python benchmarks/speed.py                      # everything; writes benchmarks/results/speed.json
    python benchmarks/speed.py --quick              # about 2 minutes on 2 CPU cores: DM on MNIST and a
                                                    # short evaluation; writes benchmarks/_work/speed-quick.json
    python benchmarks/speed.py --methods dm,datadam --datasets cifar10 --iters 5 --out /tmp/speed.json

Run the full benchmark on a quiet machine: every number is a ratio taken within this one run, but
a busy machine lowers the achieved fractions. Results from --quick (reduced settings, said in the
JSON) never go to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ALLOCATOR_TUNED, DEFAULT_DATA, RESULTS, machine, save_figure, sync, timed_steps

import torch
from torch.utils.flop_counter import FlopCounterMode

from datadistill.config import resolve_config
from datadistill.data import DatasetSplits, ImageData, load_dataset
from datadistill.evaluate import evaluate
from datadistill.methods.trajectory import ExpertSettings, train_experts
from datadistill.methods import initial_synset
from datadistill.memstats import available_bytes, peak_since_reset, reset_peak
from datadistill.methods.trajectory.memory import AUTO_FRACTION
from datadistill.run import prepare
from datadistill.rng import make_generator, resolve_device

WORK = Path(__file__).resolve().parent / "_work"
METHODS = ("dm", "datadam", "dc", "dsa", "mtt")
DATASETS = ("mnist", "cifar10")
EXTRA_DATASETS = ("mnist-5k",)  # only when named: embedded and offline, for dry runs (benchmarks/gpu.sh)
PROFILED = {"dc", "dsa", "mtt"}  # gradient and trajectory matching: profile tables in the JSON
RATIO_TARGET = {"dm": 1.5, "datadam": 1.5}  # seconds per iteration / (FLOPs / fp32 ceiling)
IPC = 10
BATCH_REAL = 256
QUICK_BATCH_REAL = 64
UNROLLS = ("plain", "checkpoint", "tesla")
MTT_MEMORY_STEPS = (10, 30, 80)  # the sweep: CIFAR-10 subset, IPC 10, all 100 images per step
QUICK_MTT_MEMORY_STEPS = (2, 4)
QUICK_MTT_BATCH_SYN = 10
MMAP_THRESHOLD = 65536  # bytes: MALLOC_MMAP_THRESHOLD_ of the memory sweep on the CPU
# The sweep's allocator settings on the CPU (environment of each child process). "mmap64k": glibc
# with a fixed 64 KiB mmap threshold, so freed tensors leave at once and the resident peak follows
# what is alive (every mode, every syn_steps); "glibc": glibc's defaults, as the reference code
# runs; "tuned": datadistill's own setting (perf.tune_allocator, which the CLI applies: freed blocks
# kept for reuse, faster, heavier). The last two for plain at MTT_ALLOCATOR_STEPS only.
ALLOCATORS = {"mmap64k": {"DATADISTILL_MALLOC": "default", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)},
              "glibc": {"DATADISTILL_MALLOC": "default"}, "tuned": {}}
ALLOCATOR_LABELS = {"mmap64k": "64 KiB mmap threshold", "glibc": "glibc allocator", "tuned": "tuned allocator"}
MTT_ALLOCATOR_STEPS = (10, 30)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- ceiling
def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best FLOP/s of `reps` timed (n x n) @ (n x n) products after one warm-up."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    inner = 1 if device.type == "cpu" else 10  # GPU: amortize the launch and the sync
    torch.mm(a, b)
    sync(device)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2.0 * n**3 / best


def ceiling(device: torch.device, quick: bool) -> dict:
    n = (1024 if quick else 2048) if device.type == "cpu" else 8192
    reps = 3 if quick else 5
    fp32 = matmul_rate(device, torch.float32, n, reps)
    out = {"matmul_size": n, "repeats": reps, "fp32_flops_per_s": fp32,
           "tf32_allowed": bool(torch.backends.cuda.matmul.allow_tf32) if device.type == "cuda" else None}
    try:
        bf16 = matmul_rate(device, torch.bfloat16, n, reps)
        out["bf16_flops_per_s"] = bf16
        out["bf16_faster_than_fp32"] = bf16 > 1.1 * fp32
    except RuntimeError as e:  # bf16 matmul unsupported here
        out["bf16_flops_per_s"] = None
        out["bf16_error"] = str(e).splitlines()[0]
    log(f"ceiling: fp32 {fp32 / 1e9:.1f} GFLOP/s, bf16 "
        + (f"{out['bf16_flops_per_s'] / 1e9:.1f} GFLOP/s" if out.get("bf16_flops_per_s") else "n/a")
        + f" (n = {n})")
    return out


# ------------------------------------------------------------------------------------- methods
def method_config(method: str, dataset: str, device: torch.device, data_root: str, quick: bool, experts: str | None,
                  mtt_unroll: str = "plain"):
    over: dict = {"device": str(device), "data_root": data_root, "eval": {"runs": 0}}
    method_args: dict = {}
    notes = []
    if method != "mtt":
        over["batch_real"] = QUICK_BATCH_REAL if quick else BATCH_REAL
        if quick:
            notes.append(f"--quick: batch_real {QUICK_BATCH_REAL} instead of {BATCH_REAL}")
    if method in ("dc", "dsa") and quick:
        method_args.update(outer_loop=2, inner_loop=2)
        notes.append("--quick: outer_loop 2, inner_loop 2 instead of the paper's (10, 50) for IPC 10")
    if method == "mtt":
        over["experts"] = experts
        method_args.update(max_start_epoch=1, lr_lr=0.0)
        notes.append("max_start_epoch 1 (one short expert; the cost of an iteration does not depend on it)")
        notes.append("lr_lr 0: the step size still gets its gradient (same work) but is not moved; the short "
                     "expert's large normalized loss sent the paper's 1e-5 steps below zero, which the method "
                     "refuses")
        if quick:
            method_args["syn_steps"] = 5
            notes.append("--quick: syn_steps 5")
        if mtt_unroll != "plain":
            method_args["unroll"] = mtt_unroll
            notes.append(f"--mtt-unroll {mtt_unroll}: the plain unroll's graph of every student step did not fit "
                         "this machine's memory (it recomputes each segment's forward in the backward pass)")
    cfg = resolve_config(method, dataset, IPC, "paper", **over, method_args=method_args)
    return cfg, notes


def mtt_experts(dataset: str, data: DatasetSplits, device: torch.device) -> str:
    """One expert of `expert_epochs` epochs on 512 training images, trained once into benchmarks/_work."""
    probe = resolve_config("mtt", dataset, IPC, "paper")
    out = WORK / f"speed-experts-{dataset}"
    g = make_generator(0, "speed-experts")
    idx = torch.randperm(len(data.train), generator=g)[:512]
    small = DatasetSplits(data.train.subset(idx), data.val, data.test)
    settings = ExpertSettings(dataset, num_experts=1, epochs=int(probe.method_args["expert_epochs"]),
                              model=probe.model, model_args=probe.model_args, zca=probe.zca)
    train_experts(settings, out, data=small, device=device, progress=False, log=log)
    return str(out)


def build(cfg, data: DatasetSplits, device: torch.device):
    return prepare(cfg, data=data, device=device, progress=False).distiller


def profile_top(step, device: torch.device, k: int = 3) -> dict:
    """The k operators with the largest self time and the k annotated regions with the largest total
    time (`record_function` labels) in one profiled step."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        step()
        sync(device)
    events = prof.key_averages()
    use_cuda = device.type == "cuda"

    def self_us(e):
        return (getattr(e, "self_device_time_total", 0) if use_cuda else 0) or e.self_cpu_time_total

    def total_us(e):
        return (getattr(e, "device_time_total", 0) if use_cuda else 0) or e.cpu_time_total

    total_self = sum(self_us(e) for e in events) or 1.0
    ops = sorted((e for e in events if not e.key.startswith(("ProfilerStep", "## "))), key=self_us, reverse=True)
    table = [{"op": e.key, "calls": e.count, "self_ms": self_us(e) / 1e3, "share_of_self_time": self_us(e) / total_self}
             for e in ops[:k]]
    # record_function labels (e.g. gm/real_grad); not operators (aten::...), autograd nodes
    # (ConvolutionBackward0) or runtime calls (cudaLaunchKernel)
    regions = [e for e in events if "::" not in e.key and not re.fullmatch(r"\w+Backward\d*", e.key)
               and not e.key.startswith(("ProfilerStep", "cuda", "Memcpy", "Memset"))]
    regions.sort(key=total_us, reverse=True)
    return {"time": "device (CUDA kernels)" if use_cuda else "cpu", "top_ops": table,
            "top_regions": [{"region": e.key, "calls": e.count, "total_ms": total_us(e) / 1e3} for e in regions[:k]]}


def measure_method(method: str, dataset: str, data: DatasetSplits, device: torch.device, data_root: str,
                   ceil: dict, iters: int, quick: bool, mtt_unroll: str = "plain") -> dict:
    experts = mtt_experts(dataset, data, device) if method == "mtt" else None
    cfg, notes = method_config(method, dataset, device, data_root, quick, experts, mtt_unroll)
    d = build(cfg, data, device)
    # warm-up step, counted: the FLOPs of one iteration (the counter slows it, so it is not timed)
    with FlopCounterMode(display=False) as fc:
        d.step(0)
    sync(device)
    flops = float(fc.get_total_flops())
    secs = timed_steps(d, 1, iters, device)
    it = 1 + iters
    s = statistics.median(secs)
    rate = flops / s
    ideal = flops / ceil["fp32_flops_per_s"]
    row = {
        "method": method, "dataset": dataset, "ipc": cfg.ipc, "batch_real": cfg.batch_real, "model": cfg.model,
        "preset": "paper", "method_args": cfg.method_args, "zca": cfg.zca, "notes": notes,
        "timed_iterations": iters, "seconds_per_iteration": s, "seconds_each": secs,
        "flops_per_iteration": flops, "achieved_flops_per_s": rate,
        "fraction_of_fp32_ceiling": rate / ceil["fp32_flops_per_s"],
        "ideal_seconds": ideal, "ratio_to_ideal": s / ideal,
    }
    if method in RATIO_TARGET:
        row["ratio_target"] = RATIO_TARGET[method]
        row["target_met"] = row["ratio_to_ideal"] <= RATIO_TARGET[method]
    if method in PROFILED:
        row["profile"] = profile_top(lambda: d.step(it), device)
    if d.supports_bf16 and ceil.get("bf16_flops_per_s"):
        # the precision switch: the same iterations with the loss's forward passes under bf16 autocast
        b = build(dataclasses.replace(cfg, precision="bf16"), data, device)
        b.step(0)  # warm-up
        bsecs = timed_steps(b, 1, iters, device)
        row["bf16"] = {"seconds_per_iteration": statistics.median(bsecs), "seconds_each": bsecs,
                       "speedup_vs_fp32": s / statistics.median(bsecs)}
    log(f"{method} {dataset}: {s:.3f} s/it, {flops / 1e9:.2f} GFLOP/it, {rate / 1e9:.1f} GFLOP/s = "
        f"{row['fraction_of_fp32_ceiling']:.1%} of fp32 ceiling (ratio to ideal {row['ratio_to_ideal']:.2f})")
    return row


# ------------------------------------------------------------------------------------- MTT memory
def measure_mtt_memory(dataset: str, data: DatasetSplits, device: torch.device, data_root: str, iters: int,
                       quick: bool) -> list[dict]:
    """MTT at each syn_steps of the sweep in each unroll mode: seconds per iteration (median of
    `iters` after one warm-up) and the peak memory above the start of the first iteration
    (memstats.reset_peak: resident memory on the CPU, allocated on CUDA). Each configuration runs
    in a fresh process (`mtt_memory_row`): within one process, what an earlier iteration left
    resident hides the next one's peak. On the CPU every mode runs with a fixed glibc mmap
    threshold (ALLOCATORS["mmap64k"]: every large tensor is mapped and unmapped, so the resident
    high-water mark follows what is alive), and plain also with glibc's defaults and with
    datadistill's tuned allocator, the settings a user's run has. (The environment alone is not
    enough: perf.tune_allocator, called when benchmarks/common is imported, overrides
    MALLOC_MMAP_THRESHOLD_ unless DATADISTILL_MALLOC=default; each row records which was in
    effect.) A configuration whose estimate (methods/trajectory/memory.py) exceeds
    AUTO_FRACTION of the available memory is not run (its row says so): the plain unroll at 80
    steps would be killed for memory here."""
    experts = mtt_experts(dataset, data, device)  # trained once, here, before the children start
    steps_list = QUICK_MTT_MEMORY_STEPS if quick else MTT_MEMORY_STEPS
    configs = [(steps, mode, "mmap64k") for steps in steps_list for mode in UNROLLS]
    if device.type == "cpu":
        configs += [(steps, "plain", alloc) for alloc in ("glibc", "tuned")
                    for steps in (steps_list if quick else MTT_ALLOCATOR_STEPS)]
    rows = []
    for steps, mode, alloc in configs:
        env = {k: v for k, v in os.environ.items() if k not in ("DATADISTILL_MALLOC", "MALLOC_MMAP_THRESHOLD_")}
        if device.type == "cpu":
            env.update(ALLOCATORS[alloc])
        spec = json.dumps({"dataset": dataset, "device": str(device), "data_root": data_root, "experts": experts,
                           "iters": iters, "quick": quick, "steps": steps, "mode": mode})
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--mtt-memory-row", spec],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            row = {"dataset": dataset, "syn_steps": steps, "unroll": mode,
                   "error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
        else:
            row = json.loads(out.stdout.strip().splitlines()[-1])
        row["allocator"] = alloc if device.type == "cpu" else "cuda caching allocator"
        log(f"mtt memory {steps} steps {mode} ({row['allocator']}): " + (
            row.get("skipped") or row.get("error") or
            f"{row['seconds_per_iteration']:.2f} s/it, peak {row['peak_mib_above_start']:,.0f} MiB above start, "
            f"{row['peak_mib']:,.0f} MiB in all (estimated {row['estimated_mib']:,.0f} above start)"))
        rows.append(row)
    return rows


def mtt_memory_row(spec: dict) -> dict:
    """One configuration of the memory sweep, in this (fresh) process."""
    device = torch.device(spec["device"])
    data = load_dataset(spec["dataset"], spec["data_root"], progress=False)
    cfg, notes = method_config("mtt", spec["dataset"], device, spec["data_root"], False, spec["experts"], spec["mode"])
    args = {**cfg.method_args, "syn_steps": spec["steps"], "unroll": spec["mode"]}
    if spec["quick"]:
        args["batch_syn"] = QUICK_MTT_BATCH_SYN
        notes.append(f"--quick: batch_syn {QUICK_MTT_BATCH_SYN}")
    cfg = dataclasses.replace(cfg, method_args=args)
    d = build(cfg, data, device)
    est = d.estimate_memory().bytes(spec["mode"]) / 2**20
    avail = available_bytes(device)[0] / 2**20
    row = {"dataset": spec["dataset"], "ipc": cfg.ipc, "syn_steps": spec["steps"], "unroll": spec["mode"],
           "batch_syn": d.batch_syn, "estimated_mib": est, "available_mib": avail, "notes": notes,
           "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "allocator_tuned": ALLOCATOR_TUNED}
    if est > AUTO_FRACTION * avail:
        row["skipped"] = f"estimated {est:,.0f} MiB > {AUTO_FRACTION:.0%} of the available {avail:,.0f} MiB"
        return row
    start = reset_peak(device)  # before the warm-up: the first iteration's peak is the one to see
    d.step(0)  # warm-up: counted in the peak, not timed
    sync(device)
    secs = timed_steps(d, 1, spec["iters"], device)
    peak = peak_since_reset(device)
    row.update(seconds_per_iteration=statistics.median(secs), seconds_each=secs,
               peak_mib_above_start=peak - start, start_mib=start, peak_mib=peak)
    return row


def plot_mtt_memory(rows: list[dict], dest: Path) -> None:
    """Two panels over syn_steps: seconds per iteration and peak MiB, one line per unroll mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    measured = [r for r in rows if "seconds_per_iteration" in r]
    for mode, alloc in dict.fromkeys((r["unroll"], r["allocator"]) for r in measured):  # one line each, in run order
        done = [r for r in measured if (r["unroll"], r["allocator"]) == (mode, alloc)]
        xs = [r["syn_steps"] for r in done]
        label = f"{mode}, {ALLOCATOR_LABELS.get(alloc, alloc)}"
        style = "x--" if alloc in ("glibc", "tuned") else "o-"
        axes[0].plot(xs, [r["seconds_per_iteration"] for r in done], style, label=label)
        axes[1].plot(xs, [r["peak_mib_above_start"] for r in done], style, label=label)
    for ax, what in zip(axes, ("seconds / iteration", "peak MiB above start")):
        ax.set_xlabel("syn_steps")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    save_figure(fig, dest)


# ------------------------------------------------------------------------------------- evaluation
def measure_eval(dataset: str, data: DatasetSplits, device: torch.device, runs: int, epochs: int,
                 test_images: int | None, bf16: bool) -> dict:
    syn = initial_synset(data.train, IPC, "real", make_generator(0, "init"))
    test = data.test
    if test_images is not None and test_images < len(test):
        test = ImageData(test.images[:test_images], test.labels[:test_images], test.spec)
    kw = dict(model="convnet", runs=runs, epochs=epochs, aug="dsa", test=test, device=device, progress=False)
    out = {"dataset": dataset, "model": "convnet", "ipc": IPC, "images": len(syn.images), "runs": runs,
           "epochs": epochs, "epochs_note": f"{epochs} epochs instead of the protocol's 1000: every epoch costs "
                                            "the same, so the training speed-up does not depend on the number of "
                                            "epochs (the wall times include the fixed cost of testing)", "aug": "dsa",
           "test_images": len(test)}

    def timed(**over) -> tuple[dict, object]:
        """One evaluation of the set with `over` on top of the shared settings, timed."""
        sync(device)
        t0 = time.perf_counter()
        res = evaluate(syn, **over, **kw)
        sync(device)
        rec = {"train_seconds": res.train_seconds, "train_seconds_per_run": res.train_seconds_per_run,
               "wall_seconds": time.perf_counter() - t0, "accuracies": res.accuracies, "mean": res.mean,
               "std": res.std, "extra": res.extra}
        return rec, res

    def against(rec: dict, ref: dict, ref_name: str) -> dict:
        """`rec` with its training speed-up over `ref` and the mean accuracy difference (same seeds)."""
        rec[f"speedup_train_vs_fp32_{ref_name}"] = ref["train_seconds"] / rec["train_seconds"]
        rec["mean_difference_vs_fp32"] = rec["mean"] - ref["mean"]
        return rec

    seq, _ = timed(batched=False)
    bat, res = timed(batched=True)
    out["sequential"], out["batched"] = seq, bat
    out["speedup_train"] = seq["train_seconds"] / bat["train_seconds"]
    out["speedup_wall"] = seq["wall_seconds"] / bat["wall_seconds"]
    out["max_run_accuracy_difference"] = max(abs(a - b) for a, b in zip(seq["accuracies"], bat["accuracies"]))
    out["flops_train_total_per_run"] = res.flops["train_total"]
    out["speedup_target"] = 2.5
    # the layout switches: the sequential runs again with each step through torch.compile, and in
    # the channels-last layout, same seeds (compile's train_seconds include the compilations, which
    # `train_seconds_per_run` shows run by run)
    for switch in ("compile", "channels_last"):
        out[switch] = against(timed(batched=False, **{switch: True})[0], seq, "sequential")
    if bf16:
        # the precision switch: the batched runs again under bf16 autocast, same seeds
        out["bf16"] = against(timed(batched=True, precision="bf16")[0], bat, "batched")
    log(f"evaluation {dataset}, {runs} runs x {epochs} epochs: sequential {seq['train_seconds']:.1f} s, batched "
        f"{bat['train_seconds']:.1f} s (x{out['speedup_train']:.2f}); largest per-run accuracy difference "
        f"{out['max_run_accuracy_difference']:.3f} points")
    return out


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)} (default all; --quick: dm)")
    ap.add_argument("--datasets", default=None, help=f"comma-separated subset of {','.join(DATASETS)} (default both; --quick: mnist)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per method (default 3; --quick 1)")
    ap.add_argument("--eval-runs", type=int, default=5)
    ap.add_argument("--eval-epochs", type=int, default=None, help="epochs per evaluation run (default 50; --quick 3)")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation timing")
    ap.add_argument("--quick", action="store_true", help="a smoke test of about 2 minutes on 2 CPU cores (reduced settings)")
    ap.add_argument("--mtt-memory", action="store_true",
                    help="only the MTT memory sweep: syn_steps 10, 30, 80 x unroll plain, checkpoint, tesla on the "
                         "datasets (default cifar10), seconds per iteration and peak memory, with a plot beside the JSON")
    ap.add_argument("--mtt-unroll", choices=list(UNROLLS), default="plain",
                    help="MTT's unroll (default plain, the paper's); checkpoint where plain does not fit in memory "
                         "(MTT's plain unroll on CIFAR-10 at IPC 10 was killed for memory at 24 GB on the CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=None, help="JSON path (default results/speed.json; --quick: _work/speed-quick.json)")
    ap.add_argument("--mtt-memory-row", default=None, help=argparse.SUPPRESS)  # one configuration (a child)
    a = ap.parse_args(argv)
    if a.mtt_memory_row:
        print(json.dumps(mtt_memory_row(json.loads(a.mtt_memory_row))))
        return 0

    methods = [m for m in (a.methods or ("dm" if a.quick else ",".join(METHODS))).split(",") if m]
    datasets = [d for d in (a.datasets or ("mnist" if a.quick else ",".join(DATASETS))).split(",") if d]
    bad = [m for m in methods if m not in METHODS] + [d for d in datasets if d not in DATASETS + EXTRA_DATASETS]
    if bad:
        ap.error(f"unknown method(s)/dataset(s): {', '.join(bad)}")
    iters = a.iters or (1 if a.quick else 3)
    eval_epochs = a.eval_epochs or (3 if a.quick else 50)
    device = resolve_device(a.device)
    if a.out:
        dest = Path(a.out)
    elif a.quick:
        dest = WORK / "speed-quick.json"
    else:
        dest = RESULTS / "speed.json"

    doc = {"benchmark": "speed", "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "device": str(device),
           "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "quick": a.quick, "settings": {"ipc": IPC, "batch_real": QUICK_BATCH_REAL if a.quick else BATCH_REAL, "preset": "paper", "model": "convnet",
                                          "timed_iterations": iters, "statistic": "median"},
           "ceiling": ceiling(device, a.quick), "methods": [], "evaluation": []}

    def save() -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(doc, indent=2) + "\n")

    if a.mtt_memory:
        if not a.datasets:
            datasets = ["cifar10"]
        if not a.out:
            dest = WORK / "speed-mtt-memory-quick.json" if a.quick else RESULTS / "speed_mtt_memory.json"
        doc["mtt_memory"] = []
        for ds in datasets:
            data = load_dataset(ds, a.data_root, progress=False)
            doc["mtt_memory"] += measure_mtt_memory(ds, data, device, a.data_root, iters, a.quick)
            save()
        plot_mtt_memory(doc["mtt_memory"], dest.with_suffix(".png"))
        doc["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        save()
        log(f"wrote {dest} and {dest.with_suffix('.png')}")
        return 0
    for ds in datasets:
        log(f"loading {ds}")
        data = load_dataset(ds, a.data_root, progress=False)
        for m in methods:
            try:
                doc["methods"].append(measure_method(m, ds, data, device, a.data_root, doc["ceiling"], iters, a.quick,
                                                    a.mtt_unroll))
            except Exception as e:  # noqa: BLE001  (one failing method must not lose the others' numbers)
                log(f"{m} {ds} failed: {type(e).__name__}: {e}")
                doc["methods"].append({"method": m, "dataset": ds, "error": f"{type(e).__name__}: {e}"})
            save()
        if not a.no_eval:
            doc["evaluation"].append(measure_eval(ds, data, device, a.eval_runs, eval_epochs, 500 if a.quick else None,
                                                  bool(doc["ceiling"].get("bf16_flops_per_s"))))
            save()
    doc["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    save()
    log(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
