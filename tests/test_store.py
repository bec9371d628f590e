"""The out-of-core image store (data/store.py): the same numbers as the in-memory path (and the same
synthetic sets for the same seed), rebuilt when a source file changes, never read half-written."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.config import resolve_config
from datadistill.data import load_dataset
from datadistill.data import store as st
from datadistill.data.zca import fit_zca, whiten
from datadistill.evaluate import evaluate
from datadistill.methods.trajectory import ExpertSettings, train_experts
from datadistill.run import run_distillation

from conftest import TINY_NET
from data_fixtures import write_image
from test_bit_identity import _digest

pytestmark = pytest.mark.usefixtures("one_thread")


def write_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        for i in range(per_class):
            px = np.clip(rng.normal(60 + 60 * c, 30, (size, size)), 0, 255).astype(np.uint8)
            write_image(root / f"class{c}" / f"{i:03d}.png", px)
    return root


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("folder") / "imgs")
    name = f"folder:{root}"
    mem = load_dataset(name, progress=False, storage="memory")
    disk = load_dataset(name, progress=False, storage="disk", cache=tmp_path_factory.mktemp("cache"))
    return mem, disk


def test_the_store_reads_what_memory_holds(both):
    mem, disk = both
    assert disk.train.out_of_core and not mem.train.out_of_core
    for a, b in ((mem.train, disk.train), (mem.val, disk.val), (mem.test, disk.test)):
        assert a.images.shape == b.images.shape and torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, b.images[:])
        idx = torch.tensor([len(a) - 1, 0, len(a) - 1, 1])  # out of order, repeated
        assert torch.equal(a.images[idx], b.images[idx])
    for c in range(3):
        g1, g2 = torch.Generator().manual_seed(c), torch.Generator().manual_seed(c)
        assert torch.equal(mem.train.class_batch(c, 5, g1), disk.train.class_batch(c, 5, g2))
    sub = disk.train.subset(torch.tensor([5, 1]))
    assert sub.out_of_core and torch.equal(sub.images[:], mem.train.images[[5, 1]])


def test_zca_per_batch_matches_the_whole_split(both):
    mem, disk = both
    zca = fit_zca(mem.train)
    z_disk = fit_zca(disk.train)  # fitted from the chunks read off disk
    assert all(torch.allclose(zca[k], z_disk[k], atol=1e-5) for k in zca)
    assert torch.allclose(whiten(mem.train, zca).images, whiten(disk.train, zca).images[:], atol=1e-5)


@pytest.mark.parametrize("method,args", [
    ("dm", {}), ("dsa", {"inner_loop": 1, "outer_loop": 2}), ("dc", {"inner_loop": 1, "outer_loop": 2}),
    ("datadam", {"layers": "all"}), ("herding", {"embed_epochs": 1}), ("k-center", {"embed_epochs": 1}), ("random", {}),
])
def test_same_seed_same_set_on_both_paths(both, method, args):
    digests = []
    iterations = 0 if method in ("herding", "k-center", "random") else 3
    for data in both:
        cfg = resolve_config(method, "toy", 2, "quick", device="cpu", model_args=TINY_NET, iterations=iterations,
                             eval={"runs": 0}, batch_real=6, method_args=dict(args), val_epochs=1)
        syn = run_distillation(cfg, None, data=data, progress=False, log=lambda m: None).synset
        res = evaluate(syn, model="convnet", runs=1, epochs=3, aug="none", test=data.test, device="cpu",
                       model_args=TINY_NET, progress=False)
        digests.append((_digest(syn), res.accuracies))
    assert digests[0] == digests[1]


def test_experts_and_mtt_same_on_both_paths(both, tmp_path):
    digests = []
    for k, data in enumerate(both):
        out = tmp_path / f"experts{k}"
        train_experts(ExpertSettings("toy", num_experts=1, epochs=2, model_args=TINY_NET, batch_size=8), out,
                      data=data, device="cpu", progress=False, log=lambda m: None)
        cfg = resolve_config("mtt", "toy", 2, "quick", device="cpu", model_args=TINY_NET, iterations=2,
                             eval={"runs": 0}, experts=str(out), val_epochs=1,
                             method_args={"syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1})
        digests.append(_digest(run_distillation(cfg, None, data=data, progress=False, log=lambda m: None).synset))
    assert digests[0] == digests[1]


def test_rebuilt_when_a_source_file_changes(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=4)
    cache = tmp_path / "cache"
    first = load_dataset(f"folder:{root}", progress=False, storage="disk", cache=cache)
    entry = next(p for p in cache.rglob(st.MANIFEST)).parent
    built = st.read_manifest(entry)["fingerprint"]
    again = load_dataset(f"folder:{root}", progress=False, storage="disk", cache=cache)
    assert st.read_manifest(entry)["fingerprint"] == built  # reused
    assert torch.equal(first.test.images[:], again.test.images[:])
    changed = next(iter(sorted((root / "class0").iterdir())))
    write_image(changed, np.full((8, 8), 255, np.uint8))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a different mtime even on coarse clocks
    third = load_dataset(f"folder:{root}", progress=False, storage="disk", cache=cache)
    assert st.read_manifest(entry)["fingerprint"] != built
    assert torch.equal(third.train.images[:], load_dataset(f"folder:{root}", progress=False, storage="memory").train.images)


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from datadistill.data import scan, store

    class Slow(scan.Part):
        count = 4
        def load(self):
            time.sleep(0.3)
            return np.zeros((4, 1, 4, 4), np.uint8)

    parts = [Slow() for _ in range(200)]
    s = scan.Scan(scan.SplitScan(parts, np.zeros(800, np.int64)), scan.SplitScan([Slow()], np.zeros(4, np.int64)),
                  ("a",), (1, 4, 4), [])
    store.open_or_build(lambda: s, sys.argv[1], "slow", {}, workers=0, progress=False)
""")


def _small_scan():
    from datadistill.data import scan

    arr = np.arange(2 * 16, dtype=np.uint8).reshape(2, 1, 4, 4)
    return scan.Scan(scan.SplitScan([scan.ArrayPart(arr)], np.zeros(2, np.int64)),
                     scan.SplitScan([scan.ArrayPart(arr)], np.zeros(2, np.int64)), ("a",), (1, 4, 4), [])


def test_a_killed_build_is_never_read(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(st.__file__).parents[2]), env_path()]))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(cache)], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(cache.glob(".tmp-slow-*/train.npy")):
            time.sleep(0.05)
        assert list(cache.glob(".tmp-slow-*/train.npy")), "the build never started"
        time.sleep(0.4)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    entry = st.entry_dir(cache, "slow", (1, 4, 4))
    assert not entry.exists() and st.read_manifest(entry) is None  # only the temporary folder is there
    store = st.open_or_build(_small_scan, cache, "slow", {}, workers=0, progress=False)
    assert store.path == entry and not list(cache.glob(".tmp-*"))  # the leftover is removed
    assert np.array_equal(store.load_array("train"), _small_scan().train.parts[0].load())


def env_path() -> str:
    return os.environ.get("PYTHONPATH", "")


def test_parallel_decoding_gives_the_same_store(tmp_path):
    from datadistill.data import scan

    files = [write_image(tmp_path / "im" / f"{i}.png", np.full((6, 9, 3), i * 10, np.uint8)) for i in range(10)]
    parts = scan.image_parts(files, 4, per_part=3)
    s = scan.Scan(scan.SplitScan(parts, np.arange(10) % 2), scan.SplitScan(parts[:1], np.zeros(3, np.int64)),
                  ("a", "b"), (3, 4, 4), files)
    one = st.open_or_build(lambda: s, tmp_path / "c0", "x", {}, workers=0, progress=False)
    two = st.open_or_build(lambda: s, tmp_path / "c2", "x", {}, workers=2, progress=False)
    assert np.array_equal(one.load_array("train"), two.load_array("train"))
    assert one.load_array("train")[7].max() == 70
    order = np.load(one.path / "train_by_class.npy")
    offsets = np.load(one.path / "train_class_offsets.npy")
    assert order[offsets[1]:offsets[2]].tolist() == [1, 3, 5, 7, 9]


def test_two_processes_building_the_same_entry_both_get_it(tmp_path):
    """Under torchrun every process may build at once: the second to finish keeps the first's entry."""
    cache = tmp_path / "cache"
    a = st.open_or_build(_small_scan, cache, "same", {}, workers=0, progress=False)
    fp = a.fingerprint
    tmp = cache / f".tmp-{a.path.name}-{os.getpid()}-abcdef12"  # a second, finished build of the same data
    shutil.copytree(a.path, tmp)
    st._put_in_place(tmp, a.path, fp)
    assert st.read_manifest(a.path)["fingerprint"] == fp and not tmp.exists()
    live = cache / f".tmp-{a.path.name}-1-0000"  # pid 1 runs: another process's build in progress
    dead = cache / f".tmp-{a.path.name}-999999999-0000"  # no such process: a killed build's leftover
    live.mkdir()
    dead.mkdir()
    st.build(_small_scan(), a.path, "another fingerprint", name="same", workers=0, progress=False)
    assert live.exists() and not dead.exists()
    assert st.read_manifest(a.path)["fingerprint"] == "another fingerprint"
