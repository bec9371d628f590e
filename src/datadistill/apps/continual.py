"""Continual learning with a distilled memory: class-incremental learning in K steps.

Protocol (the class-incremental experiment of the DM paper, Zhao & Bilen, WACV 2023, which follows
GDumb, Prabhu et al., ECCV 2020: the model is retrained from scratch on the memory after every step):

1. The classes are split into K groups in class order (0, 1, ... ; K equal groups when K divides
   the number of classes, otherwise the first groups hold one class more).
2. At step k the classes of group k arrive. Their training images are condensed into IPC images
   per class, seeing **only those classes' images**: a method (`dm`, or a coreset rule such as
   `random` or `herding`, or any other registered method) is run on a class-restricted view of the
   dataset (`restrict_classes`). The memory now holds IPC images per class for every class seen
   so far (the memories of steps 1..k, concatenated).
   A distilled run's set can be used instead (`memory=RUN`): its images of the classes seen so
   far are taken. Such a set was distilled with all classes at once; for DM each class's synthetic
   images only ever matched that class's real images (through randomly drawn networks), so no
   information about later classes enters, but for methods that train a network on all classes
   (gradient or trajectory matching) it does: say so when reporting.
3. A network with outputs for all classes is trained from scratch on the memory with the
   evaluation protocol (`evaluate.evaluate` over `train.train_model`) and tested on the test
   images of all classes seen so far (a final measurement: nothing is selected on it).

Labels stay the dataset's class ids throughout. The methods iterate over the classes of the data
they are given, so the restricted view renumbers the step's classes 0..m-1 (with their original
names) while a method runs; the resulting set is mapped back to the original ids and the full
dataset spec at once (`_to_full`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import resolve_config
from ..data import DatasetSpec, DatasetSplits, ImageData, load_dataset
from ..errors import ConfigError
from ..evaluate import evaluate
from ..methods import available_methods, get_method
from ..rng import resolve_device
from ..run import run_distillation
from ..synset import SyntheticSet


# ------------------------------------------------------------------------------- class bookkeeping
def class_groups(num_classes: int, steps: int) -> list[list[int]]:
    """The classes 0..num_classes-1 in order, split into `steps` contiguous groups (equal when
    `steps` divides `num_classes`; otherwise the first groups hold one class more)."""
    if not isinstance(steps, int) or steps < 1 or steps > num_classes:
        raise ConfigError(f"steps must be between 1 and the number of classes ({num_classes}), got {steps!r}")
    return [g.tolist() for g in np.array_split(np.arange(num_classes), steps)]


def restrict_classes(data: ImageData, classes: Sequence[int], *, renumber: bool = False) -> ImageData:
    """The images of `classes` only, in their original order. `renumber=False`: labels and spec
    unchanged (original class ids, all classes in the spec). `renumber=True`: a view whose spec
    lists only `classes` (names kept) and whose labels are their positions in `classes`."""
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes) or not classes:
        raise ConfigError(f"classes must be distinct and non-empty, got {classes}")
    idx = torch.cat([data.indices_per_class[c] for c in classes]).sort().values
    part = data.subset(idx)
    if not renumber:
        return part
    spec = data.spec
    view = DatasetSpec(
        name=spec.name, channels=spec.channels, im_size=spec.im_size, num_classes=len(classes),
        class_names=tuple(spec.class_names[c] for c in classes), mean=spec.mean, std=spec.std,
    )
    lut = torch.full((spec.num_classes,), -1, dtype=torch.long)
    lut[torch.tensor(classes)] = torch.arange(len(classes))
    return ImageData(part.images, lut[part.labels.cpu()].to(part.labels.device), view)


def restrict_splits(splits: DatasetSplits, classes: Sequence[int]) -> DatasetSplits:
    """The renumbered view of train, val and test restricted to `classes` (what a method sees)."""
    return DatasetSplits(*(restrict_classes(s, classes, renumber=True) for s in (splits.train, splits.val, splits.test)))


def _to_full(syn: SyntheticSet, classes: Sequence[int], spec: DatasetSpec) -> SyntheticSet:
    """A set distilled on a renumbered view, with its labels mapped back to the original ids."""
    if syn.zca is not None:
        raise ConfigError("continual learning with a per-step method does not support ZCA whitening "
                          "(each step would whiten differently); turn it off for the memory method")
    ids = torch.tensor([int(c) for c in classes], dtype=torch.long)
    if syn.soft:
        labels = torch.zeros(len(syn), spec.num_classes, dtype=syn.labels.dtype)
        labels[:, ids] = syn.labels.detach().cpu()
    else:
        labels = ids[syn.labels.detach().cpu()]
    return SyntheticSet(syn.images.detach().cpu(), labels, spec, lr=syn.lr, meta=dict(syn.meta))


def _concat(parts: list[SyntheticSet], spec: DatasetSpec, lr: float | None, zca: dict | None = None) -> SyntheticSet:
    soft = any(p.soft for p in parts)
    labels = []
    for p in parts:
        lab = p.labels.cpu()
        if soft and not p.soft:
            lab = torch.nn.functional.one_hot(lab, spec.num_classes).float()
        labels.append(lab)
    return SyntheticSet(torch.cat([p.images.cpu() for p in parts]), torch.cat(labels), spec, lr=lr, zca=zca)


# ------------------------------------------------------------------------------- results
@dataclass
class StepResult:
    step: int  # 1-based
    new_classes: list[int]
    seen_classes: list[int]
    memory_size: int
    memory_per_class: dict[int, int]
    build_seconds: float  # distilling / selecting the new classes' memory (0 for a given run)
    train_seconds: float  # training the networks on the memory, over all runs
    accuracies: list[float]  # test accuracy on the seen classes' test images, per run
    mean: float
    std: float
    test_images: int
    distill_train_images: int = 0  # real training images the method saw at this step


@dataclass
class ContinualResult:
    dataset: str
    steps: int
    ipc: int
    memory: str
    memory_kind: str  # synthetic | selected | run
    preset: str
    model: str
    epochs: int
    runs: int
    aug: str
    lr: float | None
    seed: int
    device: str
    groups: list[list[int]]
    per_step: list[StepResult]
    notes: list[str] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float]:
        return [s.mean for s in self.per_step]

    @property
    def average_accuracy(self) -> float:
        """Mean over the steps of the accuracy on the classes seen so far (average incremental accuracy)."""
        return float(np.mean(self.accuracies)) if self.per_step else math.nan

    @property
    def build_seconds(self) -> float:
        return float(sum(s.build_seconds for s in self.per_step))

    @property
    def train_seconds(self) -> float:
        return float(sum(s.train_seconds for s in self.per_step))

    def to_dict(self) -> dict:
        d = asdict(self)
        for s in d["per_step"]:
            s["memory_per_class"] = {str(k): v for k, v in s["memory_per_class"].items()}
        d.update(accuracies=self.accuracies, average_accuracy=self.average_accuracy,
                 build_seconds=self.build_seconds, train_seconds=self.train_seconds)
        return d

    def table(self) -> str:
        head = f"{'step':>4}  {'classes seen':<22}{'memory':>8}{'accuracy (%)':>18}{'build s':>10}{'train s':>10}"
        lines = [head, "-" * len(head)]
        for s in self.per_step:
            seen = _ranges(s.seen_classes)
            acc = f"{s.mean:.2f} +- {s.std:.2f}"
            lines.append(f"{s.step:>4}  {seen:<22}{s.memory_size:>8}{acc:>18}{s.build_seconds:>10.1f}{s.train_seconds:>10.1f}")
        lines += [
            "",
            f"{self.memory} memory ({self.memory_kind}), IPC {self.ipc}, {self.steps} steps on {self.dataset}; "
            f"{self.model} trained from scratch per step, {self.epochs} epochs, aug {self.aug}, {self.runs} run(s); "
            f"test images of the seen classes",
            f"average accuracy over the steps: {self.average_accuracy:.2f} %",
        ]
        return "\n".join(lines)


def _ranges(cs: list[int]) -> str:
    if not cs:
        return "-"
    if cs == list(range(cs[0], cs[-1] + 1)) and len(cs) > 2:
        return f"{cs[0]}-{cs[-1]}"
    return ",".join(map(str, cs))


# ------------------------------------------------------------------------------- the experiment
def _memory_source(memory: str | SyntheticSet | Path) -> tuple[str, SyntheticSet | None]:
    if isinstance(memory, SyntheticSet):
        return "run", memory
    text = str(memory)
    if text in available_methods():
        return text, None
    if Path(text).exists():
        return "run", SyntheticSet.load(text)
    raise ConfigError(
        f"memory {text!r} is neither a method ({', '.join(available_methods())}) nor an existing run folder "
        "or .safetensors synthetic set"
    )


def continual_learning(
    dataset: str | None = None,
    steps: int = 5,
    ipc: int | None = 10,
    memory: str | SyntheticSet | Path = "dm",
    *,
    preset: str = "quick",
    epochs: int | None = None,
    runs: int | None = None,
    aug: str | None = None,
    lr: float | None = None,
    model: str = "convnet",
    model_args: dict | None = None,
    seed: int = 0,
    data: DatasetSplits | None = None,
    data_root: str | None = None,
    device: str = "auto",
    distill_options: dict | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ContinualResult:
    """Class-incremental learning in `steps` steps with a memory of `ipc` images per seen class.

    `memory`: a method name (`dm`, `random`, `herding`, ...; run per step with `preset` and
    `distill_options` overriding it, e.g. ``{"iterations": 200}``), or a distilled run folder /
    .safetensors file / SyntheticSet whose images of the seen classes are used (`ipc` None: the
    set's). `data`: the dataset's splits (default: loaded by name). The per-step network is
    `model` (+ `model_args`) trained `epochs` epochs with `aug` at `lr`, `runs` times; None takes
    the evaluation protocol of `preset` (quick: 300 epochs, DSA, 1 run; paper: 1,000, DSA, 5)."""
    kind, given = _memory_source(memory)
    if data is None:
        name = dataset or (given.spec.name if given is not None else None)
        if name is None:
            raise ConfigError("give the dataset (or the data splits)")
        size = given.spec.im_size if given is not None else None
        data = load_dataset(name, data_root, image_size=size, progress=progress)
    spec = data.spec
    dataset = dataset or spec.name
    if given is not None:
        g = given.spec
        if g.num_classes != spec.num_classes or g.channels != spec.channels or tuple(g.im_size) != tuple(spec.im_size):
            raise ConfigError(f"the memory set was distilled on {g.name}, which does not match {spec.name}")
        counts = torch.bincount(given.hard_labels.cpu(), minlength=spec.num_classes).tolist()
        if ipc is None:
            ipc = given.ipc
        if any(c != ipc for c in counts):
            raise ConfigError(f"the memory set holds {counts} images per class; continual learning needs {ipc} of each")
    if not isinstance(ipc, int) or ipc < 1:
        raise ConfigError(f"ipc must be a positive integer, got {ipc!r}")
    groups = class_groups(spec.num_classes, steps)
    dev = resolve_device(device)
    log = log or (lambda _m: None)

    # The evaluation protocol of the preset (the random-selection presets are exactly that).
    proto = resolve_config("random", dataset, ipc, preset).eval
    epochs = epochs if epochs is not None else proto.resolved_epochs()
    runs = runs if runs is not None else max(1, proto.runs)
    aug = aug if aug is not None else proto.aug
    lr = lr if lr is not None else (given.lr if given is not None and given.lr is not None else proto.lr)
    memory_name = kind if kind != "run" else str(memory) if not isinstance(memory, SyntheticSet) else "run"
    memory_kind = "run" if kind == "run" else ("synthetic" if get_method(kind).learns_images else "selected")
    notes = []
    if kind == "run":
        notes.append(f"memory taken from a set distilled on all classes at once "
                     f"(method {given.meta.get('method', '?')}); see the docs on what that implies")

    parts: list[SyntheticSet] = []
    results: list[StepResult] = []
    for k, new in enumerate(groups, start=1):
        seen = [c for grp in groups[:k] for c in grp]
        t0 = time.perf_counter()
        seen_images = 0
        if kind == "run":
            keep = torch.isin(given.hard_labels.cpu(), torch.tensor(new))
            parts.append(SyntheticSet(given.images[keep].cpu(), given.labels[keep].cpu(), spec))
            build = 0.0
        else:
            view = restrict_splits(data, new)
            seen_images = len(view.train)
            cfg = resolve_config(kind, dataset, ipc, preset, seed=seed, device=str(dev),
                                 eval={"runs": 0}, **(distill_options or {}))
            res = run_distillation(cfg, None, data=view, progress=progress, log=log)
            parts.append(_to_full(res.synset, new, spec))
            build = time.perf_counter() - t0
        # a given set's ZCA (if any) stays with its images: evaluate whitens the test images with it
        mem = _concat(parts, spec, given.lr if given is not None else None, given.zca if given is not None else None)
        test = restrict_classes(data.test, seen)
        ev = evaluate(mem, model=model, runs=runs, epochs=epochs, lr=lr, aug=aug, test=test, split="test",
                      device=dev, seed=seed, model_args=model_args, progress=progress)
        per_class = torch.bincount(mem.hard_labels, minlength=spec.num_classes)
        results.append(StepResult(
            step=k, new_classes=list(new), seen_classes=seen, memory_size=len(mem),
            memory_per_class={c: int(per_class[c]) for c in seen}, build_seconds=build,
            train_seconds=ev.train_seconds, accuracies=ev.accuracies, mean=ev.mean, std=ev.std,
            test_images=len(test), distill_train_images=seen_images,
        ))
        log(f"step {k}/{steps}: classes {_ranges(seen)}, memory {len(mem)} images, "
            f"accuracy {ev.mean:.2f} +- {ev.std:.2f} % ({build:.1f} s building, {ev.train_seconds:.1f} s training)")
    return ContinualResult(
        dataset=dataset, steps=steps, ipc=ipc, memory=memory_name, memory_kind=memory_kind, preset=preset,
        model=model, epochs=epochs, runs=runs, aug=aug, lr=lr, seed=seed, device=str(dev), groups=groups,
        per_step=results, notes=notes,
    )
