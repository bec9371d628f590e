"""A table of bad inputs: each ends in exactly one `error:` line on stderr that says what to do,
exit status 2, no traceback, and nothing that was on disk before is changed.

Everything runs in-process (`datadistill.cli.main`) on tiny generated data: an IDX MNIST of four
images per class, a one-iteration run folder, a one-epoch expert, a two-class ImageFolder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from data_fixtures import Evil, images_for, unused_url, write_cifar10, write_image, write_mnist, write_pickle
from datadistill.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--ipc", "1", "--iterations", "1", "--batch-real", "2", "--checkpoint-every", "1", "--eval-runs", "0",
        "--device", "cpu", "--no-progress"]


@dataclass
class World:
    root: Path  # data root: mnist/ (IDX), cifar10/
    run: Path  # a finished one-iteration run folder
    synset: Path  # a copy of its set
    experts: Path  # one expert of one epoch on the tiny MNIST
    folder: Path  # an ImageFolder of two classes, 3 images each
    teacher: Path  # a one-epoch ConvNet-BN teacher on the tiny MNIST
    teacher_no_bn: Path  # an imported ConvNet (instance norm) teacher: no batch norm

    def data(self, *extra: str) -> list[str]:
        return ["--dataset", "mnist", "--data-root", str(self.root), *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("world")
    root = base / "data"
    write_mnist(root / "mnist")
    write_cifar10(root / "cifar10")
    run = base / "run"
    assert main(["distill", "--dataset", "mnist", "--data-root", str(root), *TINY, "--out", str(run)]) == 0
    synset = base / "set.safetensors"
    shutil.copy(run / "synset.safetensors", synset)
    experts = base / "experts"
    assert main(["experts", "--dataset", "mnist", "--data-root", str(root), "--experts", "1", "--epochs", "2",
                 "--batch-size", "8", "--device", "cpu", "--no-progress", "--out", str(experts)]) == 0
    folder = base / "images"
    for c in ("cat", "dog"):
        for i in range(3):
            write_image(folder / c / f"{i}.png", images_for(np.array([i % 2]), 1, 8)[0, 0])
    teacher = base / "teacher"
    assert main(["teacher", "--dataset", "mnist", "--data-root", str(root), "--epochs", "1", "--model-arg", "width=4",
                 "--model-arg", "depth=1", "--device", "cpu", "--no-progress", "--out", str(teacher)]) == 0
    from datadistill.nets import make_net

    state = base / "convnet.pt"
    torch.save(make_net("convnet", 1, 10, (28, 28), width=4, depth=1).state_dict(), state)
    no_bn = base / "teacher-no-bn"
    assert main(["teacher", "--dataset", "mnist", "--data-root", str(root), "--model", "convnet", "--model-arg",
                 "width=4", "--model-arg", "depth=1", "--from", str(state), "--device", "cpu", "--no-progress",
                 "--out", str(no_bn)]) == 0
    return World(root, run, synset, experts, folder, teacher, no_bn)


# ------------------------------------------------------------------------------------ file mutators
def read_set(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def mutate_set(w: World, tmp: Path, tensors: Callable[[dict], None] | None = None,
               meta: Callable[[dict], None] | None = None, spec: Callable[[dict], None] | None = None) -> Path:
    """A copy of the world's set with its tensors, metadata or spec changed."""
    t, m = read_set(w.synset)
    if tensors:
        tensors(t)
    if spec:
        s = json.loads(m["spec"])
        spec(s)
        m["spec"] = json.dumps(s)
    if meta:
        meta(m)
    dest = tmp / "bad.safetensors"
    save_file(t, str(dest), metadata=m)
    return dest


def copy_run(w: World, tmp: Path) -> Path:
    dest = tmp / "run"
    shutil.copytree(w.run, dest)
    return dest


def copy_experts(w: World, tmp: Path) -> Path:
    dest = tmp / "experts"
    shutil.copytree(w.experts, dest)
    return dest


def edit_manifest(w: World, tmp: Path, edit: Callable[[dict], None]) -> Path:
    d = copy_experts(w, tmp)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def corrupt_shard_payload(w: World, tmp: Path) -> Path:
    """Flip bytes of an expert's tensor data, keeping its safetensors header intact."""
    d = copy_experts(w, tmp)
    shard = d / "expert_0000.safetensors"
    raw = bytearray(shard.read_bytes())
    header = 8 + struct.unpack("<Q", raw[:8])[0]
    for k in range(header + 16, len(raw), 997):
        raw[k] ^= 0x5A
    shard.write_bytes(bytes(raw))
    return d


def write_config(w: World, tmp: Path, text: str | Callable[[str], str]) -> Path:
    run = copy_run(w, tmp)
    old = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text(old) if callable(text) else text)
    return run


def set_config_key(key: str, value: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines()]
        return "\n".join(lines) + "\n"

    return edit


def write_checkpoint(w: World, tmp: Path, obj=None, raw: bytes | None = None) -> Path:
    run = copy_run(w, tmp)
    if raw is None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        raw = buf.getvalue()
    (run / "checkpoint.pt").write_bytes(raw)
    return run


def resume(w: World, run: Path, *extra: str) -> list[str]:
    """The command that resumes `run` (one more iteration than it holds)."""
    return ["distill", *w.data(), *TINY[:2], "--iterations", "2", *TINY[4:], *extra, "--out", str(run)]


def tiny_folder(tmp: Path, per_class: int, corrupt: bool = False) -> Path:
    d = tmp / "imgs"
    for c in ("a", "b"):
        for i in range(per_class):
            write_image(d / c / f"{i}.png", images_for(np.array([0]), 1, 8)[0, 0])
    if corrupt:
        (d / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return d


def bad_mnist(tmp: Path, name: str, data: bytes) -> Path:
    root = tmp / "root"
    write_mnist(root / "mnist")
    (root / "mnist" / name).write_bytes(data)
    return root


def evil_checkpoint(tmp: Path, w: World) -> Path:
    run = copy_run(w, tmp)
    buf = io.BytesIO()
    torch.save({"x": Evil(tmp / "pwned")}, buf, _use_new_zipfile_serialization=True)
    (run / "checkpoint.pt").write_bytes(buf.getvalue())
    return run


def cifar_with(tmp: Path, name: str, obj) -> Path:
    root = tmp / "root"
    write_cifar10(root / "cifar10")
    write_pickle(root / "cifar10" / "cifar-10-batches-py" / name, obj)
    return root


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


# ------------------------------------------------------------------------------------ the table
# id -> (argv maker (tmp, world) -> argv, what the error line must mention (case-insensitive))
def _cases() -> dict[str, tuple[Callable[[Path, World], list[str]], str]]:
    S = lambda w: str(w.synset)  # noqa: E731
    c: dict[str, tuple[Callable[[Path, World], list[str]], str]] = {
        # -- command line: argparse ------------------------------------------------------------------
        "no-command": (lambda t, w: [], "command"),
        "unknown-command": (lambda t, w: ["distil"], "distil"),
        "unknown-flag": (lambda t, w: ["distill", "--ipcs", "3"], "--ipcs"),
        "ipc-not-int": (lambda t, w: ["distill", "--ipc", "abc"], "--ipc"),
        "bad-preset-choice": (lambda t, w: ["distill", "--preset", "fast"], "--preset"),
        "bad-aug-choice": (lambda t, w: ["evaluate", S(w), "--aug", "foo"], "--aug"),
        "evaluate-no-run": (lambda t, w: ["evaluate"], "run"),
        "opt-without-equals": (lambda t, w: ["distill", "--opt", "lr_img"], "KEY=VALUE"),
        "lr-img-not-float": (lambda t, w: ["distill", "--lr-img", "fast"], "--lr-img"),
        # -- command line: values ----------------------------------------------------------------------
        "ipc-zero": (lambda t, w: ["distill", *w.data(), "--ipc", "0", "--out", str(t / "o")], "ipc"),
        "ipc-negative": (lambda t, w: ["distill", *w.data(), "--ipc", "-3", "--out", str(t / "o")], "ipc"),
        "ipc-too-large": (lambda t, w: ["distill", *w.data(), "--ipc", "100", "--out", str(t / "o")], "--ipc"),
        "iterations-negative": (lambda t, w: ["distill", *w.data(), "--iterations", "-1", "--out", str(t / "o")], "iterations"),
        "checkpoint-every-zero": (lambda t, w: ["distill", *w.data(), "--checkpoint-every", "0", "--out", str(t / "o")], "checkpoint"),
        "val-every-negative": (lambda t, w: ["distill", *w.data(), "--val-every", "-1", "--out", str(t / "o")], "val_every"),
        "lr-img-zero": (lambda t, w: ["distill", *w.data(), "--lr-img", "0", "--out", str(t / "o")], "lr_img"),
        "lr-img-nan": (lambda t, w: ["distill", *w.data(), "--lr-img", "nan", "--out", str(t / "o")], "lr_img"),
        "batch-real-zero": (lambda t, w: ["distill", *w.data(), "--batch-real", "0", "--out", str(t / "o")], "batch_real"),
        "eval-runs-negative": (lambda t, w: ["distill", *w.data(), "--eval-runs", "-1", "--out", str(t / "o")], "runs"),
        "eval-epochs-zero": (lambda t, w: ["distill", *w.data(), "--eval-epochs", "0", "--out", str(t / "o")], "epochs"),
        "eval-models-unknown": (lambda t, w: ["distill", *w.data(), *TINY[:-3], "--eval-runs", "1", "--eval-models", "convnet,foo",
                                              "--out", str(t / "o")], "foo"),
        "eval-models-empty": (lambda t, w: ["distill", *w.data(), "--eval-models", ",", "--out", str(t / "o")], "eval"),
        "model-unknown": (lambda t, w: ["distill", *w.data(), "--model", "foo", "--out", str(t / "o")], "foo"),
        "method-unknown": (lambda t, w: ["distill", "--method", "magic", "--out", str(t / "o")], "magic"),
        "dataset-unknown": (lambda t, w: ["distill", "--dataset", "imagenet-9000", "--out", str(t / "o")], "imagenet-9000"),
        "dataset-folder-empty-path": (lambda t, w: ["distill", "--dataset", "folder:", "--out", str(t / "o")], "folder:"),
        "dataset-folder-missing": (lambda t, w: ["distill", "--dataset", f"folder:{t / 'nope'}", "--out", str(t / "o")], "no such folder"),
        "device-unknown": (lambda t, w: ["distill", *w.data(), "--device", "tpu", "--out", str(t / "o")], "device"),
        "device-cuda-absent": (lambda t, w: ["distill", *w.data(), "--device", "cuda:0", "--out", str(t / "o")], "cuda"),
        "image-size-zero": (lambda t, w: ["distill", *w.data(), "--image-size", "0", "--out", str(t / "o")], "image_size"),
        "opt-not-a-number": (lambda t, w: ["distill", *w.data(), *TINY, "--opt", "real_chunk=abc", "--out", str(t / "o")], "real_chunk"),
        "opt-unknown": (lambda t, w: ["distill", *w.data(), "--opt", "nonsense=1", "--out", str(t / "o")], "nonsense"),
        "experts-for-dm": (lambda t, w: ["distill", *w.data(), "--experts", str(w.experts), "--out", str(t / "o")], "experts"),
        "mtt-without-experts": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--out", str(t / "o")], "--experts"),
        "mtt-experts-missing": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--experts", str(t / "none"),
                                              "--out", str(t / "o")], "experts"),
        "datm-min-start-at-max": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "datm", "--experts", str(w.experts),
                                                "--opt", "min_start_epoch=2", "--out", str(t / "o")], "min_start_epoch"),
        "datm-threshold-zero": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "datm", "--experts", str(w.experts),
                                              "--opt", "threshold=0", "--out", str(t / "o")], "threshold"),
        "pad-variant-unknown": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "pad", "--experts", str(w.experts),
                                              "--opt", "variant=released", "--out", str(t / "o")], "variant"),
        "relabel-without-teacher": (lambda t, w: ["distill", *w.data(), "--ipc", "1", "--iterations", "0", "--eval-runs", "0",
                                                  "--no-progress", "--method", "random", "--relabel", "stored",
                                                  "--out", str(t / "o")], "--teacher"),
        "sre2l-first-bn-multiplier-nan": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "sre2l", "--teacher",
                                                        str(w.teacher), "--opt", "first_bn_multiplier=nan",
                                                        "--out", str(t / "o")], "first_bn_multiplier"),
        "sre2l-without-teacher": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "sre2l", "--out", str(t / "o")],
                                  "--teacher"),
        "teacher-for-dm": (lambda t, w: ["distill", *w.data(), *TINY, "--teacher", str(w.teacher), "--out", str(t / "o")],
                           "--teacher"),
        "sre2l-teacher-without-bn": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "sre2l", "--teacher",
                                                   str(w.teacher_no_bn), "--out", str(t / "o")], "batch-norm"),
        "sre2l-zca": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "sre2l", "--teacher", str(w.teacher),
                                    "--zca", "--out", str(t / "o")], "zca"),
        "rded-iterations": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "rded", "--teacher", str(w.teacher),
                                          "--out", str(t / "o")], "--iterations 10"),
        "rded-mipc-too-small": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "rded", "--teacher", str(w.teacher),
                                              "--iterations", "10", "--opt", "mipc=0", "--out", str(t / "o")], "mipc"),
        "rded-class-too-small": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "rded", "--teacher", str(w.teacher),
                                               "--iterations", "10", "--ipc", "5", "--out", str(t / "o")], "--ipc"),
        "relabel-choice": (lambda t, w: ["distill", *w.data(), "--relabel", "sometimes"], "--relabel"),
        "teacher-of-another-dataset": (lambda t, w: ["distill", "--dataset", "cifar10", "--data-root", str(w.root), *TINY,
                                                     "--method", "random", "--iterations", "0", "--teacher",
                                                     str(w.teacher), "--out", str(t / "o")], "teacher"),
        "teacher-from-a-text-file": (lambda t, w: ["teacher", *w.data(), "--from", str(_file(t / "weights.pt")),
                                                   "--no-progress", "--out", str(t / "o")], "not a torch file"),
        "evaluate-a-pt-without-format": (lambda t, w: ["evaluate", "--data-root", str(w.root),
                                                       str(_torch_file(t / "images_best.pt"))], "--format mtt|"),
        "bf16-for-mtt": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--precision", "bf16", "--out", str(t / "o")], "precision"),
        # -- output paths -------------------------------------------------------------------------------
        "out-is-a-file": (lambda t, w: ["distill", *w.data(), *TINY, "--out", str(_file(t / "f.txt"))], "f.txt"),
        "out-under-a-file": (lambda t, w: ["distill", *w.data(), *TINY, "--out", str(_file(t / "f.txt") / "run")], "f.txt"),
        "out-unwritable": (lambda t, w: ["distill", *w.data(), *TINY, "--out", "/proc/datadistill-test-run"], "/proc"),
        "out-other-settings": (lambda t, w: ["distill", *w.data(), *TINY, "--seed", "3", "--out", str(copy_run(w, t))], "other settings"),
        "report-out-is-a-folder": (lambda t, w: ["report", str(w.run), "--out", str(_dir(t / "page"))], "page"),
        "report-not-a-run": (lambda t, w: ["report", str(_dir(t / "empty"))], "not a run folder"),
        "report-missing-run": (lambda t, w: ["report", str(t / "nope")], "nope"),
        "export-to-a-file": (lambda t, w: ["export", S(w), str(_file(t / "f.txt"))], "f.txt"),
        "export-grid-to-a-folder": (lambda t, w: ["export", S(w), str(_dir(t / "d")), "--format", "grid"], "d"),
        "show-out-is-a-folder": (lambda t, w: ["show", S(w), "--out", str(_dir(t / "d"))], "d"),
        "baseline-out-is-a-folder": (lambda t, w: ["baseline", *w.data(), "--epochs", "1", "--no-progress", "--device", "cpu",
                                                   "--out", str(_dir(t / "d"))], "d"),
        "experts-out-is-a-file": (lambda t, w: ["experts", *w.data(), "--experts", "1", "--epochs", "1", "--no-progress",
                                                "--out", str(_file(t / "f.txt"))], "f.txt"),
        "difficulty-out-is-a-folder": (lambda t, w: ["difficulty", *w.data(), "--nets", "1", "--epochs", "1", "--no-progress",
                                                     "--out", str(_dir(t / "d"))], "d"),
        # -- run folder: config.yaml and checkpoint.pt ---------------------------------------------------
        "config-invalid-yaml": (lambda t, w: resume(w, write_config(w, t, "method: [dm\n  ipc: : 1\n")), "config.yaml"),
        "config-not-a-mapping": (lambda t, w: resume(w, write_config(w, t, "- 1\n- 2\n")), "config.yaml"),
        "config-iterations-abc": (lambda t, w: resume(w, write_config(w, t, set_config_key("iterations", "abc"))), "iterations"),
        "config-lr-img-list": (lambda t, w: resume(w, write_config(w, t, set_config_key("lr_img", "[1, 2]"))), "lr_img"),
        "config-unknown-key": (lambda t, w: resume(w, write_config(w, t, lambda s: s + "colour: blue\n")), "colour"),
        "config-eval-not-mapping": (lambda t, w: resume(w, write_config(w, t, lambda s: s.split("\neval:")[0] + "\neval: 5\n")), "eval"),
        "checkpoint-garbage": (lambda t, w: resume(w, write_checkpoint(w, t, raw=b"not a checkpoint at all")), "checkpoint"),
        "checkpoint-truncated": (lambda t, w: resume(w, write_checkpoint(w, t, raw=(w.run / "checkpoint.pt").read_bytes()[:300])), "checkpoint"),
        "checkpoint-malicious": (lambda t, w: resume(w, evil_checkpoint(t, w)), "not loaded"),
        "checkpoint-a-list": (lambda t, w: resume(w, write_checkpoint(w, t, [1, 2, 3])), "checkpoint"),
        "checkpoint-no-distiller": (lambda t, w: resume(w, write_checkpoint(w, t, {"format": "datadistill.checkpoint/1",
                                                                                  "iteration": 1})), "checkpoint"),
        "checkpoint-wrong-state": (lambda t, w: resume(w, write_checkpoint(w, t, {"format": "datadistill.checkpoint/1", "iteration": 1,
                                                                                 "distiller": {"images": "x"}})), "checkpoint"),
        "checkpoint-iteration-text": (lambda t, w: resume(w, write_checkpoint(w, t, {"format": "datadistill.checkpoint/1",
                                                                                    "iteration": "one", "distiller": {}})), "checkpoint"),
        # -- set files -----------------------------------------------------------------------------------
        "set-missing": (lambda t, w: ["evaluate", str(t / "nope.safetensors")], "no such file"),
        "set-not-safetensors": (lambda t, w: ["evaluate", str(_file(t / "x.safetensors"))], "x.safetensors"),
        "set-no-format-tag": (lambda t, w: ["evaluate", str(mutate_set(w, t, meta=lambda m: m.pop("format")))], "format"),
        "set-future-version": (lambda t, w: ["evaluate", str(mutate_set(w, t, meta=lambda m: m.update(format_version="9")))], "version"),
        "set-no-labels": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.pop("labels")))], "labels"),
        "set-label-out-of-range": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d["labels"].__setitem__(0, 2**40)))], "labels"),
        "set-label-negative": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d["labels"].__setitem__(0, -1)))], "labels"),
        "set-labels-float": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(labels=d["labels"].float())))], "labels"),
        "set-soft-labels-nan": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(
            labels=torch.full((d["labels"].shape[0], 10), float("nan")))))], "labels"),
        "set-images-int": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(images=d["images"].to(torch.int32))))], "images"),
        "set-images-nan": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d["images"].__setitem__(0, float("nan"))))], "images"),
        "set-images-3d": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(images=d["images"][:, 0])))], "images"),
        "set-wrong-channels": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(images=d["images"].repeat(1, 3, 1, 1))))], "channels"),
        "set-wrong-size": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(images=d["images"][:, :, :20, :20].contiguous())))], "size"),
        "set-lr-nan": (lambda t, w: ["evaluate", str(mutate_set(w, t, tensors=lambda d: d.update(lr=torch.tensor(float("nan")))))], "lr"),
        "set-lr-vector": (lambda t, w: ["evaluate", str(mutate_set(w, t, tensors=lambda d: d.update(lr=torch.ones(3))))], "lr"),
        "set-zca-partial": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(zca_mean=torch.zeros(784))))], "zca"),
        "set-zca-wrong-shape": (lambda t, w: ["show", str(mutate_set(w, t, tensors=lambda d: d.update(
            zca_mean=torch.zeros(784), zca_transform=torch.eye(5), zca_inverse=torch.eye(5))))], "zca"),
        "set-spec-zero-classes": (lambda t, w: ["show", str(mutate_set(w, t, spec=lambda s: s.update(num_classes=0)))], "num_classes"),
        "set-spec-negative-size": (lambda t, w: ["show", str(mutate_set(w, t, spec=lambda s: s.update(im_size=[-28, 28])))], "im_size"),
        "set-spec-std-zero": (lambda t, w: ["show", str(mutate_set(w, t, spec=lambda s: s.update(std=[0.0])))], "std"),
        "set-spec-mean-length": (lambda t, w: ["show", str(mutate_set(w, t, spec=lambda s: s.update(mean=[0.1, 0.2])))], "mean"),
        "set-spec-names-count": (lambda t, w: ["show", str(mutate_set(w, t, spec=lambda s: s.update(class_names=["a"])))], "class_names"),
        "set-spec-not-json": (lambda t, w: ["show", str(mutate_set(w, t, meta=lambda m: m.update(spec="{oops")))], "spec"),
        "set-spec-deeply-nested": (lambda t, w: ["show", str(mutate_set(w, t, meta=lambda m: m.update(spec=deep_json(20000))))], "spec"),
        "set-meta-not-object": (lambda t, w: ["show", str(mutate_set(w, t, meta=lambda m: m.update(meta="[1, 2]")))], "meta"),
        "evaluate-models-unknown": (lambda t, w: ["evaluate", S(w), "--models", "convnet,foo", "--runs", "1", "--epochs", "1",
                                                  "--data-root", str(w.root), "--no-progress"], "foo"),
        "evaluate-models-empty": (lambda t, w: ["evaluate", S(w), "--models", ",", "--data-root", str(w.root)], "--models"),
        "evaluate-epochs-zero": (lambda t, w: ["evaluate", S(w), "--epochs", "0", "--data-root", str(w.root)], "--epochs"),
        "evaluate-runs-zero": (lambda t, w: ["evaluate", S(w), "--runs", "0", "--data-root", str(w.root)], "runs"),
        "evaluate-lr-grid-not-numbers": (lambda t, w: ["evaluate", S(w), "--lr-grid", "0.01,fast", "--data-root", str(w.root),
                                                       "--runs", "1", "--epochs", "1", "--no-progress"], "lr_grid"),
        "evaluate-lr-negative": (lambda t, w: ["evaluate", S(w), "--lr", "-1", "--data-root", str(w.root)], "--lr"),
        "evaluate-teacher-without-teacher-labels": (lambda t, w: ["evaluate", S(w), "--teacher", str(w.teacher), "--runs", "1",
                                                                  "--epochs", "1", "--data-root", str(w.root)], "--labels teacher"),
        "evaluate-teacher-missing-before-lr-grid": (lambda t, w: ["evaluate", S(w), "--labels", "teacher", "--teacher",
                                                                  str(t / "nope"), "--lr-grid", "0.01,0.1", "--data-root",
                                                                  str(w.root)], "nope"),
        "evaluate-device-unknown": (lambda t, w: ["evaluate", S(w), "--device", "tpu", "--data-root", str(w.root)], "tpu"),
        "datasets-root-a-file": (lambda t, w: ["datasets", "--data-root", str(_file(t / "root.txt"))], "root.txt"),
        "distill-data-root-a-file": (lambda t, w: ["distill", "--dataset", "mnist", "--data-root", str(_file(t / "r.txt")),
                                                   *TINY, "--out", str(t / "o")], "r.txt"),
        "evaluate-lr-and-lr-grid": (lambda t, w: ["evaluate", S(w), "--lr", "0.01", "--lr-grid", "0.01,0.1",
                                                  "--data-root", str(w.root)], "--lr-grid"),
        "evaluate-temperature-with-ce": (lambda t, w: ["evaluate", S(w), "--temperature", "4", "--runs", "1", "--epochs", "1",
                                                       "--data-root", str(w.root)], "--loss kl"),
        "nas-runs-zero": (lambda t, w: ["nas", S(w), "--runs", "0", "--data-root", str(w.root)], "runs"),
        # -- experts -----------------------------------------------------------------------------------
        "experts-manifest-missing-key": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--experts",
                                                       str(edit_manifest(w, t, lambda m: m.pop("epochs"))), "--out", str(t / "o")], "manifest"),
        "experts-manifest-invalid-json": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--experts",
                                                        str(_text(copy_experts(w, t), "manifest.json", "{")), "--out", str(t / "o")], "manifest"),
        "experts-manifest-wrong-tag": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--experts",
                                                     str(edit_manifest(w, t, lambda m: m.update(format="x"))), "--out", str(t / "o")], "manifest"),
        "experts-manifest-experts-not-list": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--experts",
                                                            str(edit_manifest(w, t, lambda m: m.update(experts=7))), "--out", str(t / "o")], "manifest"),
        "experts-shard-corrupt-payload": (lambda t, w: ["distill", *w.data(), *TINY, "--method", "mtt", "--opt", "expert_epochs=1",
                                                        "--opt", "max_start_epoch=1", "--opt", "syn_steps=1", "--experts",
                                                        str(corrupt_shard_payload(w, t)), "--out", str(t / "o")], "expert_0000"),
        "experts-count-zero": (lambda t, w: ["experts", *w.data(), "--experts", "0", "--out", str(t / "e")], "num_experts"),
        "experts-gsam-rho-zero": (lambda t, w: ["experts", *w.data(), "--optimizer", "gsam", "--rho", "0",
                                                "--out", str(t / "e")], "rho"),
        "experts-epochs-zero": (lambda t, w: ["experts", *w.data(), "--epochs", "0", "--out", str(t / "e")], "epochs"),
        "experts-folder-other-settings": (lambda t, w: ["experts", *w.data(), "--experts", "1", "--epochs", "3", "--batch-size", "8",
                                                        "--device", "cpu", "--no-progress", "--out", str(copy_experts(w, t))], "epochs"),
        # -- datasets ----------------------------------------------------------------------------------
        "mnist-truncated-images": (lambda t, w: ["distill", *_root(bad_mnist(t, "train-images-idx3-ubyte.gz", b"\x1f\x8b\x08\x00")), *TINY,
                                                 "--out", str(t / "o")], "train-images"),
        "mnist-not-gzip": (lambda t, w: ["distill", *_root(bad_mnist(t, "t10k-labels-idx1-ubyte.gz", b"hello")), *TINY,
                                         "--out", str(t / "o")], "t10k-labels"),
        "cifar-malicious-batch": (lambda t, w: ["distill", "--dataset", "cifar10", "--data-root", str(cifar_with(t, "data_batch_1", Evil(t / "pwned"))),
                                                *TINY, "--out", str(t / "o")], "refusing"),
        "cifar-batch-not-a-dict": (lambda t, w: ["distill", "--dataset", "cifar10", "--data-root", str(cifar_with(t, "test_batch", [1, 2])),
                                                 *TINY, "--out", str(t / "o")], "test_batch"),
        "cifar-empty-test-batch": (lambda t, w: ["distill", "--dataset", "cifar10", "--data-root", str(cifar_with(t, "test_batch", {
            b"data": np.zeros((0, 3072), np.uint8), b"labels": []})), *TINY, "--out", str(t / "o")], "test"),
        "download-fails": (lambda t, w: ["distill", "--dataset", "fashion_mnist", "--data-root", str(_dir(t / "empty-root")), *TINY,
                                         "--out", str(t / "o")], "fashion_mnist"),
        "folder-one-image-per-class": (lambda t, w: ["distill", "--dataset", f"folder:{tiny_folder(t, 1)}", *TINY, "--out", str(t / "o")], "test"),
        "folder-corrupt-png": (lambda t, w: ["distill", "--dataset", f"folder:{tiny_folder(t, 3, corrupt=True)}", *TINY,
                                             "--out", str(t / "o")], "0.png"),
        "folder-no-classes": (lambda t, w: ["distill", "--dataset", f"folder:{_dir(t / 'flat')}", *TINY, "--out", str(t / "o")], "class"),
        "continual-steps-zero": (lambda t, w: ["continual", *w.data(), "--steps", "0", "--no-progress"], "steps"),
        "continual-steps-too-many": (lambda t, w: ["continual", *w.data(), "--steps", "11", "--no-progress", "--device", "cpu"], "steps"),
        "baseline-epochs-zero": (lambda t, w: ["baseline", *w.data(), "--epochs", "0", "--out", str(t / "b.json")], "epochs"),
        # -- the datasets at scale (issue 19) -------------------------------------------------------------
        "storage-unknown": (lambda t, w: ["distill", *w.data(), "--storage", "tape"], "--storage"),
        "tiny-imagenet-absent": (lambda t, w: ["distill", "--dataset", "tiny-imagenet", "--data-root", str(_dir(t / "r")),
                                               *TINY, "--out", str(t / "o")], "tiny-imagenet-200/wnids.txt"),
        "imagenet-absent": (lambda t, w: ["distill", "--dataset", "imagenet", "--data-root", str(_dir(t / "r")), *TINY,
                                          "--out", str(t / "o")], "imagenet/train/<wnid>"),
        "imagenet-size-not-offered": (lambda t, w: ["distill", "--dataset", "imagenet", "--data-root", str(large(t, "imagenet")),
                                                    "--image-size", "48", *TINY, "--out", str(t / "o")], "32, 64, 128, 224"),
        "tiny-imagenet-truncated-jpeg": (lambda t, w: ["distill", "--dataset", "tiny-imagenet", "--data-root",
                                                       str(large(t, "tiny-truncated")), *TINY, "--out", str(t / "o")],
                                         "n01443537_1.JPEG"),
        "tiny-imagenet-unknown-wnid": (lambda t, w: ["distill", "--dataset", "tiny-imagenet", "--data-root",
                                                     str(large(t, "tiny-unknown")), *TINY, "--out", str(t / "o")], "n00000001"),
        "mhist-missing-column": (lambda t, w: ["distill", "--dataset", "mhist", "--data-root", str(large(t, "mhist-column")),
                                               *TINY, "--out", str(t / "o")], "Partition"),
        "imagenet32-zero-based-labels": (lambda t, w: ["distill", "--dataset", "imagenet32", "--data-root",
                                                       str(large(t, "imagenet32-zero")), *TINY, "--out", str(t / "o")], "1-based"),
    }
    return c


def large(tmp: Path, kind: str) -> Path:
    """A data root holding one of the datasets at scale in its layout, broken as `kind` says."""
    import data_fixtures as fx

    root = tmp / "large"
    if kind == "imagenet":
        fx.write_imagenet(root / "imagenet", ["n01440764", "n02102040"])
    elif kind.startswith("tiny"):
        base = fx.write_tiny_imagenet(root / "tiny-imagenet")
        if kind == "tiny-truncated":
            f = base / "train" / "n01443537" / "images" / "n01443537_1.JPEG"
            f.write_bytes(f.read_bytes()[:150])
        else:
            ann = base / "val" / "val_annotations.txt"
            ann.write_text(ann.read_text().replace("n04067472", "n00000001", 1))
    elif kind == "mhist-column":
        fx.write_mhist(root / "mhist", size=8, columns=fx.MHIST_COLUMNS[:3])
    elif kind == "imagenet32-zero":
        folder = fx.write_downsampled(root / "imagenet32", per_batch=2, val=2)
        np.savez(folder / "train_data_batch_3.npz", data=np.zeros((2, 3072), np.uint8), labels=[0, 5], mean=np.zeros(3072))
    return root


def _file(path: Path, text: str = "not a datadistill file\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _torch_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.zeros(2, 1, 28, 28), path)  # a published set's images, as MTT's code saves them
    return path


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _text(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder


def _root(root: Path) -> list[str]:
    return ["--dataset", "mnist", "--data-root", str(root)]


CASES = _cases()
# the error comes from the first iteration, after the run folder was started (nothing that was there changes)
MAY_CREATE = {"experts-shard-corrupt-payload"}


def snapshot(*folders: Path) -> dict[str, tuple]:
    """Every file and folder under `folders`: content hash and mode (folders: mode only)."""
    out: dict[str, tuple] = {}
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top):
            for d in dirnames:
                p = Path(dirpath) / d
                out[str(p)] = ("dir", p.stat().st_mode)
            for f in filenames:
                p = Path(dirpath) / f
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, world, tmp_path, capsys, monkeypatch):
    make, mention = CASES[case]
    monkeypatch.setenv("DATADISTILL_MIRROR", unused_url())  # no download ever leaves the machine
    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path, world)
    capsys.readouterr()
    before = snapshot(tmp_path, world.root.parent)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse exits; main must not
        rc = e.code
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"{case}: {type(e).__name__} escaped main(): {e}")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"{case}: exit status {rc}, stderr {err!r}"
    assert len(lines) == 1, f"{case}: {len(lines)} lines on stderr: {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err
    assert mention.lower() in lines[0].lower(), f"{case}: {mention!r} not in {lines[0]!r}"
    after = snapshot(tmp_path, world.root.parent)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"{case}: changed or removed: {changed}"
    added = sorted(set(after) - set(before))
    assert not added or case in MAY_CREATE, f"{case}: created {added}"
    assert not (tmp_path / "pwned").exists()
