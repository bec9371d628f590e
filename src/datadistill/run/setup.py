"""The one run setup: from a config to the data as the method sees it, the artifacts, the
distiller and its starting set. The loop (`loop.py`) and every benchmark start from `prepare`.

Order (each step draws only from its own keyed generator, so the result does not depend on what
ran before in the process):

1. the dataset (`data.load_dataset`, unless given);
2. the artifacts the method `requires` (`artifacts.resolve_artifacts`: opened, checked against the
   run, fingerprints recorded in ``cfg.artifact_fingerprints``);
3. the method's view of the data: its ZCA whitening (`Distiller.data_zca`; computed by process 0
   under torchrun and sent to the others) applied to the training split (validation and test stay
   as they are: evaluation whitens them with the set's stored ZCA);
4. the distiller, and the starting set drawn from the ``"init"`` stream of the seed;
5. under torchrun, a check that every process holds the same data and starting set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import dist
from ..artifacts import Artifact, resolve_artifacts
from ..config import DistillConfig
from ..data import DatasetSplits, load_dataset
from ..data.zca import whiten
from ..errors import DistillError
from ..nets.convnet import depth_for_size
from ..methods import Distiller, get_method, initial_synset
from ..rng import make_generator, resolve_device
from ..synset import SyntheticSet


@dataclass
class Prepared:
    """What a run starts from."""

    cfg: DistillConfig
    device: torch.device
    data: DatasetSplits  # the method's view: the training split whitened when the run uses ZCA
    artifacts: dict[str, Artifact]
    zca: dict[str, torch.Tensor] | None
    distiller: Distiller
    syn0: SyntheticSet  # the starting set (the distiller was initialized with it)


def load_data(cfg: DistillConfig, progress: bool = True) -> DatasetSplits:
    """The run's dataset: in memory or out of core (`cfg.storage`, `cfg.cache`; the same numbers)."""
    return load_dataset(cfg.dataset, cfg.data_root, image_size=cfg.image_size, progress=progress,
                        storage=cfg.storage, cache=cfg.cache)


def prepare(cfg: DistillConfig, *, data: DatasetSplits | None = None, device: torch.device | str | None = None,
            progress: bool = True) -> Prepared:
    """Everything a run of `cfg` starts from (see the module docstring). `data`: the dataset when
    already loaded; `device`: where to distil (default: `cfg.device` resolved)."""
    device = resolve_device(cfg.device if device is None else device)
    if data is None:
        data = load_data(cfg, progress)
    method_cls = get_method(cfg.method)
    cfg.resolved = resolved_settings(cfg, data.spec)
    artifacts = resolve_artifacts(method_cls, cfg, data.spec)
    cfg.artifact_fingerprints = {kind: art.fingerprint for kind, art in artifacts.items()}
    zca = None
    if cfg.zca:
        zca = dist.from_main(lambda: method_cls.data_zca(cfg, data, artifacts))
        data = DatasetSplits(whiten(data.train, zca), data.val, data.test)
    distiller = method_cls(cfg, data, device, artifacts)
    syn0 = initial_synset(data.train, cfg.ipc, cfg.init, make_generator(cfg.seed, "init"))
    syn0.zca = zca
    _check_same_data(data, syn0)
    distiller.init(syn0)
    return Prepared(cfg, device, data, artifacts, zca, distiller, syn0)


def resolved_settings(cfg: DistillConfig, spec) -> dict:
    """What the networks pick from the data when the config does not say (written to config.yaml):
    the ConvNet depth from the image size, unless `--model-arg depth=N` is given."""
    out = {}
    if cfg.model.lower().startswith("convnet") and "depth" not in cfg.model_args:
        out["convnet_depth"] = depth_for_size(spec.im_size)
        out["convnet_depth_rule"] = (f"from the image size {spec.im_size[0]}x{spec.im_size[1]} (3 up to 32, 4 at 64, "
                                     "5 at 128 and 224; --model-arg depth=N fixes it)")
    return out


def _fingerprint(*tensors: torch.Tensor) -> list[float]:
    """A cheap summary of tensors' contents: per tensor its size, sum and sum of squares (no copy
    of the whole tensor in float64)."""
    out: list[float] = []
    for t in tensors:
        rows = t.detach().reshape(t.shape[0], -1).float() if t.dim() else t.detach().reshape(1, 1).float()
        out += [float(t.numel()), float(rows.sum(1).double().sum()),
                float(torch.linalg.vector_norm(rows, dim=1).double().square().sum())]
    return out


def _check_same_data(data: DatasetSplits, syn0: SyntheticSet) -> None:
    """Every process must distil the same training images from the same starting set (up to float
    rounding of the summary, which may differ between CPUs)."""
    if not dist.active():
        return
    # out of core, the store's fingerprint of the source files stands for the images
    images = [] if data.train.out_of_core else [data.train.images]
    mine = _fingerprint(*images, data.train.labels, syn0.images)
    bad = [r for r, f in enumerate(dist.all_gather_objects(mine))
           if len(f) != len(mine) or not all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(f, mine))]
    if bad:
        raise DistillError(
            f"process {dist.rank()}: the training data or starting set differs from that of process(es) {bad}; "
            "every machine needs the same dataset files (and datadistill version)"
        )
