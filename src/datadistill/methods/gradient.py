"""Gradient matching: DC (Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching",
ICLR 2021) and DSA (Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021).

One runner iteration is one outer iteration of the papers:

1. a freshly initialized network is drawn (trainable);
2. `outer_loop` times:
   a. (batch-norm networks only) the running statistics are set from a real batch of
      `bn_images_per_class` images of every class, and the batch-norm layers are frozen (eval mode);
   b. for every class c: the cross-entropy gradient of the network's parameters on a real batch of
      class c (`batch_real` images, no graph kept) and on the synthetic images of class c (with the
      graph, so it is differentiable w.r.t. the pixels); with `dsa`, ONE draw of DSA parameters per
      class is applied to both before the forward pass;
   c. loss = sum over classes of `distance(g_real_c, g_syn_c)`; the synthetic images take one SGD
      step (lr_img, momentum_img);
   d. except after the last outer step: the network trains on a detached copy of the synthetic set
      for `inner_loop` epochs (SGD lr `lr_net`, no momentum, no weight decay, batch `batch_train`;
      per-image DSA with `dsa`) through `train.train_model`.

The reported loss is the mean matching loss per class and outer step (as the reference logs it).

Several processes (torchrun; docs/distributed.md): in step b-c each process handles its share of
the classes and the image gradient and loss are summed over the processes before the SGD step, so
every process applies the same update. Steps 1, 2a and 2d are done alike by every process (same
generator, same data); after 2d process 0's trained network is broadcast so no nondeterministic
kernel lets the copies drift.

Loops: `loops_for_ipc` gives (outer_loop, inner_loop) from the papers' table, with a rule for any
IPC; the options `outer_loop` / `inner_loop` override it.

Speed (measured on a 2-core CPU, ConvNet, MNIST, 10 classes; see docs/methods/dc_dsa.md): the
real gradients use `torch.autograd.grad` without a graph, per class, `real_chunk` images per
forward/backward (16 on CPU: ~4.0 ms per image against 5.2 ms for batches of 64 and 6.5 ms for 256,
the activations of small chunks staying in cache); `create_graph=True` only on the synthetic side.
Batching the classes was measured and dropped: a `torch.func.vmap` over classes of
`torch.func.grad` is exact but was 2.5x slower than the per-class loop for the real side and 1.8x
slower for the synthetic side on this CPU (single thread; the batched weight-gradient kernels are
slow there). `real_chunk` does not change the result beyond float rounding; tests compare it with
the plain one-batch-per-class computation (`matching_loss(..., real_chunk=None)`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from ..errors import ConfigError
from ..numerics import autocast
from ..synset import SyntheticSet
from ..train import train_model
from .. import dist
from .base import ImageDistiller, check_finite, uses_batch_norm
from .registry import register_method

# ------------------------------------------------------------------------------- distances
EPS = 1e-6  # in the cosine denominator, as the reference `distance_wb`


def layerwise_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    """The papers' distance: for every parameter tensor with 2 or more dimensions, reshape both
    gradients to (out_units, -1) and add `1 - cos` between the real and synthetic row of each output
    unit (cos = <a, b> / (|a| |b| + 1e-6)). 1-D parameters (biases, normalization) contribute nothing."""
    total = None
    for gr, gs in zip(g_real, g_syn, strict=True):
        if gr.dim() < 2:
            continue
        a, b = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
        cos = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
        d = (1 - cos).sum()
        total = d if total is None else total + d
    if total is None:
        return g_syn[0].new_zeros(()) if len(g_syn) else torch.zeros(())
    return total


def _flat(gs: Sequence[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in gs])


def mse_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    """Squared L2 norm of the difference of the whole concatenated gradients (reference `mse`)."""
    return ((_flat(g_syn) - _flat(g_real)) ** 2).sum()


def cos_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    """1 - cosine between the whole concatenated gradients (eps 1e-6; reference `cos`)."""
    a, b = _flat(g_real), _flat(g_syn)
    return 1 - (a * b).sum() / (a.norm() * b.norm() + EPS)


DISTANCES: dict[str, Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]] = {
    "layerwise": layerwise_distance,
    "mse": mse_distance,
    "cos": cos_distance,
}

# ------------------------------------------------------------------------------- loops
# ipc -> (outer_loop, inner_loop): the reference `get_loops` (DC paper, Sec. 4 "Training").
PAPER_LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loops_for_ipc(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for `ipc`: the papers' entry for a listed IPC (1, 10, 20, 30, 40,
    50); for any other IPC, the entry of the largest listed IPC not above it (2-9 -> (1, 1),
    11-19 -> (10, 50), ..., 50 and above -> (50, 10)). The reference refuses unlisted IPCs."""
    if ipc < 1:
        raise ConfigError(f"ipc must be >= 1, got {ipc}")
    return PAPER_LOOPS[max(k for k in PAPER_LOOPS if k <= ipc)]


# ------------------------------------------------------------------------------- gradients
def class_gradient(net: nn.Module, params: Sequence[Tensor], x: Tensor, c: int, create_graph: bool) -> list[Tensor]:
    """d CE(net(x), c) / d params, x all of class c (mean over the batch, as `nn.CrossEntropyLoss`)."""
    y = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
    loss = F.cross_entropy(net(x), y)
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))


def chunked_class_gradient(net: nn.Module, params: Sequence[Tensor], x: Tensor, c: int, chunk: int) -> list[Tensor]:
    """`class_gradient(..., create_graph=False)` computed `chunk` images at a time: the gradients of
    the summed losses of the chunks are added, then divided by the batch size. The same value up to
    float rounding, for networks that are per sample (instance/layer/group norm, none, frozen batch
    norm); on a CPU, chunks of 16 are ~25% (batch 64) to ~35% (batch 256) faster than one batch."""
    total = None
    for part in x.split(chunk):
        y = torch.full((part.shape[0],), c, dtype=torch.long, device=x.device)
        g = torch.autograd.grad(F.cross_entropy(net(part), y, reduction="sum"), params)
        total = list(g) if total is None else [t + gi for t, gi in zip(total, g)]
    return [t / x.shape[0] for t in total]


def real_gradients(net: nn.Module, reals: Sequence[Tensor], chunk: int | None = None,
                   classes: Sequence[int] | None = None) -> list[list[Tensor]]:
    """Per class, the gradient on its real batch, without a graph (constants for the loss).
    `chunk`: images per forward/backward (None: the whole batch at once). `classes`: the label of
    each batch (None: 0, 1, ...)."""
    params = [p for p in net.parameters() if p.requires_grad]
    out = []
    for c, x in zip(_labels(classes, reals), reals):
        if chunk is not None and chunk < x.shape[0]:
            g = chunked_class_gradient(net, params, x, c, chunk)
        else:
            g = class_gradient(net, params, x, c, create_graph=False)
        out.append([gi.detach() for gi in g])
    return out


def synthetic_gradients(net: nn.Module, syns: Sequence[Tensor], classes: Sequence[int] | None = None) -> list[list[Tensor]]:
    """Per class, the gradient on its synthetic images, with the graph (differentiable w.r.t. them)."""
    params = [p for p in net.parameters() if p.requires_grad]
    return [class_gradient(net, params, x, c, create_graph=True) for c, x in zip(_labels(classes, syns), syns)]


def _labels(classes: Sequence[int] | None, batches: Sequence[Tensor]) -> Sequence[int]:
    if classes is None:
        return range(len(batches))
    if len(classes) != len(batches):
        raise ValueError(f"{len(classes)} class labels for {len(batches)} batches")
    return classes


def matching_loss(net: nn.Module, reals: Sequence[Tensor], syns: Sequence[Tensor], distance: str = "layerwise",
                  real_chunk: int | None = None, classes: Sequence[int] | None = None,
                  real_context: Callable[[], Any] = contextlib.nullcontext) -> Tensor:
    """sum over classes c of distance(gradient on reals[c], gradient on syns[c]); differentiable
    w.r.t. `syns`. `real_chunk=None` is the plain reference computation (one batch per class).
    `classes`: the class of each batch (None: reals[c] and syns[c] are of class c).
    `real_context`: the context the real-batch gradients are computed in (bf16 autocast for
    precision bf16); the synthetic gradients and the distance are always computed outside it."""
    distance_fn = DISTANCES[distance]
    with record_function("gm/real_grad"), real_context():
        g_real = real_gradients(net, reals, real_chunk, classes)
    with record_function("gm/syn_grad"):
        g_syn = synthetic_gradients(net, syns, classes)
        total = distance_fn(g_real[0], g_syn[0])
        for gr, gs in zip(g_real[1:], g_syn[1:]):
            total = total + distance_fn(gr, gs)
    return total


def matching_backward(net: nn.Module, pairs: Iterable[tuple[Tensor, Tensor]], classes: Sequence[int],
                      inputs: Sequence[Tensor], distance: str = "layerwise", real_chunk: int | None = None,
                      real_context: Callable[[], Any] = contextlib.nullcontext) -> Tensor:
    """`matching_loss` over the (real, synthetic) batches of `pairs` (one per class of `classes`),
    each class's term backpropagated into `inputs` before the next class's batches are made, and
    the (detached) total returned. The same loss and the same gradient as building the sum and
    calling backward once: every term reaches the images through its own class's rows only, so
    each gradient element receives one term's contribution and zeros. Peak memory holds one
    class's graph instead of every class's (DSA at ImageNet-1K's 1,000 classes: 7.9 GiB before)."""
    distance_fn = DISTANCES[distance]
    total = None
    for c, (xr, xs) in zip(classes, pairs):
        with record_function("gm/real_grad"), real_context():
            (g_real,) = real_gradients(net, [xr], real_chunk, [c])
        with record_function("gm/syn_grad"):
            (g_syn,) = synthetic_gradients(net, [xs], [c])
            d = distance_fn(g_real, g_syn)
        with record_function("gm/image_update"):
            d.backward(inputs=list(inputs))
        total = d.detach() if total is None else total + d.detach()
    return total


def freeze_batch_norm(net: nn.Module, images: Tensor) -> None:
    """Set every batch-norm layer's running statistics to those of `images` (one train-mode forward,
    no autograd), then put the batch-norm layers in eval mode so they stay fixed."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    net.train()
    with torch.no_grad():
        net(images)
    for m, mom in zip(bns, saved):
        m.momentum = mom
        m.eval()


# ------------------------------------------------------------------------------- the method
@dataclass
class GMOptions:
    distance: str = "layerwise"  # layerwise (the papers'), mse, cos
    outer_loop: int | None = None  # None: loops_for_ipc(ipc)[0]
    inner_loop: int | None = None  # None: loops_for_ipc(ipc)[1]
    lr_net: float = 0.01  # inner-loop SGD learning rate (reference --lr_net)
    batch_train: int = 256  # inner-loop batch size (reference --batch_train)
    bn_images_per_class: int = 16  # real images per class for batch-norm statistics (reference BNSizePC)
    real_chunk: int | None = None  # real images per forward/backward; None: 16 on CPU, whole batch on GPU (speed only)


@register_method("dc")
class GradientMatching(ImageDistiller):
    """DC: gradient matching without augmentation (`dsa` subclasses it with DSA)."""

    # bf16 for the first-order parts only: the real-batch gradients (constants of the loss) and the
    # inner-loop training; the synthetic gradients and the matching, differentiated twice, stay fp32
    supports_bf16 = "first-order"
    Options = GMOptions
    uses_dsa = False

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        if o.distance not in DISTANCES:
            raise ConfigError(f"unknown distance {o.distance!r}; choose one of {', '.join(DISTANCES)}")
        if o.real_chunk is not None and o.real_chunk < 1:
            raise ConfigError(f"real_chunk must be >= 1 or None, got {o.real_chunk}")
        self.real_chunk = o.real_chunk if o.real_chunk is not None else (16 if device.type == "cpu" else None)
        outer, inner = loops_for_ipc(cfg.ipc)
        self.outer_loop = outer if o.outer_loop is None else int(o.outer_loop)
        self.inner_loop = inner if o.inner_loop is None else int(o.inner_loop)
        if self.outer_loop < 1 or self.inner_loop < 0:
            raise ConfigError(f"need outer_loop >= 1 and inner_loop >= 0, got {self.outer_loop}, {self.inner_loop}")
        if not o.lr_net > 0 or o.batch_train < 1 or o.bn_images_per_class < 1:
            raise ConfigError("need lr_net > 0, batch_train >= 1 and bn_images_per_class >= 1")
        if self.uses_dsa and self.dsa is None:
            raise ConfigError("method dsa needs a DSA strategy (dsa_strategy is 'none'); use method dc for no augmentation")
        if not self.uses_dsa and self.dsa is not None:
            raise ConfigError(
                f"method dc matches gradients without augmentation but dsa_strategy is {cfg.dsa_strategy!r}; "
                "set dsa_strategy none, or use method dsa"
            )

    # -- pieces ------------------------------------------------------------------------
    def prepare_network(self, net: nn.Module) -> None:
        """Batch-norm networks: running statistics from a real batch of every class, then frozen.
        Drawn from the run generator: the same images on every process."""
        if uses_batch_norm(net):
            n = self.opts.bn_images_per_class
            x = torch.cat([self.train.class_batch(c, n, self.gen) for c in range(self.spec.num_classes)])
            freeze_batch_norm(net, x)

    def match(self, net: nn.Module, backward: bool = False) -> Tensor:
        """The matching loss of one outer step on `net`, summed over this process's classes
        (`loss_classes`: all of them in one process). Every class's term needs only the network and
        that class's batches (batch norm is frozen first), so the classes split exactly.
        `backward`: backpropagate into the images class by class (`matching_backward`) and return
        the loss detached."""
        self.prepare_network(net)
        classes = self.loss_classes()
        pairs = self.each_class_batch(classes)
        if not classes:
            return self.no_loss()
        real_context = lambda: autocast(self.device, self.cfg.precision)  # noqa: E731
        if backward:
            return matching_backward(net, pairs, classes, [self.images], self.opts.distance, self.real_chunk,
                                     real_context)
        reals, syns = map(list, zip(*pairs))
        return matching_loss(net, reals, syns, self.opts.distance, self.real_chunk, classes=classes,
                             real_context=real_context)

    def train_network(self, net: nn.Module) -> None:
        """`inner_loop` epochs of plain SGD on a detached copy of the synthetic set."""
        if self.inner_loop == 0:
            return
        aug = None
        if self.dsa is not None:
            dsa = self.dsa
            aug = lambda x, g: dsa(x, dsa.sample(x.shape[0], g, siamese=False))  # noqa: E731
        train_model(
            net, self.images.detach().clone(), self.labels.detach().clone(), epochs=self.inner_loop,
            lr=self.opts.lr_net, generator=self.gen, batch_size=self.opts.batch_train, momentum=0.0,
            weight_decay=0.0, decay_at=(), aug=aug, desc="inner", precision=self.cfg.precision,
        )

    # -- the interface -------------------------------------------------------------------
    def loss(self, it: int) -> Tensor:
        """The matching loss on a fresh network (the first outer step of an iteration, no update)."""
        return self.match(self.fresh_net())

    def step(self, it: int) -> dict[str, float]:
        self.begin_iteration(it)
        net = self.fresh_net()
        total = 0.0
        for ol in range(self.outer_loop):
            self.opt_img.zero_grad(set_to_none=True)
            loss = self.match(net, backward=True)  # the images' gradient accumulated class by class
            with record_function("gm/image_update"):
                (value,) = self.backward_and_reduce(loss)  # summed over the processes' classes
                check_finite(value, it, f"lower lr_img (now {self.cfg.lr_img})")
                self.opt_img.step()
            total += value
            if ol == self.outer_loop - 1:
                break
            with record_function("gm/inner_loop"):
                # Every process trains the same network on the same (updated) set with the same
                # draws; process 0's copy then overwrites the others', so that no nondeterministic
                # kernel (GPU) lets them drift apart.
                self.train_network(net)
                dist.broadcast_module_(net)
        return {"loss": total / (self.spec.num_classes * self.outer_loop)}

    def synthetic_set(self) -> SyntheticSet:
        syn = super().synthetic_set()
        syn.meta.update(outer_loop=self.outer_loop, inner_loop=self.inner_loop)
        return syn


@register_method("dsa")
class DSAGradientMatching(GradientMatching):
    """DSA: gradient matching with one DSA draw per class shared by the real and synthetic batch."""

    uses_dsa = True
