"""Multi-process distillation: 2 gloo processes on 127.0.0.1 (as torchrun starts them: RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) give the same synthetic set as one process for
the same config and seed, each process computing only its share of the classes."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from datadistill import dist
from datadistill.config import resolve_config
from datadistill.methods import get_method
from datadistill.methods.base import ImageDistiller
from datadistill.run import run_distillation
from toydata import toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2
SMALL = dict(device="cpu", batch_real=6, model_args={"width": 8, "depth": 2}, checkpoint_every=2,
             val_epochs=1, eval={"runs": 0}, iterations=3, lr_img=0.5)
# name -> (method, overrides). Toy data has 3 classes: process 0 takes classes 0 and 2, process 1 class 1.
CASES = {
    "dm": ("dm", {}),
    "dm_bn": ("dm", {"model": "convnet_bn"}),  # batch norm mixes the classes: process 0 does all
    "datadam": ("datadam", {}),
    "dc": ("dc", {"method_args": {"outer_loop": 2, "inner_loop": 1}}),
    "dsa": ("dsa", {"method_args": {"outer_loop": 2, "inner_loop": 1}, "model": "convnet_bn"}),
    # the decoupled methods: recovery batches (sre2l) and classes (rded) split over the processes
    "sre2l": ("sre2l", {"method_args": {"batch_classes": 1}, "model": "convnet_bn", "init": "noise"}),
    "rded": ("rded", {"method_args": {"mipc": 8, "num_crop": 2}, "model": "convnet_bn"}),
}
TEACHER_ENV = "DATADISTILL_TEST_TEACHER"  # the toy teacher's folder, inherited by the spawned processes


def _cfg(name: str, **over):
    method, extra = CASES[name]
    if method in ("sre2l", "rded"):
        extra = {**extra, "artifacts": {"teacher": os.environ[TEACHER_ENV]}}
    return resolve_config(method, "toy", 2, "quick", **{**SMALL, **extra, **over})


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    from datadistill.teacher import TeacherSettings, train_teacher

    root = tmp_path_factory.mktemp("toy-teacher")
    train_teacher(TeacherSettings("toy", model="convnet_bn", model_args=SMALL["model_args"], epochs=1, batch_size=8),
                  root, data=toy_splits(), device="cpu", progress=False, log=lambda m: None)
    before = os.environ.get(TEACHER_ENV)
    os.environ[TEACHER_ENV] = str(root)
    yield str(root)
    if before is None:
        os.environ.pop(TEACHER_ENV, None)
    else:
        os.environ[TEACHER_ENV] = before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_as(rank: int, port: int, timeout_s: float | None = None) -> None:
    """The environment torchrun gives worker `rank` of WORLD on one machine."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if timeout_s is not None:
        os.environ[dist.TIMEOUT_ENV] = str(timeout_s)
    torch.set_num_threads(1)


def _worker(rank: int, port: int, folder: str) -> None:
    _join_as(rank, port, timeout_s=20)
    data = toy_splits()
    seen: dict[str, list[list[int]]] = {}
    current = [""]
    real_batches = ImageDistiller.each_class_batch

    def spy(self, classes=None):
        seen.setdefault(current[0], []).append(list(classes) if classes is not None else None)
        return real_batches(self, classes)

    ImageDistiller.each_class_batch = spy
    out = {}
    for name in CASES:
        current[0] = name
        out[name] = run_distillation(_cfg(name), os.path.join(folder, name), data=data, progress=False).synset.images
    # Resume: 2 iterations, then 3 on the same folder (process 0 reads the checkpoint and sends it).
    current[0] = "resume"
    run_distillation(_cfg("dm", iterations=2), os.path.join(folder, "resume"), data=data, progress=False)
    res = run_distillation(_cfg("dm"), os.path.join(folder, "resume"), data=data, progress=False)
    out["resume"], out["resumed_from"] = res.synset.images, res.resumed_from
    # The same run without the all-reduce (each process steps on its own classes' gradient only):
    # must NOT match the one-process run, or the comparison below could not fail.
    real_reduce = dist.all_reduce_sum_
    dist.all_reduce_sum_ = lambda t: t
    current[0] = "no_reduce"
    out["no_reduce"] = run_distillation(_cfg("dm"), None, data=data, progress=False).synset.images
    dist.all_reduce_sum_ = real_reduce
    ImageDistiller.each_class_batch = real_batches
    out["classes"] = seen
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))


def _failing_worker(rank: int, port: int, folder: str) -> None:
    """Process 1 fails in iteration 2 and exits; process 0 must get an error, not hang."""
    _join_as(rank, port, timeout_s=20)
    method = get_method("dm")
    real_loss = method.loss

    def loss(self, it):
        if it == 1 and rank == 1:
            torch.save({"failed_at": time.time()}, os.path.join(folder, "rank1.pt"))
            raise RuntimeError("process 1 fails")
        return real_loss(self, it)

    method.loss = loss
    t0 = time.perf_counter()
    try:
        run_distillation(_cfg("dm"), None, data=toy_splits(), progress=False)
        out = {"failure": None}
    except Exception as e:  # noqa: BLE001
        out = {"failure": (type(e).__name__, str(e)[:200], time.perf_counter() - t0)}
    if rank == 1:
        assert out["failure"][1] == "process 1 fails", out
        os._exit(0)  # as a crashed process: no goodbye to the group (exit status 0 so spawn lets process 0 go on)
    torch.save({**out, "failed_at": time.time()}, os.path.join(folder, "rank0.pt"))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, toy_teacher):
    """Run `_worker` as processes 0 and 1; returns the folder of their runs and what each saved."""
    folder = tmp_path_factory.mktemp("dist")
    mp.start_processes(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=True, start_method="spawn")
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def failing_pair(tmp_path_factory, toy_teacher):
    """`_failing_worker` as processes 0 and 1, apart from the others: how process 0 ended (its exit
    status, or the error it caught) and how long after process 1 failed."""
    folder = tmp_path_factory.mktemp("fail")
    ctx = mp.start_processes(_failing_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.time() + 180  # the collectives time out after 20 s: far beyond that is a hang
    try:
        while not ctx.join(timeout=5):
            if time.time() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                pytest.fail("the pair of processes did not end within 180 s")
        exitcode = 0
    except mp.ProcessExitedException as e:  # e.g. gloo aborting process 0 as its peer vanished
        exitcode = e.exit_code
    ended = time.time()
    first = torch.load(folder / "rank1.pt", weights_only=False)["failed_at"]
    zero = torch.load(folder / "rank0.pt", weights_only=False) if (folder / "rank0.pt").exists() else None
    return {"exitcode": exitcode, "rank0": zero, "seconds": (zero["failed_at"] if zero else ended) - first}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, toy_teacher):
    folder = tmp_path_factory.mktemp("one")
    data = toy_splits()
    return {name: run_distillation(_cfg(name), folder / name, data=data, progress=False) for name in CASES}


def _losses(run_folder):
    return [r for r in map(json.loads, (run_folder / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_give_the_one_process_set(two_processes, one_process, name):
    _, ranks = two_processes
    ref = one_process[name].synset.images
    init = run_distillation(_cfg(name, iterations=0), None, data=toy_splits(), progress=False).synset.images
    moved = (ref - init).abs().max().item()
    assert moved > 1e-2  # the images did change, by far more than the tolerance below
    assert torch.equal(ranks[0][name], ranks[1][name])  # every process holds the same set
    assert torch.allclose(ranks[0][name], ref, rtol=1e-4, atol=1e-5), (ranks[0][name] - ref).abs().max()


def test_each_process_handles_only_its_classes(two_processes):
    _, ranks = two_processes
    for name in ("dm", "datadam", "dc", "dsa", "resume"):
        calls = [ranks[r]["classes"][name] for r in range(WORLD)]
        assert calls[0] and all(c == [0, 2] for c in calls[0]), (name, calls[0])
        assert calls[1] and all(c == [1] for c in calls[1]), (name, calls[1])
    # DC/DSA: one each_class_batch call per outer step (2 per iteration, 3 iterations)
    assert len(ranks[0]["classes"]["dc"]) == len(ranks[1]["classes"]["dc"]) == 6
    # Batch norm in DM is not separable: process 0 computes every class, process 1 none
    assert all(c == [0, 1, 2] for c in ranks[0]["classes"]["dm_bn"])
    assert all(c == [] for c in ranks[1]["classes"]["dm_bn"])


def test_without_the_all_reduce_the_sets_differ(two_processes, one_process):
    _, ranks = two_processes
    ref = one_process["dm"].synset.images
    assert not torch.allclose(ranks[0]["no_reduce"], ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ranks[1]["no_reduce"], ref, rtol=1e-4, atol=1e-5)


def test_resume_reads_process_0s_checkpoint_and_only_process_0_writes(two_processes, one_process):
    folder, ranks = two_processes
    assert ranks[0]["resumed_from"] == ranks[1]["resumed_from"] == 2
    assert torch.allclose(ranks[1]["resume"], one_process["dm"].synset.images, rtol=1e-4, atol=1e-5)
    for run, validations in (("dm", [3]), ("resume", [2, 3])):  # the final validation of each run
        lines = [json.loads(line) for line in (folder / run / "metrics.jsonl").read_text().splitlines()]
        assert [r["it"] for r in lines if "loss" in r] == [1, 2, 3]  # written once, by process 0
        assert [r["it"] for r in lines if "val_acc" in r] == validations
    assert not [p for p in folder.rglob("*.tmp")]


def test_logged_losses_are_summed_over_the_processes(two_processes, one_process):
    folder, _ = two_processes
    for name, keys in (("datadam", ("loss", "sam", "mmd")), ("dc", ("loss",)), ("dm", ("loss",))):
        two, one = _losses(folder / name), _losses(one_process[name].out)
        assert len(two) == len(one) == 3
        for a, b in zip(two, one):
            for k in keys:
                assert a[k] == pytest.approx(b[k], rel=1e-4), (name, k)


def test_a_failing_process_does_not_hang_the_other(failing_pair):
    # process 0 was waiting in the all-reduce of iteration 2: it gets an error (the connection to
    # process 1 closed) well before the 20 s collective timeout set for this test. Under heavy load
    # gloo has once aborted process 0 instead (SIGABRT, "terminate called without an active
    # exception"): an end too, not a hang, so it is accepted if it came as fast.
    f = failing_pair
    if f["rank0"] is not None:
        assert f["rank0"]["failure"] is not None, "process 0 went on without process 1"
        assert f["rank0"]["failure"][2] < 15, f["rank0"]["failure"]
    else:
        assert f["exitcode"] != 0, "process 0 neither finished nor failed"
    assert f["seconds"] < 15, f


# -- one process: the pieces the split relies on ------------------------------------------------------

def _distiller(name: str):
    from datadistill.methods import initial_synset
    from datadistill.rng import make_generator

    data = toy_splits()
    cfg = _cfg(name)
    d = get_method(cfg.method)(cfg, data, torch.device("cpu"))
    d.init(initial_synset(data.train, cfg.ipc, cfg.init, make_generator(cfg.seed, "init")))
    return d


@pytest.mark.parametrize("name", ["dm", "dsa"])
def test_a_class_draws_the_same_batch_whatever_the_other_classes(name):
    d = _distiller(name)
    state = d.gen.get_state()
    reals, syns = d.class_batches()
    for subset in ([2], [1, 2], []):
        d.gen.set_state(state)
        sub_reals, sub_syns = d.class_batches(subset)
        assert len(sub_reals) == len(subset)
        for c, xr, xs in zip(subset, sub_reals, sub_syns):
            assert torch.equal(xr, reals[c]) and torch.equal(xs, syns[c])  # same real batch, same DSA draw
        # ...and the run generator moved on alike, whatever the subset
        assert torch.equal(d.gen.get_state(), _after_one_draw(state))


def _after_one_draw(state):
    g = torch.Generator()
    g.set_state(state)
    torch.randint(0, 2**62, (1,), generator=g)
    return g.get_state()


def test_each_iteration_reseeds_the_run_generator():
    a, b = _distiller("dc"), _distiller("dc")
    a.step(0)
    a.step(1)
    b.step(1)  # iteration 1 without iteration 0 before it: the same draws
    assert torch.equal(a.gen.get_state(), b.gen.get_state())


@pytest.mark.parametrize("name", ["dm", "datadam", "dc"])
def test_a_process_without_classes_adds_zero(name, monkeypatch):
    """More processes than classes: a process with no classes steps with the others' gradient only
    (here none: its own gradient is zero and the reduction is the identity)."""
    d = _distiller(name)
    before = d.images.detach().clone()
    monkeypatch.setattr(dist, "shard", lambda items: [])
    rec = d.step(0)
    assert rec["loss"] == 0.0 and torch.equal(d.images, before)
    assert d.images.grad is not None and not d.images.grad.any()
