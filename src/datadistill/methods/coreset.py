"""Coreset baselines: pick `ipc` real training images per class instead of learning any.

The three selection baselines of the dataset-distillation literature (Zhao, Mopuri & Bilen,
"Dataset Condensation with Gradient Matching", ICLR 2021, Table 1):

- ``random``: `ipc` images per class uniformly at random, without replacement.
- ``herding`` (Welling, "Herding Dynamical Weights to Learn", ICML 2009; the greedy form used by
  iCaRL and the DC paper): per class, repeatedly add the image whose embedding brings the mean of
  the selected embeddings closest to the class mean embedding.
- ``k-center`` (Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
  Approach", ICLR 2018; greedy 2-approximation): per class, start from the image nearest the class
  mean embedding, then repeatedly add the image farthest from its nearest selected image.

The sets are exact copies of training images with hard labels (given a teacher, ``--teacher DIR``,
the run relabels them with it: the control of the decoupled methods, `decoupled/relabel.py`); no
outer iterations are run (``iterations: 0`` in the presets), so the runner only saves, draws and
evaluates them.
Embeddings are the penultimate features (`net.embed`) of a network trained on the training split
(``embedding: trained``) or of a randomly initialized one (``embedding: random``). All randomness
(the random draw, the embedding network's initialization and shuffling) comes from the run's
generator: same seed, same device, same selection.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError, DistillError
from ..nets import make_net
from ..synset import SyntheticSet
from ..train import accuracy, train_model
from .base import Distiller, chunked_no_grad
from .registry import register_method

EMBEDDINGS = ("trained", "random")


# --------------------------------------------------------------------------- selection rules
def _as_points(feats: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.as_tensor(feats)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D) or (N,), got shape {tuple(x.shape)}")
    if not 0 <= k <= x.shape[0]:
        raise ValueError(f"cannot select {k} of {x.shape[0]} points")
    return x.detach().to("cpu", torch.float64)


def herding_select(feats: torch.Tensor, k: int) -> list[int]:
    """Greedy herding: indices of `k` distinct rows of `feats` (N, D), in selection order.

    Step t+1 adds the row i (not yet selected) minimizing
    || mu - (s_t + f_i) / (t + 1) ||, where mu is the mean of all rows and s_t the sum of the t
    rows selected so far. Ties go to the lowest index. Computed in float64 on the CPU."""
    x = _as_points(feats, k)
    mu = x.mean(0)
    chosen: list[int] = []
    taken = torch.zeros(x.shape[0], dtype=torch.bool)
    running = torch.zeros_like(mu)
    for t in range(k):
        dist = ((running + x) / (t + 1) - mu).pow(2).sum(1)
        dist[taken] = float("inf")
        i = int(torch.argmin(dist))  # argmin returns the first minimum: ties -> lowest index
        chosen.append(i)
        taken[i] = True
        running += x[i]
    return chosen


def k_center_select(feats: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center: indices of `k` distinct rows of `feats` (N, D), in selection order.

    The first center is the row nearest the mean of all rows (the greedy algorithm needs a start;
    Sener & Savarese start from the labelled pool, which a class has none of, so we take the most
    central point, which makes the result deterministic). Each next center is the row whose
    Euclidean distance to its nearest center is largest. Ties go to the lowest index. Float64, CPU."""
    x = _as_points(feats, k)
    if k == 0:
        return []
    mu = x.mean(0)
    first = int(torch.argmin((x - mu).pow(2).sum(1)))
    chosen = [first]
    nearest = (x - x[first]).pow(2).sum(1)  # squared distance to the nearest center
    for _ in range(1, k):
        nearest[chosen[-1]] = -1.0  # centers are at distance 0; never pick one twice
        i = int(torch.argmax(nearest))  # argmax returns the first maximum: ties -> lowest index
        chosen.append(i)
        nearest = torch.minimum(nearest, (x - x[i]).pow(2).sum(1))
    return chosen


def _check_ipc(counts: list[int], ipc: int, class_names: tuple[str, ...]) -> None:
    smallest = min(counts)
    if ipc > smallest:
        c = counts.index(smallest)
        raise ConfigError(
            f"IPC {ipc} is larger than class {c} ({class_names[c]!r}), which has {smallest} training "
            f"images; a coreset can hold at most {smallest} per class"
        )


# --------------------------------------------------------------------------- the Distillers
@dataclass
class RandomOptions:
    pass


@dataclass
class EmbeddingOptions:
    embedding: str = "trained"  # trained | random
    model: str | None = None  # None: the config's model (and its model_args)
    model_args: dict[str, Any] = field(default_factory=dict)  # variants of `model` (or added to the config's)
    embed_epochs: int = 5  # training epochs for embedding=trained (presets: quick 1, mnist-5k 5, paper 20)
    embed_lr: float = 0.01
    embed_batch: int = 256
    chunk: int = 256  # images per no-grad forward when embedding (speed only)


class CoresetDistiller(Distiller):
    """A Distiller that selects real training images in `init` and has no outer iterations."""

    learns_images = False
    accepts = ("teacher",)  # given one, the run relabels the selection with it (decoupled/relabel.py)

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        self.meta: dict[str, Any] = {}
        self.selected: list[int] = []

    def init(self, syn: SyntheticSet) -> None:
        """Select `cfg.ipc` images per class. The starting set `syn` is ignored (the runner passes
        a random real draw); only its metadata is kept."""
        self.meta.update({k: v for k, v in syn.meta.items() if k != "init"})
        _check_ipc(self.train.class_counts(), self.cfg.ipc, self.spec.class_names)
        t0 = time.perf_counter()
        self.selected = [int(i) for i in self.select()]
        self.meta["selection_seconds"] = time.perf_counter() - t0

    def select(self) -> list[int]:
        """Indices into the training split, `ipc` per class, ordered by class."""
        raise NotImplementedError

    def step(self, it: int) -> dict[str, float]:
        raise DistillError(f"{self.name} selects real images in init and has no iterations; set iterations to 0")

    def synthetic_set(self) -> SyntheticSet:
        idx = torch.tensor(self.selected, dtype=torch.long)
        images = self.train.images[idx.to(self.train.images.device)].detach().clone()
        labels = self.train.labels[idx.to(self.train.labels.device)].detach().clone()
        meta = {**self.meta, "selected_indices": list(self.selected), "selection": self.name}
        return SyntheticSet(images, labels, self.spec, meta=meta)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "selected": torch.tensor(self.selected, dtype=torch.long)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "selected" in state:
            self.selected = [int(i) for i in state["selected"]]


@register_method("random")
class RandomSelection(CoresetDistiller):
    Options = RandomOptions

    def select(self) -> list[int]:
        out: list[int] = []
        for idx in self.train.indices_per_class:
            perm = torch.randperm(idx.numel(), generator=self.gen)[: self.cfg.ipc]
            out += idx[perm].tolist()
        return out


class EmbeddingSelection(CoresetDistiller):
    """Herding and k-center: a per-class rule on the embeddings of the training images."""

    Options = EmbeddingOptions

    def __init__(self, cfg, data, device, artifacts=None):
        super().__init__(cfg, data, device, artifacts)
        o = self.opts
        if o.embedding not in EMBEDDINGS:
            raise ConfigError(f"unknown embedding {o.embedding!r}; choose 'trained' or 'random'")
        if o.embed_epochs < 0 or o.embed_batch < 1 or o.chunk < 1 or not o.embed_lr > 0:
            raise ConfigError("embed_epochs must be >= 0, embed_batch and chunk >= 1, embed_lr > 0")

    @staticmethod
    def rule(feats: torch.Tensor, k: int) -> list[int]:
        raise NotImplementedError

    def embedding_net(self) -> torch.nn.Module:
        o = self.opts
        if o.model:
            name, args = o.model, dict(o.model_args)
        else:
            name, args = self.cfg.model, {**self.cfg.model_args, **o.model_args}
        net = make_net(name, self.spec.channels, self.spec.num_classes, self.spec.im_size,
                       generator=self.gen, **args).to(self.device)
        if o.embedding == "trained" and o.embed_epochs > 0:
            res = train_model(
                net, self.train.images, self.train.labels, epochs=o.embed_epochs, lr=o.embed_lr,
                generator=self.gen, batch_size=o.embed_batch, desc=f"{self.name} embedding net",
            )
            self.meta["embedding_train_seconds"] = res.seconds
            # Training accuracy only (never the test split): a sanity figure for the embedding.
            self.meta["embedding_train_accuracy"] = accuracy(net, self.train.images, self.train.labels)
        self.meta.update(embedding=o.embedding, embedding_model=name,
                         embedding_epochs=o.embed_epochs if o.embedding == "trained" else 0)
        net.eval()
        return net

    def select(self) -> list[int]:
        net = self.embedding_net()
        feats = chunked_no_grad(net.embed, self.train.images, self.opts.chunk).cpu()
        out: list[int] = []
        for idx in self.train.indices_per_class:
            picks = self.rule(feats[idx], self.cfg.ipc)
            out += idx[torch.tensor(picks, dtype=torch.long)].tolist()
        return out


@register_method("herding")
class Herding(EmbeddingSelection):
    rule = staticmethod(herding_select)


@register_method("k-center")
class KCenter(EmbeddingSelection):
    rule = staticmethod(k_center_select)
