"""What the unroll modes of trajectory matching need in memory, what the device has, and the
choice `unroll=auto` makes from the two.

The estimate starts from one probe student step (`step_graph_bytes`): the bytes of the tensors
the autograd graph of one step keeps when it is built to be differentiated again (its forward,
its DSA and its backward, counted once per storage by `torch.autograd.graph.saved_tensors_hooks`).
With S that count, P the bytes of one parameter vector and N the steps:

    plain       N * (S + 2P) + S                 every step's graph, its w and g; one more S of
                                                  backward working set
    checkpoint  ceil(N / k) * P + k * (S + 2P) + S   the segment boundaries, one segment's graphs
    tesla       N * P + 2S + 4P                   the stored trajectory, one step's graph and its
                                                  double-backward working set

`choose_unroll` takes the first of plain, checkpoint, tesla whose estimate is at most
`AUTO_FRACTION` of the available memory (CPU: MemAvailable of /proc/meminfo, else
os.sysconf's available pages; CUDA: the free bytes of torch.cuda.mem_get_info), and tesla with a
warning when none is. All three modes compute the same gradient up to floating-point error, so
the choice changes time and memory, never the result beyond that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...augment import DSA, DSAParams
from ...memstats import available_bytes  # noqa: F401  (auto's source of the available memory)

AUTO_FRACTION = 0.8  # auto keeps the estimate within this fraction of the available memory
AUTO_ORDER = ("plain", "checkpoint", "tesla")  # fastest first


def step_graph_bytes(net: nn.Module, w: Tensor, x: Tensor, y: Tensor, params: DSAParams | None, dsa: DSA | None) -> int:
    """Bytes the graph of one differentiable student step keeps (each storage counted once)."""
    from .mtt import student_gradient

    sizes: dict[int, int] = {}
    alive = []  # every counted storage stays alive until the count is done, so no freed storage's
    # address can be reused by a later one and dropped as a duplicate (that made the count depend
    # on the allocator's state: the same step counted differently in two processes)

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        alive.append(st)
        sizes[st.data_ptr()] = st.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        w = w.detach().requires_grad_(True)
        x = x.detach().requires_grad_(True)
        student_gradient(net, w, x, y.detach(), params, dsa, True)
    return sum(sizes.values())


@dataclass
class UnrollEstimate:
    """The memory of one unroll in each mode, from a probe step."""

    step_bytes: int  # S
    param_bytes: int  # P
    steps: int  # N
    segment: int  # checkpoint mode's k (0: round(sqrt(N)))

    def bytes(self, mode: str) -> int:
        s, p, n = self.step_bytes, self.param_bytes, self.steps
        if mode == "plain":
            return n * (s + 2 * p) + s
        if mode == "checkpoint":
            k = min(n, self.segment or max(1, round(math.sqrt(n))))
            return math.ceil(n / k) * p + k * (s + 2 * p) + s
        if mode == "tesla":
            return n * p + 2 * s + 4 * p
        raise ValueError(f"no estimate for unroll mode {mode!r}")

    def table(self) -> dict[str, float]:
        """MiB per mode."""
        return {m: round(self.bytes(m) / 2**20, 3) for m in AUTO_ORDER}


def choose_unroll(est: UnrollEstimate, available: int, fraction: float = AUTO_FRACTION) -> tuple[str, str]:
    """(mode, the sentence the log states): the first of plain, checkpoint, tesla that fits."""
    budget = fraction * available
    sizes = ", ".join(f"{m} {v:,.0f} MiB" for m, v in est.table().items())
    for mode in AUTO_ORDER:
        if est.bytes(mode) <= budget:
            return mode, (f"unroll=auto chose {mode}: estimated {sizes}; {fraction:.0%} of the available "
                          f"{available / 2**20:,.0f} MiB is {budget / 2**20:,.0f} MiB")
    return "tesla", (f"unroll=auto chose tesla, but even it may not fit: estimated {sizes}; {fraction:.0%} of the "
                     f"available {available / 2**20:,.0f} MiB is {budget / 2**20:,.0f} MiB. Lower batch_syn or the IPC")
