"""A mutation fuzzer of the package's file readers (used by tests/test_fuzz.py and benchmarks/fuzz.py).

Each target writes one valid file of its format (generated: a tiny IDX MNIST, a CIFAR-10 batch,
an ImageFolder of PNGs, a synthetic-set safetensors file, a checkpoint.pt, an expert shard and
its manifest), then reads mutated copies of it with the package's own reader, going on to use
what was read the way the package does (a set's grid, a checkpoint restored into a distiller, an
expert's parameters). A reader may accept a mutated file or refuse it with the package's own
error (`DatadistillError`); anything else (an IndexError, a RecursionError, a MemoryError, ...)
is a finding. Mutations: bit flips, bytes set to boundary values, truncation, insertion,
deletion and duplication of a chunk, and, inside JSON headers and text, numbers replaced by
boundary numbers. Everything is drawn from one `random.Random(seed)`.
"""
from __future__ import annotations

import gzip
import io
import json
import pickle
import random
import re
import shutil
import struct
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import data_fixtures as fx
from datadistill.errors import DatadistillError

BOUNDARY = (0, 1, 0x7F, 0x80, 0xFF)
NUMBERS = ("0", "-1", "1", "4294967296", "99999999999999999999", "1e308", "-0", "3.5", "NaN", "[]", "{}", '"x"', "null")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random mutations of `data`."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        n = len(b)
        if op == 0 and n:  # flip bits
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # boundary bytes
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(n)] = rng.choice(BOUNDARY)
        elif op == 2 and n:  # truncate
            del b[rng.randrange(n):]
        elif op == 3:  # insert random bytes
            at = rng.randrange(n + 1)
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4 and n:  # delete a range
            at = rng.randrange(n)
            del b[at:at + rng.randint(1, 64)]
        elif op == 5 and n:  # duplicate a chunk
            at = rng.randrange(n)
            chunk = b[at:at + rng.randint(1, 64)]
            to = rng.randrange(n + 1)
            b[to:to] = chunk
        else:  # replace a number of the text (JSON headers) with a boundary value
            text = bytes(b)
            nums = list(re.finditer(rb"-?\d+(\.\d+)?", text[:1 << 16]))
            if nums:
                m = rng.choice(nums)
                b = bytearray(text[:m.start()] + rng.choice(NUMBERS).encode() + text[m.end():])
    return bytes(b)


def mutate_safetensors_header(data: bytes, rng: random.Random) -> bytes:
    """Mutate only the JSON header of a safetensors file (keeping its length prefix right), where
    a crafted file differs from a corrupted one: dtypes, shapes, offsets, the metadata strings."""
    (n,) = struct.unpack("<Q", data[:8])
    header = mutate(data[8:8 + n], rng)
    return struct.pack("<Q", len(header)) + header + data[8 + n:]


@dataclass
class Target:
    name: str
    files: dict[str, bytes]  # relative path -> valid content
    fuzzed: tuple[str, ...]  # which of them get mutated
    read: Callable[[Path], object]  # reads the folder's files the way the package does
    mutators: tuple[Callable[[bytes, random.Random], bytes], ...] = (mutate,)


def _read_all(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build_targets(work: Path) -> list[Target]:
    """The valid files of every format, generated in `work`."""
    from datadistill.checkpoints import read_checkpoint, restore, write_checkpoint
    from datadistill.config import resolve_config
    from datadistill.data.cifar import read_batch
    from datadistill.data.folder import load_image_folder
    from datadistill.data.idx import load_idx_folder
    from datadistill.methods.trajectory import ExpertSettings, open_experts, train_experts
    from datadistill.methods.distribution import DistributionMatching
    from datadistill.synset import SyntheticSet
    from toydata import toy_splits

    targets = []
    # IDX: mutate the decompressed bytes (then gzip them) or the gz file itself
    mn = work / "mnist"
    fx.write_mnist(mn, [3] * 10, [1] * 10)
    raw_idx = {k: gzip.decompress(v) for k, v in _read_all(mn).items()}

    def read_idx(folder: Path):
        for name in list(raw_idx):
            p = folder / f"{name}.raw"
            if p.exists():
                (folder / name).write_bytes(gzip.compress(p.read_bytes(), compresslevel=1))
                p.unlink()
        return load_idx_folder(folder, tuple(str(i) for i in range(10)))

    targets.append(Target("idx", {**_read_all(mn), **{f"{k}.raw": v for k, v in raw_idx.items()}},
                          tuple(_read_all(mn)) + tuple(f"{k}.raw" for k in raw_idx), read_idx))

    # CIFAR: one pickled batch (protocol 2, as the published files)
    batch = io.BytesIO()
    pickle.dump(fx.cifar_batch(fx.class_labels([2] * 10)), batch, protocol=2)
    targets.append(Target("cifar", {"data_batch_1": batch.getvalue()}, ("data_batch_1",),
                          lambda f: read_batch(f / "data_batch_1", b"labels", 10)))

    # PNG: an ImageFolder of two classes, two grey and one RGB image each
    imgs = work / "images"
    for c in ("a", "b"):
        for i in range(2):
            fx.write_image(imgs / c / f"{i}.png", fx.images_for(np.array([i]), 1, 8)[0, 0])
        fx.write_image(imgs / c / "rgb.png", fx.images_for(np.array([1]), 3, 8)[0].transpose(1, 2, 0).copy())
    png = _read_all(imgs)
    targets.append(Target("png", png, tuple(png), lambda f: load_image_folder(f)))

    # a synthetic set (with soft labels, a learned lr and a ZCA, so every field is there to mutate)
    data = toy_splits(num_classes=3, per_class=4, size=6)
    d = 6 * 6
    syn = SyntheticSet(data.train.images[:6].clone(), torch.softmax(torch.randn(6, 3), 1), data.spec, lr=0.01,
                       zca={"mean": torch.zeros(d), "transform": torch.eye(d), "inverse": torch.eye(d)},
                       meta={"method": "fuzz", "config": {"dataset": "toy"}})
    syn.save(work / "set.safetensors")

    def read_set(f: Path):
        s = SyntheticSet.load(f / "set.safetensors")
        return s.ipc, s.grid_array().shape, s.pixels().shape, len(s)

    targets.append(Target("synset", {"set.safetensors": (work / "set.safetensors").read_bytes()}, ("set.safetensors",),
                          read_set, (mutate, mutate_safetensors_header)))

    # a checkpoint of a DM run on the toy data, restored into a fresh distiller
    cfg = resolve_config("dm", "toy", 2, "quick", device="cpu", batch_real=4, model_args={"width": 8, "depth": 2},
                         eval={"runs": 0})
    data = toy_splits(num_classes=3, per_class=4, size=8)
    from datadistill.methods import initial_synset
    from datadistill.rng import make_generator

    dm = DistributionMatching(cfg, data, torch.device("cpu"))
    dm.init(initial_synset(data.train, 2, "real", make_generator(0, "init")))
    dm.step(0)
    write_checkpoint(work / "checkpoint.pt", 1, dm.state_dict())

    def read_ckpt(f: Path):
        state = read_checkpoint(f / "checkpoint.pt")
        restore(dm, state, f / "checkpoint.pt")
        return dm.step(1)

    targets.append(Target("checkpoint", {"checkpoint.pt": (work / "checkpoint.pt").read_bytes()}, ("checkpoint.pt",),
                          read_ckpt))

    # one expert of two epochs on the toy data: its shard and the manifest
    ex = work / "experts"
    train_experts(ExpertSettings("toy", num_experts=1, epochs=2, batch_size=8, model_args={"width": 8, "depth": 2}),
                  ex, data=data, device="cpu", progress=False, log=lambda m: None)
    ex_files = _read_all(ex)

    def read_experts(f: Path):
        e = open_experts(f)
        return e.params(0, e.epochs).shape, e.trajectory(0).shape

    targets.append(Target("expert", ex_files, ("expert_0000.safetensors", "manifest.json"), read_experts,
                          (mutate, lambda b, r: mutate_safetensors_header(b, r) if b[8:9] == b"{" else mutate(b, r))))
    return targets


@dataclass
class Tally:
    inputs: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)  # the package's own error
    foreign: Counter = field(default_factory=Counter)
    findings: list[dict] = field(default_factory=list)  # the first few of each foreign kind

    def to_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in ("inputs", "accepted", "refused", "foreign")} | {
            "total_inputs": sum(self.inputs.values()), "total_foreign": sum(self.foreign.values()),
            "findings": self.findings}


def run(work: Path, seed: int, per_target: int | None = None, seconds: float | None = None,
        only: tuple[str, ...] = ()) -> Tally:
    """Fuzz every target (or those in `only`) with `per_target` inputs each, or for `seconds`
    seconds in all (split evenly), from `random.Random(seed)`."""
    rng = random.Random(seed)
    tally = Tally()
    targets = [t for t in build_targets(work / "valid") if not only or t.name in only]
    budget = seconds / len(targets) if seconds else None
    for t in targets:
        folder = work / "case" / t.name
        t_end = time.monotonic() + budget if budget else None
        k = 0
        while (per_target is None or k < per_target) and (t_end is None or time.monotonic() < t_end):
            k += 1
            shutil.rmtree(folder, ignore_errors=True)
            for rel, content in t.files.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(content)
            victim = rng.choice(t.fuzzed)
            (folder / victim).write_bytes(rng.choice(t.mutators)(t.files[victim], rng))
            tally.inputs[t.name] += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t.read(folder)
            except DatadistillError:
                tally.refused[t.name] += 1
            except Exception as e:  # noqa: BLE001 (what the fuzzer is looking for)
                kind = f"{t.name}: {type(e).__name__}"
                tally.foreign[kind] += 1
                if tally.foreign[kind] <= 3:
                    tally.findings.append({"target": t.name, "file": victim, "error": type(e).__name__,
                                           "message": str(e)[:300]})
            else:
                tally.accepted[t.name] += 1
    return tally


def summary(tally: Tally) -> str:
    rows = [f"{n}: {tally.inputs[n]} inputs, {tally.accepted[n]} accepted, {tally.refused[n]} refused"
            for n in tally.inputs]
    return "; ".join(rows) + f"; foreign errors: {dict(tally.foreign) or 'none'}"


def to_json(tally: Tally) -> str:
    return json.dumps(tally.to_dict(), indent=2)
