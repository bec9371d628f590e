"""The evaluation protocol: train a fresh network N times on a set, test each once on real data.

Reported: per-run accuracies (percent), mean and std over the runs (population std, as the
DC/DSA/DM papers report), training seconds per run, and FLOPs counted with
`torch.utils.flop_counter` (convolutions and matrix products; element-wise work is not counted).

The N runs are independent, so they are trained together where the network allows
(`train.train_models`: stacked parameters, one vectorized step for all runs; `batched="auto"`),
and, under torchrun, split across the processes (`dist.shard`: process k trains runs k, k + P, ...).
Run r draws everything from its own generator `make_generator(seed, "evaluate", model, r)` (its
initialization, then per epoch its shuffling and its augmentation), whichever way it is trained
and wherever, so its accuracy does not depend on the batching or the number of processes beyond
floating-point rounding.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from . import dist
from .augment import DEFAULT_STRATEGY, DSA, strategy_for
from .config import EvalConfig, check_protocol
from .data import ImageData, load_dataset
from .data.zca import whiten
from .errors import ConfigError
from .memstats import peak_memory
from .nets import make_net
from .numerics import check_precision
from .rng import make_generator, resolve_device
from .synset import SyntheticSet
from .train import Augment, Objective, accuracy, batching_blocker, classification_loss, train_model, train_models

DEFAULT_LR = 0.01


@dataclass
class EvalResult:
    model: str
    runs: int
    accuracies: list[float]
    mean: float
    std: float
    train_seconds: float  # total over the runs
    train_seconds_per_run: list[float]
    flops: dict[str, float]
    epochs: int
    lr: float
    aug: str
    split: str = "test"
    train_images: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.model}: {self.mean:.2f} +- {self.std:.2f} % on {self.split} "
            f"({self.runs} run{'s' if self.runs != 1 else ''}, {self.epochs} epochs, aug {self.aug}, "
            f"{self.train_seconds / max(1, self.runs):.1f} s/run)"
        )


def make_augment(aug: str, dataset: str, strategy: str = DEFAULT_STRATEGY, digit_rule: bool = True,
                 dc_rotate: str = "bilinear") -> Augment | None:
    """The training-time augmentation of the evaluation protocol, as a callable (x, generator) -> x.
    `digit_rule`: drop flip on digit datasets (`augment.strategy_for`; False: the strategy as given,
    the reference code's augmentation). `dc_rotate`: the DC augmentation's rotation, "bilinear" or
    "spline" (the reference's; `augment_eval.DCAugment`)."""
    if aug == "none":
        return None
    if aug == "dsa":
        dsa = DSA(strategy_for(dataset, strategy, digit_rule))
        return lambda x, g: dsa(x, dsa.sample(x.shape[0], g, siamese=False))
    if aug == "dc":  # the DC paper's non-differentiable augmentation; MNIST family only, else none
        from .augment_eval import dc_augment_for

        return dc_augment_for(dataset, dc_rotate)
    raise ConfigError(f"unknown evaluation augmentation {aug!r}; use dsa, dc or none")


def count_flops(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(training FLOPs per image: forward + backward, test FLOPs per image: forward)."""
    n = x.shape[0]
    with FlopCounterMode(display=False) as fc:
        classification_loss(net(x), y).backward()
    train = fc.get_total_flops() / n
    net.zero_grad(set_to_none=True)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return float(train), float(fc.get_total_flops() / n)


def flops_of_training(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int,
                      test_images: int) -> dict[str, float]:
    """FLOPs of training `net` for `epochs` epochs on (x, y) and testing it on `test_images`
    images: per image (counted on one batch) and in total."""
    b = min(batch_size, x.shape[0])
    tr, te = count_flops(net, x[:b], y[:b])
    return {"train_per_image": tr, "train_total": tr * x.shape[0] * epochs, "test_per_image": te,
            "test_total": te * test_images}


def evaluate(
    syn: SyntheticSet | ImageData | str | os.PathLike,
    protocol: EvalConfig | str | None = None,
    *,
    model: str | None = None,
    test: ImageData | None = None,
    split: str = "test",
    train: ImageData | None = None,
    val: ImageData | None = None,
    data_root: str | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    model_args: dict | None = None,
    progress: bool = True,
    **settings: Any,
) -> EvalResult:
    """Train `protocol.runs` fresh networks `model` on `syn` (a `SyntheticSet`, real `ImageData`, or
    the path of a run folder or a `.safetensors` set, read with `SyntheticSet.load`) and test each once on `test`
    (default: the real test split of the set's dataset; `split="val"` for the validation split,
    which is what anything that selects must use); the real data is read from `data_root`, by
    default where the set's run read it (`SyntheticSet.default_data_root`).

    `protocol`: the evaluation protocol, an `EvalConfig` (a run's ``cfg.eval``); `settings`
    override its fields by name (``runs=5, epochs=300, lr=0.01, aug="none", ...``), which is also
    the keyword form of the Python API: without a protocol they apply to the defaults below.
    A string in place of the protocol is a named protocol (``evaluate(syn, "vico")``, one of
    `protocols.protocol_names()`), or else taken as `model` (``evaluate(syn, "lenet")``).
    `model` None: the protocol's first network.

    Defaults without a protocol: 5 runs; `epochs` None: 1000 with DSA, 300 without (the papers'
    protocol); `lr` None: the set's learned lr if it carries one, else 0.01; batch 256, momentum
    0.9, weight decay 5e-4, DSA augmentation.

    `gain=True` (DD-Ranking style) also evaluates, under the identical protocol (model, runs,
    seeds, epochs, lr, augmentation, test split), a random subset of the real training split `train`
    (default: loaded like `test`) with the same number of images per class, drawn with a fixed
    generator (see `random_real_subset`), and adds `extra["random_mean"]`, `extra["random_std"]`,
    `extra["random_accuracies"]` and `extra["gain"]` = mean - random_mean (percentage points).

    `batched`: "auto" (default) trains the runs together on a GPU when there is more than one and
    the network allows it (no batch norm running statistics; on a CPU they train faster one after
    another); True insists (ConfigError when the network does not allow it); False trains them one
    after another. `extra["batched"]` says what was done and `extra["batched_reason"]` why not,
    when not. Batched runs share one wall time, reported as equal per-run shares.

    `precision` "bf16": training and testing forward passes under bf16 autocast (numerics.py;
    recorded in `extra["precision"]`). `compile=True`: each training step's forward and loss through
    `torch.compile` (train.py; recorded in `extra["compile"]`; off by default: it changes rounding
    and the compilation pays only for long trainings). `channels_last=True`: each network trains
    in the channels-last memory layout, one at a time (train.py; `extra["channels_last"]`; off by
    default). Under torchrun (`dist.active()`) each process trains its share of the runs and every
    process returns the full result, runs in order; `extra["processes"]` is the number of processes.

    Soft labels (`protocol.soft`): `labels="teacher"` labels every augmented (and mixed) batch with
    the teacher in `protocol.teacher` (a `datadistill teacher` folder); `loss` kl / soft_ce / mse_gt
    with `temperature` (`train.soft_label_loss`); `mix` cutmix / mixup; `optimizer` adamw and
    `schedule` cosine for the SRe2L/RDED-style student. Those runs train one after another.
    `labels="hard"` evaluates a soft-labelled set with hard labels: the class each image was made
    for where the set records it (a teacher's relabelling does, `made_for`), else the arg-max. A set
    relabelled in teacher mode (``meta["labels"]["mode"] == "teacher"``) is labelled by its recorded
    teacher under ``labels="auto"``.

    `protocol.lr_grid`: when the set carries no learned lr and `lr` is not given, one network per
    grid value trains on the set and is tested on the validation split `val` (loaded when not given;
    the test split is not touched), and the best lr is used for the runs; `extra["lr_selection"]`
    records the grid, the validation accuracies and the choice."""
    if isinstance(syn, (str, os.PathLike)):
        syn = SyntheticSet.load(syn)
    elif not isinstance(syn, (SyntheticSet, ImageData)):
        raise TypeError(f"evaluate takes a SyntheticSet, ImageData or the path of a run folder or set file, "
                        f"got {type(syn).__name__}")
    if isinstance(protocol, str):  # a named protocol ("vico", "ddranking", ...), else a network
        from .protocols import load_protocol, protocol_names

        if protocol in protocol_names():
            protocol = load_protocol(protocol)
        else:
            model, protocol = protocol if model is None else model, None
    p = protocol_with(protocol, settings)
    check_protocol(p)
    model = model if model is not None else p.models[0]
    return _evaluate(syn, p, model, test=test, split=split, train=train, val=val, data_root=data_root, device=device,
                     seed=seed, model_args=model_args, progress=progress)


def protocol_with(protocol: EvalConfig | None, settings: dict) -> EvalConfig:
    """`protocol` (default: the keyword API's defaults, 5 runs) with `settings` fields replaced;
    ConfigError naming an unknown one."""
    base = protocol if protocol is not None else EvalConfig(runs=5)
    known = {f.name for f in fields(EvalConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown evaluation setting(s) {unknown}; valid: {sorted(known)}")
    from .typed import coerce, field_types  # "0.01,0.1" for lr_grid, "300" for epochs: the field's type

    types_ = field_types(EvalConfig)
    settings = {k: coerce(v, types_[k], f"evaluation setting {k}") for k, v in settings.items()}
    return replace(base, **settings) if settings else base


def _evaluate(syn: SyntheticSet | ImageData, p: EvalConfig, model: str, *, test: ImageData | None, split: str,
              train: ImageData | None, data_root: str | None, device: str | torch.device, seed: int,
              model_args: dict | None, progress: bool, val: ImageData | None = None) -> EvalResult:
    runs, epochs, lr, aug, batched, gain = p.runs, p.epochs, p.lr, p.aug, p.batched, p.gain
    precision, compile, channels_last = p.precision, p.compile, p.channels_last
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    if batched not in ("auto", True, False):
        raise ConfigError(f"batched must be 'auto', True or False, got {batched!r}")
    dev = resolve_device(device)
    check_precision(precision, dev)
    spec = syn.spec
    p = _with_recorded_teacher(p, syn)
    objective = _objective(p, syn, spec, dev) if p.soft else None  # the teacher checked before any training
    set_lr = syn.lr if isinstance(syn, SyntheticSet) else None
    grid = p.lr_grid if (p.lr is None and set_lr is None and p.lr_grid) else []
    if test is None or (gain and train is None) or (grid and val is None):
        if data_root is None and isinstance(syn, SyntheticSet):
            data_root = syn.default_data_root()  # where the set was distilled from
        splits = load_dataset(spec.name, data_root, image_size=spec.im_size, progress=progress)
        if test is None:
            test = splits.val if split == "val" else splits.test
        if gain and train is None:
            train = splits.train
        if grid and val is None:
            val = splits.val
    if grid:  # choose the lr on the validation split, then evaluate with it
        choice = _choose_lr(syn, p, model, grid, val=val, data_root=data_root, device=device, seed=seed,
                            model_args=model_args)
        result = _evaluate(syn, replace(p, lr=choice["chosen"], lr_grid=[]), model, test=test, split=split,
                           train=train, data_root=data_root, device=device, seed=seed, model_args=model_args,
                           progress=progress)
        result.extra["lr_selection"] = choice
        return result
    real_test = test
    if isinstance(syn, SyntheticSet):
        if syn.zca is not None:  # the set lives in whitened space: whiten the real test images too
            test = apply_zca(test, syn.zca)
        images, labels = syn.images.detach(), syn.labels.detach()
    else:
        images, labels = syn.images, syn.labels
    if p.labels == "hard" and labels.ndim == 2:
        labels = made_for(syn) if isinstance(syn, SyntheticSet) else labels.argmax(1)
    lr = lr if lr is not None else (set_lr if set_lr is not None else DEFAULT_LR)
    epochs = epochs if epochs is not None else (1000 if aug == "dsa" else 300)
    images, labels = images.to(dev), labels.to(dev)
    test_x, test_y = test.images.to(dev), test.labels.to(dev)
    augment = make_augment(aug, spec.name, p.dsa_strategy, p.dsa_digit_rule, p.dc_rotate)
    mine = dist.shard(list(range(runs)))  # all runs without a process group
    gens = [make_generator(seed, "evaluate", model, r) for r in mine]
    nets = [make_net(model, spec.channels, spec.num_classes, spec.im_size, generator=g, **(model_args or {})).to(dev)
            for g in gens]
    probe = make_net(model, spec.channels, spec.num_classes, spec.im_size, **(model_args or {})).to(dev)
    flops = flops_of_training(probe, images, labels, p.batch_size, epochs, test_x.shape[0])
    together, why_not = _batching_choice(batched, nets if nets else [probe], runs, dev, channels_last, p.soft)
    train_kw = dict(epochs=epochs, lr=lr, batch_size=p.batch_size, momentum=p.momentum, weight_decay=p.weight_decay,
                    aug=augment, progress=progress, precision=precision, compile=compile, optimizer=p.optimizer,
                    schedule=p.schedule)
    if together:
        results = train_models(nets, images, labels, generators=gens, desc=f"eval {model} x{len(nets)} runs", **train_kw)
    else:
        results = [train_model(net, images, labels, generator=g, desc=f"eval {model} run {r + 1}/{runs}",
                               channels_last=channels_last, objective=objective, **train_kw)
                   for r, net, g in zip(mine, nets, gens)]
    tested = tqdm(list(zip(mine, nets, results)), desc=f"test {model} on {test_x.shape[0]:,} images", unit="run",
                  disable=not progress, leave=False, file=sys.stderr)
    done = {r: (accuracy(net, test_x, test_y, precision=precision), res.seconds) for r, net, res in tested}
    for part in dist.all_gather_objects(done):
        done.update(part)
    accs = [done[r][0] for r in range(runs)]
    secs = [done[r][1] for r in range(runs)]
    result = EvalResult(
        model=model, runs=runs, accuracies=accs, mean=float(np.mean(accs)), std=float(np.std(accs)),
        train_seconds=float(sum(secs)), train_seconds_per_run=secs, flops=flops, epochs=epochs,
        lr=float(lr), aug=aug, split=split, train_images=int(images.shape[0]),
    )
    result.extra["batched"] = together
    if why_not:
        result.extra["batched_reason"] = why_not
    result.extra["processes"] = dist.world_size()
    result.extra["precision"] = precision
    result.extra["compile"] = compile
    result.extra["channels_last"] = channels_last
    result.extra["protocol"] = p.protocol
    if aug == "dsa":
        result.extra["dsa_strategy"] = strategy_for(spec.name, p.dsa_strategy, p.dsa_digit_rule)
    if aug == "dc":
        result.extra["dc_rotate"] = p.dc_rotate
    if p.soft or p.labels != "auto":
        result.extra["labels"] = {"labels": p.labels, "teacher": p.teacher, "loss": p.loss,
                                  "temperature": p.temperature, "mix": p.mix, "optimizer": p.optimizer,
                                  "schedule": p.schedule}
    # the high-water marks after this evaluation: the largest over the processes, so that every
    # process returns the same result
    peaks = dist.all_gather_objects(peak_memory(dev))
    result.extra.update({k: max(q[k] for q in peaks) for k in peaks[0]})
    if gain:
        rand = _evaluate(random_real_subset(syn, train), replace(p, epochs=epochs, lr=lr, gain=False), model,
                         test=real_test, split=split, train=None, data_root=data_root, device=dev, seed=seed,
                         model_args=model_args, progress=progress)
        result.extra.update(
            random_mean=rand.mean, random_std=rand.std, random_accuracies=rand.accuracies,
            gain=result.mean - rand.mean,
        )
    return result


def _objective(p: EvalConfig, syn, spec, device: torch.device) -> Objective:
    """The soft-label objective of protocol `p` for the set `syn` (the teacher loaded and checked)."""
    teacher = None
    if p.labels == "teacher":
        from .teacher import Teacher

        if isinstance(syn, SyntheticSet) and syn.zca is not None:
            raise ConfigError("the set is ZCA-whitened and the teacher sees normalized images; evaluate it with its "
                              "own labels (labels auto) instead of labels teacher")
        art = Teacher.open(p.teacher)
        art.check_spec(spec)
        teacher = art.network(device)
    return Objective(loss=p.loss, temperature=p.temperature, teacher=teacher, mix=p.mix, mix_beta=p.mix_beta,
                     ce_weight=p.ce_weight, num_classes=spec.num_classes)


def made_for(syn: SyntheticSet) -> torch.Tensor:
    """The hard label of each image: the class it was made for where its relabelling recorded it
    (``meta["labels"]["classes"]``: a teacher's distribution may put another class first), else the
    arg-max of its labels."""
    rec = syn.meta.get("labels")
    classes = rec.get("classes") if isinstance(rec, dict) else None
    if isinstance(classes, list) and len(classes) == len(syn) and all(
            isinstance(c, int) and 0 <= c < syn.spec.num_classes for c in classes):
        return torch.tensor(classes, dtype=torch.long, device=syn.labels.device)
    return syn.hard_labels


def _with_recorded_teacher(p: EvalConfig, syn) -> EvalConfig:
    """`p` with teacher labels when its labels are the set's own (auto) and the set records that its
    labels are a teacher's made on the fly (``meta["labels"]["mode"] == "teacher"``, written by the
    relabelling of SRe2L, RDED and the coresets; `--teacher DIR` overrides the recorded folder)."""
    rec = syn.meta.get("labels") if isinstance(syn, SyntheticSet) else None
    if p.labels != "auto" or not isinstance(rec, dict) or rec.get("mode") != "teacher":
        if p.teacher and p.labels != "teacher":  # a teacher that nothing would use: say so, not ignore it
            raise ConfigError(f"a teacher ({p.teacher}) labels batches only with labels teacher; add --labels teacher "
                              f"(or drop --teacher to evaluate with the set's {p.labels} labels)")
        return p
    folder = p.teacher or rec.get("teacher")
    if not folder:
        raise ConfigError("the set's labels are a teacher's made on the fly, but it names no teacher folder; give "
                          "--teacher DIR")
    return replace(p, labels="teacher", teacher=str(folder))


def _choose_lr(syn, p: EvalConfig, model: str, grid: list[float], *, val: ImageData, data_root, device, seed: int,
               model_args) -> dict:
    """One network per lr of `grid`, each tested on the validation split; the best lr (ties: the first)."""
    accs = []
    for lr in grid:
        r = _evaluate(syn, replace(p, lr=lr, lr_grid=[], runs=1, gain=False), model, test=val, split="val",
                      train=None, data_root=data_root, device=device, seed=seed + 104729, model_args=model_args,
                      progress=False)
        accs.append(r.mean)
    best = max(range(len(grid)), key=lambda i: (accs[i], -i))
    return {"grid": list(grid), "val_accuracy": accs, "chosen": grid[best], "split": "val"}


def _batching_choice(batched: bool | str, nets: list[torch.nn.Module], runs: int,
                     device: torch.device, channels_last: bool = False, soft: bool = False) -> tuple[bool, str]:
    """(train the runs together?, why not when not). Decided on the total number of runs, so every
    process of a torchrun group decides alike (a process whose share is one run trains it stacked).
    "auto" batches on a GPU only: on the 2-core CPU, batched training was 0.72x to 0.81x the speed
    of sequential training (benchmarks/results/speed.json and its previous run, quiet machine)."""
    if batched is False:
        return False, "sequential training was asked for (batched=False)"
    if soft:
        if batched is True:
            raise ConfigError("soft-label protocols (teacher labels, soft-label losses, mixing) train one network at "
                              "a time; drop --batched")
        return False, "soft-label protocols train one network at a time"
    if channels_last:
        if batched is True:
            raise ConfigError("channels_last trains networks one at a time (stacked runs have no channels-last "
                              "layout); drop one of --channels-last and --batched")
        return False, "channels_last trains networks one at a time"
    blocker = batching_blocker(nets)
    if blocker is not None:
        if batched is True:
            raise ConfigError(f"cannot train the runs together: {blocker}; use batched='auto' or False (--no-batched)")
        return False, blocker
    if runs < 2:
        return False, "a single run"
    if batched == "auto" and device.type == "cpu":
        return False, "on a CPU the runs train faster one after another (batched=True to stack them anyway)"
    return True, ""


def random_real_subset(syn: SyntheticSet | ImageData, train: ImageData, seed: int = 0) -> SyntheticSet:
    """A random subset of the real training split with the class balance of `syn`: as many real
    images of class c as `syn` has images whose (arg-max) label is c, drawn without replacement
    with a fixed generator (`seed`, independent of the evaluation seed). Labels: hard labels for a
    hard-labelled set; for a soft-labelled set, the set's own label rows, the rows of class c given
    in their order to the real images of class c (the random baseline gets the same label
    information, only the images differ). A ZCA-whitened set's subset is whitened with its ZCA."""
    if isinstance(syn, SyntheticSet):
        hard, labels, zca = syn.hard_labels.cpu(), syn.labels.detach().cpu(), syn.zca
    else:
        hard, labels, zca = syn.labels.cpu(), syn.labels.cpu(), None
    spec = syn.spec
    if train.spec.num_classes != spec.num_classes or tuple(train.images.shape[1:]) != (spec.channels, *spec.im_size):
        raise ConfigError(f"the training split ({train.spec.name}) does not match the set's dataset ({spec.name})")
    g = make_generator(seed, "gain-random-subset")
    counts = train.class_counts()
    picks = torch.empty(hard.shape[0], dtype=torch.long)
    for c in range(spec.num_classes):
        slots = torch.nonzero(hard == c).flatten()
        if slots.numel() > counts[c]:
            raise ConfigError(
                f"the set has {slots.numel()} images of class {c} but the training split only {counts[c]}; "
                "no random real subset of the same size exists"
            )
        pool = train.indices_per_class[c]
        picks[slots] = pool[torch.randperm(pool.numel(), generator=g)[: slots.numel()]]
    data = train.subset(picks)
    images = data.images.detach().cpu()
    if zca is not None:
        images = apply_zca(ImageData(images, data.labels.cpu(), train.spec), zca).images
    out_labels = labels.clone() if labels.ndim == 2 else data.labels.detach().cpu().clone()
    return SyntheticSet(images, out_labels, spec, zca=zca, meta={"selection": "random real subset", "indices": picks.tolist()})


def apply_zca(data: ImageData, zca: dict[str, torch.Tensor]) -> ImageData:
    """Whiten real images with a set's stored ZCA so they live in the same space as the set
    (`data.zca.whiten`; kept under this name for the Python API)."""
    return whiten(data, zca)
