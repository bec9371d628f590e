"""unroll="tesla" (constant-memory trajectory matching) and unroll="auto": tesla's gradients equal
the plain unroll's (images, step size, soft labels; DSA on), it takes the same step in MTT and
PAD, its peak memory does not grow with syn_steps while plain's does, a killed tesla run resumes
to the same set, and auto picks as documented in memory.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datadistill import memstats
from datadistill.augment import DSA
from datadistill.config import resolve_config
from datadistill.errors import ConfigError
from datadistill.methods import get_method, initial_synset
from datadistill.methods.trajectory import TrajectoryMatching, trajectory_loss, unroll
from datadistill.methods.trajectory import memory as tm
from datadistill.methods.trajectory import mtt as mtt_module
from datadistill.nets import flat_params, make_net
from datadistill.rng import make_generator
from datadistill.run import run_distillation

from test_mtt import cfg, distiller
from toydata import check_kill_and_resume

pytestmark = pytest.mark.usefixtures("one_thread")
HERE = Path(__file__).resolve().parent


# -- the gradient -------------------------------------------------------------------------------

def _problem(steps, batch, soft=False, n=7, seed=0):
    """A float64 ConvNet, n images, `steps` minibatches of `batch` (chunks of permutations, as
    MTT's plan draws them) with per-sample DSA values on every transform."""
    g = torch.Generator().manual_seed(seed)
    net = make_net("convnet", 1, 3, (8, 8), generator=g, width=3, depth=1).to(torch.float64)
    net.train().requires_grad_(False)
    start = flat_params(net).detach()
    target = start + 0.05 * torch.randn(start.shape, generator=g, dtype=torch.float64)
    images = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = (torch.softmax(torch.randn(n, 3, generator=g, dtype=torch.float64), 1) if soft
              else torch.arange(n) % 3)
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="all")
    chunks, batches = [], []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=g).split(batch))
        batches.append(chunks.pop(0))
    augs = [dsa.sample(len(b), g, siamese=False) for b in batches]
    return net, start, target, images, labels, dsa, batches, augs


def _grads(problem, mode, lr=0.05):
    net, start, target, images, labels, dsa, batches, augs = problem
    im = images.clone().requires_grad_(True)
    lab = labels.clone().requires_grad_(True) if labels.is_floating_point() else labels
    alpha = torch.tensor(lr, dtype=images.dtype, requires_grad=True)
    loss = trajectory_loss(unroll(net, start, im, lab, alpha, batches, augs, dsa, mode=mode), start, target)
    loss.backward()
    return loss.detach(), im.grad, alpha.grad, (lab.grad if lab is not labels else None)


@pytest.mark.parametrize("steps", [1, 3, 7])
@pytest.mark.parametrize("batch", [2, 5, 7])
def test_tesla_gradient_equals_the_plain_gradient(steps, batch):
    problem = _problem(steps, batch)
    loss_p, img_p, lr_p, _ = _grads(problem, "plain")
    loss_t, img_t, lr_t, _ = _grads(problem, "tesla")
    torch.testing.assert_close(loss_t, loss_p, rtol=1e-12, atol=0)
    torch.testing.assert_close(img_t, img_p, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(lr_t, lr_p, rtol=1e-9, atol=0)
    assert img_p.abs().sum() > 0 and lr_p.abs() > 0
    if steps > 1 and batch < 7:  # images of the first batch only: their later effect is the HVP part
        first_only = set(problem[6][0].tolist()) - {i for b in problem[6][1:] for i in b.tolist()}
        for i in first_only:
            assert img_t[i].abs().sum() > 0


def test_tesla_keeps_the_hessian_terms_of_later_steps():
    """Dropping the later steps' Hessian-vector products (lam kept at dL/dw_N) gives another
    gradient, measurably: the equality above is not a property of any per-batch sum."""
    net, start, target, images, labels, dsa, batches, augs = _problem(7, 3)
    _, img_p, _, _ = _grads((net, start, target, images, labels, dsa, batches, augs), "plain")
    end = unroll(net, start, images, labels, torch.tensor(0.05, dtype=torch.float64), batches, augs, dsa, mode="tesla")
    lam = 2 * (end - target) / (start - target).square().sum()
    approx = torch.zeros_like(images)
    w = start
    for idx, aug in zip(batches, augs):  # the first-order, per-batch terms alone
        w_leaf = w.detach().requires_grad_(True)
        x = images[idx].clone().requires_grad_(True)
        g = mtt_module.student_gradient(net, w_leaf, x, labels[idx], aug, dsa, True)
        (gx,) = torch.autograd.grad(torch.dot(g, lam), x)
        approx.index_add_(0, idx, -0.05 * gx)
        w = (w_leaf - 0.05 * g).detach()
    assert (approx - img_p).abs().max() > 1e-6 * img_p.abs().max()


@pytest.mark.parametrize("steps", [1, 4])
def test_tesla_soft_label_gradient_equals_the_plain_one(steps):
    problem = _problem(steps, 3, soft=True)
    _, img_p, lr_p, y_p = _grads(problem, "plain")
    _, img_t, lr_t, y_t = _grads(problem, "tesla")
    torch.testing.assert_close(img_t, img_p, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(lr_t, lr_p, rtol=1e-9, atol=0)
    torch.testing.assert_close(y_t, y_p, rtol=1e-9, atol=1e-14)
    assert y_p.abs().sum() > 0


# -- through the methods ------------------------------------------------------------------------

def _same_step(a, b):
    ra, rb = a.step(0), b.step(0)
    assert (ra["expert"], ra["start_epoch"]) == (rb["expert"], rb["start_epoch"])
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    torch.testing.assert_close(a.images, b.images, rtol=1e-4, atol=1e-6)
    assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-5)


def test_tesla_takes_the_plain_step_in_mtt(tiny_experts, tiny):
    a = distiller(cfg(tiny_experts), tiny)
    b = distiller(cfg(tiny_experts, method_args={"unroll": "tesla"}), tiny)
    before = a.images.detach().clone()
    _same_step(a, b)
    assert not torch.equal(a.images, before)


@pytest.mark.parametrize("extra", [{"soft_labels": True, "alpha": 0.3, "selection": "loss"},
                                   {"alpha": 0.5, "selection": "depth"}])
def test_tesla_takes_the_plain_step_in_pad(tiny_experts, tiny, extra):
    def pad(unroll_mode):
        c = cfg(tiny_experts, method_args={"unroll": unroll_mode, "require_curriculum": False, "lr_y": 5.0, **extra})
        c = resolve_config("pad", "toy", 2, "quick", device="cpu", model_args=c.model_args, experts=tiny_experts,
                           lr_img=10.0, iterations=6, eval={"runs": 0}, method_args=dict(c.method_args))
        d = get_method("pad")(c, tiny, torch.device("cpu"))
        d.init(initial_synset(tiny.train, c.ipc, c.init, make_generator(c.seed, "init")))
        return d

    a, b = pad("plain"), pad("tesla")
    _same_step(a, b)
    if extra.get("soft_labels"):
        torch.testing.assert_close(a.label_logits, b.label_logits, rtol=1e-4, atol=1e-6)


def test_a_killed_tesla_run_resumes_to_the_same_set(tmp_path, tiny_experts, tiny, monkeypatch):
    full, resumed = check_kill_and_resume(TrajectoryMatching, lambda: cfg(tiny_experts, method_args={"unroll": "tesla"}),
                                          tiny, tmp_path, monkeypatch)
    assert resumed.lr == full.lr


def test_unknown_unroll_mode_is_refused(tiny_experts, tiny):
    with pytest.raises(ConfigError, match="plain, checkpoint, tesla, auto"):
        distiller(cfg(tiny_experts, method_args={"unroll": "fast"}), tiny)
    with pytest.raises(ConfigError, match="choose_unroll"):
        net, start, _, images, labels, dsa, batches, augs = _problem(1, 2)
        unroll(net, start, images, labels, torch.tensor(0.1), batches, augs, dsa, mode="auto")


# -- memory -------------------------------------------------------------------------------------

def _peak_child(mode: str, steps: int) -> None:
    """In a fresh process: peak resident memory (MiB) above the start of one unroll's forward and
    backward on 256 3x16x16 images (ConvNet width 8, depth 2, DSA), printed as JSON. Small
    parameter vector (2,000 floats), large activations: a step's graph is far heavier than the
    stored trajectory, so what tesla stores per step cannot hide in the measurement noise."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    net = make_net("convnet", 3, 10, (16, 16), generator=g, width=8, depth=2)
    net.train().requires_grad_(False)
    start = flat_params(net).detach()
    target = start + 0.01 * torch.randn(start.shape, generator=g)
    images = torch.randn(256, 3, 16, 16, generator=g).requires_grad_(True)
    labels = torch.arange(256) % 10
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    batches = [torch.arange(256)] * steps
    augs = [dsa.sample(256, g, siamese=False) for _ in batches]
    lr = torch.tensor(0.01, requires_grad=True)
    before = memstats.reset_peak("cpu")  # the resident high-water mark restarts from here
    trajectory_loss(unroll(net, start, images, labels, lr, batches, augs, dsa, mode=mode), start, target).backward()
    print(json.dumps({"mode": mode, "steps": steps, "peak_mib": memstats.peak_since_reset("cpu") - before,
                      "param_mib": start.numel() * 4 / 2**20}))


def _measure(mode: str, steps: int) -> dict:
    # A fixed mmap threshold: every large tensor is mapped and unmapped, so the resident high-water
    # mark follows what is alive instead of what the heap happened to keep.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", f"import test_tesla; test_tesla._peak_child({mode!r}, {steps})"],
                         cwd=HERE, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")


@needs_proc
def test_tesla_peak_memory_does_not_grow_with_syn_steps():
    tesla = {n: _measure("tesla", n)["peak_mib"] for n in (5, 20, 80)}
    plain = {n: _measure("plain", n)["peak_mib"] for n in (5, 20)}
    # the measurement sees growth where there is some: plain holds 4x the graphs at 20 steps
    assert plain[20] > 2.0 * plain[5], plain
    assert plain[5] > 1.5 * tesla[5], (plain, tesla)
    assert max(tesla.values()) <= 1.10 * min(tesla.values()), tesla


def test_memory_estimates_follow_the_documented_formulas():
    est = tm.UnrollEstimate(step_bytes=100, param_bytes=10, steps=16, segment=0)
    assert est.bytes("plain") == 16 * 120 + 100
    assert est.bytes("checkpoint") == 4 * 10 + 4 * 120 + 100  # k = sqrt(16) = 4
    assert est.bytes("tesla") == 16 * 10 + 200 + 40
    assert tm.UnrollEstimate(100, 10, 16, 3).bytes("checkpoint") == 6 * 10 + 3 * 120 + 100
    with pytest.raises(ValueError):
        est.bytes("auto")



def test_step_graph_count_does_not_depend_on_the_allocator_state():
    """The probe once deduplicated storages by address while letting counted ones be freed, so a
    later storage at a reused address went uncounted and the same step counted differently as
    memory was used in between (unroll=auto's choice at a boundary then changed run to run)."""
    g = torch.Generator().manual_seed(0)
    net = make_net("convnet", 3, 10, (16, 16), generator=g, width=8, depth=2).train().requires_grad_(False)
    images, labels = torch.randn(64, 3, 16, 16, generator=g), torch.arange(64) % 10
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    counts, junk = set(), []
    for i in range(12):
        junk.append(torch.empty(1 + (i * 7919) % 300_000))  # the allocator's state differs at every count
        if i % 2:
            junk.pop(0)
        params = dsa.sample(64, torch.Generator().manual_seed(1), siamese=False)
        counts.add(tm.step_graph_bytes(net, flat_params(net), images, labels, params, dsa))
    assert len(counts) == 1, counts

@needs_proc
def test_step_graph_estimate_is_near_the_measured_growth_of_plain():
    """The probe step's count against the measured memory per plain step (same problem as above)."""
    g = torch.Generator().manual_seed(0)
    net = make_net("convnet", 3, 10, (16, 16), generator=g, width=8, depth=2).train().requires_grad_(False)
    images = torch.randn(256, 3, 16, 16, generator=g)
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    s = tm.step_graph_bytes(net, flat_params(net), images, torch.arange(256) % 10, dsa.sample(256, g, siamese=False), dsa)
    per_step = (_measure("plain", 20)["peak_mib"] - _measure("plain", 5)["peak_mib"]) / 15
    assert 0.6 < (s / 2**20) / per_step < 1.4, (s / 2**20, per_step)


@pytest.mark.parametrize("avail_mib, expect", [(1e6, "plain"), (None, "checkpoint"), (None, "tesla"), (0.001, "tesla")])
def test_auto_picks_the_first_mode_that_fits(tiny_experts, tiny, monkeypatch, avail_mib, expect):
    c = cfg(tiny_experts, iterations=1, method_args={"unroll": "auto", "syn_steps": 9})
    probe = distiller(cfg(tiny_experts, method_args={"syn_steps": 9}), tiny).estimate_memory()
    assert probe.step_bytes > 0 and probe.bytes("plain") > probe.bytes("checkpoint") > probe.bytes("tesla")
    if avail_mib is None:  # just enough for the expected mode, not for the one before it
        avail = probe.bytes(expect) / tm.AUTO_FRACTION
        earlier = tm.AUTO_ORDER[tm.AUTO_ORDER.index(expect) - 1]
        assert probe.bytes(earlier) > tm.AUTO_FRACTION * avail
    else:
        avail = avail_mib * 2**20
    monkeypatch.setattr(mtt_module, "available_bytes", lambda device: (int(avail), "test"))
    lines = []
    res = run_distillation(c, None, data=tiny, progress=False, log=lines.append)
    notes = [l for l in lines if l.startswith("unroll=auto")]
    assert len(notes) == 1 and notes[0].startswith(f"unroll=auto chose {expect}"), lines
    assert ("may not fit" in notes[0]) == (avail_mib == 0.001)
    assert res.synset.meta["unroll"] == expect


def test_auto_gives_the_plain_result_up_to_float_error(tiny_experts, tiny, monkeypatch):
    monkeypatch.setattr(mtt_module, "available_bytes", lambda device: (1, "test"))  # nothing fits: tesla
    a = distiller(cfg(tiny_experts), tiny)
    b = distiller(cfg(tiny_experts, method_args={"unroll": "auto"}), tiny)
    assert b.unroll_mode == "tesla" and b.setup_notes() and not a.setup_notes()
    _same_step(a, b)


def test_available_memory_is_read_from_the_system():
    avail, source = tm.available_bytes("cpu")
    assert avail > 0 and source
    if os.path.exists("/proc/meminfo"):
        assert source == "/proc/meminfo MemAvailable"
