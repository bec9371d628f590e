"""Where the plain MTT unroll's memory goes (issue 22: ours measured 13.9 GB against the reference
code's 11.8 GB at 30 steps on 100 CIFAR images).

Two probes, both on the default ConvNet (width 128, depth 3) at 3x32x32:

1. parts: the bytes the graph of ONE differentiable student step keeps
   (`memory.step_graph_bytes`, saved tensors counted once per storage) without DSA, with each DSA
   transform alone, with all six, and with in-place ReLUs (as the reference network has);
2. rss: the resident high-water mark of a plain unroll of `--steps` steps (fresh process each),
   plain, under `FlopCounterMode` (as benchmarks/speed.py's warm-up step runs), under
   `torch.profiler` (its profiled step), each with glibc's default heap and with a fixed mmap
   threshold (freed memory goes back to the system at once).

    python benchmarks/mtt_memory_probe.py --images 100 --steps 3      # prints JSON lines
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from torch import nn

from datadistill import memstats
from datadistill.augment import DSA
from datadistill.methods.trajectory.memory import step_graph_bytes
from datadistill.methods.trajectory.mtt import trajectory_loss, unroll
from datadistill.nets import flat_params, make_net

MiB = 2**20
TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def problem(n: int):
    g = torch.Generator().manual_seed(0)
    net = make_net("convnet", 3, 10, (32, 32), generator=g).train().requires_grad_(False)
    return g, net, flat_params(net), torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10


def parts(n: int) -> dict:
    g, net, w, x, y = problem(n)
    out = {"images": n, "param_mib": w.numel() * 4 / MiB, "no_dsa": step_graph_bytes(net, w, x, y, None, None) / MiB}
    for t in (*TRANSFORMS, "_".join(TRANSFORMS)):
        dsa = DSA(t, mode="all")
        out[t if "_" not in t else "all_six"] = step_graph_bytes(net, w, x, y, dsa.sample(n, g, siamese=False), dsa) / MiB
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True
    out["no_dsa_inplace_relu"] = step_graph_bytes(net, w, x, y, None, None) / MiB
    return out


def rss_child(n: int, steps: int, how: str) -> dict:
    torch.set_num_threads(1)
    g, net, w, x, y = problem(n)
    x.requires_grad_(True)
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    batches = [torch.arange(n)] * steps
    augs = [dsa.sample(n, g, siamese=False) for _ in batches]
    lr = torch.tensor(0.01, requires_grad=True)

    def run():
        trajectory_loss(unroll(net, w, x, y, lr, batches, augs, dsa), w, w + 0.01).backward()

    start = memstats.reset_peak("cpu")
    if how == "flop_counter":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False):
            run()
    elif how == "profiler":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            run()
    else:
        run()
    return {"images": n, "steps": steps, "how": how, "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "peak_mib": memstats.peak_since_reset("cpu") - start}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(rss_child(a.images, a.steps, a.child)))
        return 0
    print(json.dumps({"probe": "parts", **parts(a.images)}))
    for threshold in (None, "65536"):
        env = dict(os.environ)
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        if threshold:
            env["MALLOC_MMAP_THRESHOLD_"] = threshold
        for how in ("plain", "flop_counter", "profiler"):
            out = subprocess.run([sys.executable, __file__, "--images", str(a.images), "--steps", str(a.steps),
                                  "--child", how], env=env, capture_output=True, text=True, check=True)
            print(json.dumps({"probe": "rss", **json.loads(out.stdout.strip().splitlines()[-1])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
