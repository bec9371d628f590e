"""Differentiable siamese augmentation: siamese sharing, gradients, determinism, hand checks."""
from __future__ import annotations

import math

import pytest
import torch

from datadistill.augment import DSA, DSAParams, TRANSFORMS, parse_strategy, strategy_for

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, c: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=gen(seed))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", TRANSFORMS)
def test_each_transform_shape_and_gradient(op: str, device: str) -> None:
    dsa = DSA(op)
    x = images().to(device).requires_grad_(True)
    w = torch.rand(4, 3, 16, 16, generator=gen(5)).to(device)
    for siamese in (True, False):
        y = dsa(x, dsa.sample(4, gen(3), siamese=siamese))
        assert y.shape == x.shape and y.device == x.device and y.dtype == x.dtype
        (g,) = torch.autograd.grad((y * w).sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("mode", ["single", "all"])
def test_siamese_same_params_same_output_any_batch_size(mode: str) -> None:
    dsa = DSA(mode=mode)
    a, b = images(4, seed=1), images(3, seed=2)
    for seed in range(8):  # covers every transform in single mode with high probability
        p = dsa.sample(999, gen(seed))  # n is irrelevant when siamese
        assert p.siamese and p.n == 1
        assert torch.equal(dsa(a, p), dsa(a.clone(), p))
        both = dsa(torch.cat([a, b]), p)
        torch.testing.assert_close(both, torch.cat([dsa(a, p), dsa(b, p)]))


def test_per_image_params_need_matching_batch() -> None:
    dsa = DSA("crop_flip", mode="all")
    p = dsa.sample(4, gen(), siamese=False)
    assert p.n == 4 and p.values["crop"].shape == (4, 2) and p.values["flip"].shape == (4,)
    assert dsa(images(4), p).shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="batch of 4"):
        dsa(images(3), p)


def test_per_image_values_differ_and_match_single_application() -> None:
    dsa = DSA("crop_cutout_scale", mode="all")
    x = images(5)
    p = dsa.sample(5, gen(7), siamese=False)
    y = dsa(x, p)
    for i in range(5):  # applying row i alone to image i gives the same result
        row = DSAParams(p.ops, True, 1, {k: v[i : i + 1] for k, v in p.values.items()})
        torch.testing.assert_close(y[i : i + 1], dsa(x[i : i + 1], row))


def test_deterministic_from_generator_and_global_rng_untouched() -> None:
    dsa = DSA(mode="all")
    x = images()
    state = torch.get_rng_state()
    y1 = dsa.augment(x, gen(11))
    y2 = dsa.augment(x, gen(11))
    y3 = dsa.augment(x, gen(12))
    p1, p2 = dsa.sample(4, gen(3)), dsa.sample(4, gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert p1.ops == p2.ops and all(torch.equal(p1.values[k], p2.values[k]) for k in p1.values)


def test_single_mode_picks_one_transform_all_mode_all() -> None:
    single = DSA()
    picked = {single.sample(1, gen(s)).ops for s in range(60)}
    assert all(len(ops) == 1 for ops in picked)
    assert {ops[0] for ops in picked} == set(TRANSFORMS)
    assert DSA(mode="all").sample(1, gen()).ops == TRANSFORMS


def test_identity_strategies() -> None:
    x = images()
    for strategy in ("none", "", None):
        dsa = DSA(strategy)
        assert not dsa.enabled and dsa.strategy == "none"
        p = dsa.sample(4, gen())
        assert p.ops == ()
        assert torch.equal(dsa(x, p), x)


def test_invalid_strategy_and_mode() -> None:
    with pytest.raises(ValueError, match="valid"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="single"):
        DSA(mode="twice")
    with pytest.raises(TypeError):
        DSA().sample(2, None)  # type: ignore[arg-type]


def test_strategy_for_removes_flip_on_digits() -> None:
    full = "color_crop_cutout_flip_scale_rotate"
    no_flip = "color_crop_cutout_scale_rotate"
    for name in ("mnist", "MNIST", "mnist-5k", "svhn", "fashion_mnist"):
        assert strategy_for(name, full) == no_flip
        assert "flip" not in parse_strategy(strategy_for(name))
    for name in ("cifar10", "cifar100", "folder"):
        assert strategy_for(name, full) == full
    assert strategy_for("mnist", "flip") == "none"


def test_hand_flip_and_color() -> None:
    x = images(2)
    p = DSAParams(("flip",), True, 1, {"flip": torch.tensor([True])})
    assert torch.equal(DSA("flip")(x, p), x.flip(-1))
    p = DSAParams(("flip",), True, 1, {"flip": torch.tensor([False])})
    assert torch.equal(DSA("flip")(x, p), x)
    # brightness only (saturation 1 and contrast 1 are identities): adds the value
    p = DSAParams(("color",), True, 1, {"color": torch.tensor([[0.25, 1.0, 1.0]])})
    torch.testing.assert_close(DSA("color")(x, p), x + 0.25)
    # saturation 0 turns every pixel into its channel mean (grey)
    p = DSAParams(("color",), True, 1, {"color": torch.tensor([[0.0, 0.0, 1.0]])})
    torch.testing.assert_close(DSA("color")(x, p), x.mean(1, keepdim=True).expand_as(x))
    # sampled color values lie in the reference ranges
    v = DSA("color").sample(1000, gen(), siamese=False).values["color"]
    assert v[:, 0].min() >= -0.5 and v[:, 0].max() < 0.5
    assert v[:, 1].min() >= 0 and v[:, 1].max() < 2
    assert v[:, 2].min() >= 0.5 and v[:, 2].max() < 1.5


def test_hand_crop_known_shift() -> None:
    # 16x16 -> s = int(16 * 0.125 + 0.5) = 2, shifts in [-2, 2]; u = (shift + s + 0.5) / 5
    x = images(3, size=16)
    dsa = DSA("crop")
    dy, dx = 1, -2
    u = torch.tensor([[(dy + 2.5) / 5, (dx + 2.5) / 5]])
    expected = torch.zeros_like(x)
    expected[:, :, : 16 - dy, -dx:] = x[:, :, dy:, : 16 + dx]
    assert torch.equal(dsa(x, DSAParams(("crop",), True, 1, {"crop": u})), expected)
    # per-image path (gather) agrees with the siamese path (slice)
    assert torch.equal(dsa(x, DSAParams(("crop",), False, 3, {"crop": u.expand(3, 2)})), expected)
    shifts = DSA("crop").sample(500, gen(), siamese=False).values["crop"]
    assert set(((shifts * 5).floor() - 2).flatten().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_hand_cutout_and_rotate() -> None:
    x = torch.ones(1, 1, 8, 8)
    # side 4 (even) -> 9 centre positions; u = 4.5/9 -> centre 4 -> rows/cols 2..5 zeroed
    p = DSAParams(("cutout",), True, 1, {"cutout": torch.tensor([[4.5 / 9, 4.5 / 9]])})
    y = DSA("cutout")(x, p)
    assert y[0, 0, 2:6, 2:6].sum() == 0 and y.sum() == 64 - 16
    # rotation by 0 and scale by 1 are identities; rotation by 90 degrees is rot90
    z = images(2, size=9)
    p0 = DSAParams(("rotate",), True, 1, {"rotate": torch.tensor([0.0])})
    torch.testing.assert_close(DSA("rotate")(z, p0), z)
    p1 = DSAParams(("scale",), True, 1, {"scale": torch.tensor([[1.0, 1.0]])})
    torch.testing.assert_close(DSA("scale")(z, p1), z)
    p90 = DSAParams(("rotate",), True, 1, {"rotate": torch.tensor([math.pi / 2])})
    y90 = DSA("rotate")(z, p90)
    assert any(torch.allclose(y90, torch.rot90(z, k, dims=(2, 3)), atol=1e-5) for k in (1, 3))
    angles = DSA("rotate").sample(500, gen(), siamese=False).values["rotate"]
    assert angles.abs().max() <= math.radians(15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    dsa = DSA(mode="all")
    x = images()
    for siamese in (True, False):
        p = dsa.sample(4, gen(2), siamese=siamese)
        torch.testing.assert_close(dsa(x.cuda(), p).cpu(), dsa(x, p), atol=1e-5, rtol=1e-5)


def test_digit_rule_off_applies_the_strategy_as_given() -> None:
    """--no-dsa-digit-rule is the reference code's behaviour: flip stays on MNIST too."""
    full = "color_crop_cutout_flip_scale_rotate"
    for name in ("mnist", "fashion_mnist", "svhn", "cifar10"):
        assert strategy_for(name, full, digit_rule=False) == full
    assert strategy_for("mnist", "flip", digit_rule=False) == "flip"
    assert strategy_for("mnist", full, digit_rule=True) == strategy_for("mnist", full)  # the default
    from datadistill.errors import ConfigError

    with pytest.raises(ConfigError, match="dsa_digit_rule"):
        strategy_for("mnist", full, digit_rule="no")  # type: ignore[arg-type]


def test_warp_grid_equals_the_reference_convention_on_square_images() -> None:
    """The reference calls affine_grid/grid_sample without align_corners (False); we pass True.
    Scaling and rotating about the centre of a square image give the same grid either way, so the
    convention is no departure on MNIST or CIFAR (a changed warp would fail here)."""
    import warnings

    from torch.nn import functional as F

    x = images(2, size=28)
    cases = {
        "scale": (torch.tensor([[1.15, 0.9]]), torch.tensor([[[1.15, 0.0, 0.0], [0.0, 0.9, 0.0]]])),
        "rotate": (torch.tensor([0.2]), torch.tensor([[[math.cos(0.2), math.sin(0.2), 0.0],
                                                       [-math.sin(0.2), math.cos(0.2), 0.0]]])),
    }
    for op, (value, theta) in cases.items():
        ours = DSA(op)(x, DSAParams((op,), True, 1, {op: value}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = F.grid_sample(x, F.affine_grid(theta.expand(2, 2, 3), list(x.shape)))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        assert (ours - x).abs().max() > 0.05  # the transform did something
