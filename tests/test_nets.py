"""Networks: registry, shapes, variants, deterministic init, feature maps, functional forward."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from datadistill.nets import (
    flat_params,
    functional_forward,
    list_nets,
    make_net,
    param_layout,
    register,
    unflatten_params,
)

EXPECTED_NETS = {"convnet", "convnet_bn", "lenet", "alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet18_bn", "mlp"}
SHAPES = [(1, 28), (3, 32)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(channels: int, size: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=gen(seed))


def test_registry_lists_every_net() -> None:
    assert EXPECTED_NETS <= set(list_nets())
    assert list_nets() == sorted(list_nets())


@pytest.mark.parametrize("name", sorted(EXPECTED_NETS))
@pytest.mark.parametrize("channels,size", SHAPES)
def test_every_net_builds_and_runs(name: str, channels: int, size: int) -> None:
    net = make_net(name, channels, 10, (size, size), generator=gen())
    x = batch(channels, size)
    logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    emb = net.embed(x)
    assert emb.shape == (2, net.embed_dim)
    assert isinstance(net.classifier, nn.Linear)
    assert net.classifier.in_features == net.embed_dim and net.classifier.out_features == 10
    torch.testing.assert_close(net.classifier(emb), logits)
    if net.has_spatial_features:
        maps = net.feature_maps(x)
        assert len(maps) >= 2 and all(m.dim() == 4 and m.shape[0] == 2 for m in maps)
    with pytest.raises(ValueError, match="built for inputs"):
        net(batch(channels, size + 4))


def test_feature_map_counts_per_architecture() -> None:
    counts = {"lenet": 2, "alexnet": 5, "vgg11": 8, "resnet18": 4}
    for name, count in counts.items():
        net = make_net(name, 3, 10, 32, generator=gen())
        assert len(net.feature_maps(batch(3, 32, n=1))) == count
    maps = make_net("resnet18", 3, 10, 32, generator=gen()).feature_maps(batch(3, 32, n=1))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


@pytest.mark.parametrize(
    "variant",
    [{"depth": d} for d in (1, 2, 3, 4)]
    + [{"width": 32}, {"width": 256, "depth": 1}]
    + [{"norm": n} for n in ("none", "batch", "layer", "instance", "group")]
    + [{"act": a} for a in ("relu", "sigmoid", "leakyrelu")]
    + [{"pool": p} for p in ("avg", "max", "none")],
)
def test_convnet_variants(variant: dict) -> None:
    variant = {"width": 8, **variant}
    net = make_net("convnet", 3, 10, 32, generator=gen(), **variant)
    x = batch(3, 32)
    assert net(x).shape == (2, 10)
    depth, width = variant.get("depth", 3), variant["width"]
    side = 32 if variant.get("pool") == "none" else 32 // 2**depth
    assert net.embed_dim == width * side * side
    maps = net.feature_maps(x)
    assert len(maps) == depth
    assert tuple(maps[-1].shape) == (2, width, side, side)


def test_convnet_norm_layers_are_the_reference_ones() -> None:
    def norm_of(norm: str) -> nn.Module:
        return make_net("convnet", 3, 10, 32, width=16, norm=norm).blocks[0].norm

    inst, layer, group = norm_of("instance"), norm_of("layer"), norm_of("group")
    assert isinstance(inst, nn.GroupNorm) and inst.num_groups == 16 and inst.affine
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 1
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 4
    assert isinstance(norm_of("batch"), nn.BatchNorm2d)
    assert isinstance(make_net("convnet_bn", 3, 10, 32, width=8).blocks[0].norm, nn.BatchNorm2d)
    assert isinstance(make_net("convnet_bn", 3, 10, 32, width=8, norm="instance").blocks[0].norm, nn.GroupNorm)
    act = make_net("convnet", 3, 10, 32, width=8, act="leakyrelu").blocks[0].act
    assert act.negative_slope == 0.01


def test_convnet_28_behaves_as_32() -> None:
    net28 = make_net("convnet", 1, 10, (28, 28), width=16)
    net32 = make_net("convnet", 1, 10, (32, 32), width=16)
    assert net28.blocks[0].conv.padding == (3, 3) and net32.blocks[0].conv.padding == (1, 1)
    assert net28.embed_dim == net32.embed_dim == 16 * 4 * 4
    maps = net28.feature_maps(batch(1, 28))
    assert [tuple(m.shape[2:]) for m in maps] == [(16, 16), (8, 8), (4, 4)]
    assert make_net("convnet", 3, 10, 64, width=8, depth=4).embed_dim == 8 * 4 * 4


def test_deterministic_init_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = make_net("convnet", 3, 10, 32, width=16, generator=gen(7))
    b = make_net("convnet", 3, 10, 32, width=16, generator=gen(7))
    c = make_net("convnet", 3, 10, 32, width=16, generator=gen(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(flat_params(a), flat_params(b))
    assert not torch.equal(flat_params(a), flat_params(c))
    # the generator advances: two nets from one generator differ, reproducibly
    g1, g2 = gen(3), gen(3)
    pair1 = [flat_params(make_net("lenet", 1, 10, 28, generator=g1)) for _ in range(2)]
    pair2 = [flat_params(make_net("lenet", 1, 10, 28, generator=g2)) for _ in range(2)]
    assert not torch.equal(pair1[0], pair1[1])
    assert all(torch.equal(p, q) for p, q in zip(pair1, pair2))


def test_without_generator_uses_global_rng() -> None:
    torch.manual_seed(123)
    a = make_net("lenet", 1, 10, 28)
    torch.manual_seed(123)
    b = make_net("lenet", 1, 10, 28)
    assert torch.equal(flat_params(a), flat_params(b))


def test_mlp_has_no_feature_maps() -> None:
    net = make_net("mlp", 1, 10, 28)
    assert net.has_spatial_features is False and net.embed_dim == 128
    with pytest.raises(ValueError, match="mlp has no convolutional blocks / spatial features"):
        net.feature_maps(batch(1, 28))


@pytest.mark.parametrize(
    "name,variant,match",
    [
        ("resnet50", {}, "valid choices: alexnet"),
        ("convnet", {"depth": 7}, "depth"),
        ("convnet", {"depth": 0}, "depth"),
        ("convnet", {"width": -1}, "width"),
        ("convnet", {"norm": "weird"}, "valid choices: instance, batch, layer, group, none"),
        ("convnet", {"act": "tanh"}, "relu, sigmoid, leakyrelu"),
        ("convnet", {"pool": "min"}, "avg, max, none"),
        ("convnet", {"widht": 64}, "valid options: width, depth, norm, act, pool"),
        ("convnet", {"width": 6, "norm": "group"}, "divisible by 4"),
        ("lenet", {"width": 64}, "valid options: none"),
        ("vgg11", {"norm": "group"}, "instance, batch"),
        ("lenet", {"_size": 8}, "valid options"),
    ],
)
def test_invalid_variants_raise_value_error(name: str, variant: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_net(name, 3, 10, 32, **variant)


def test_too_small_inputs_raise() -> None:
    with pytest.raises(ValueError, match="cannot take 8x8"):
        make_net("lenet", 3, 10, 8)
    with pytest.raises(ValueError, match="cannot take"):
        make_net("convnet", 3, 10, 8, depth=4)
    with pytest.raises(ValueError, match="im_size"):
        make_net("convnet", 3, 10, (32, 32, 3))


def test_register_adds_a_net_and_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("convnet")(lambda c, k, s: nn.Linear(1, 1))


@pytest.mark.parametrize("name", ["convnet", "convnet_bn", "lenet", "mlp"])
def test_functional_forward_matches_module(name: str) -> None:
    net = make_net(name, 1, 10, 28, generator=gen(), **({"width": 16} if "convnet" in name else {}))
    net.eval()
    x = batch(1, 28, n=3)
    flat = flat_params(net)
    assert flat.dim() == 1 and flat.numel() == sum(p.numel() for p in net.parameters())
    torch.testing.assert_close(functional_forward(net, flat, x), net(x))
    # gradients reach the flat vector, and match the module's own parameter gradients
    flat = flat.clone().requires_grad_(True)
    functional_forward(net, flat, x).square().sum().backward()
    assert flat.grad is not None and torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0
    net.zero_grad()
    net(x).square().sum().backward()
    torch.testing.assert_close(flat.grad, torch.cat([p.grad.reshape(-1) for p in net.parameters()]))


def test_param_layout_and_unflatten() -> None:
    net = make_net("convnet", 3, 10, 32, width=8, depth=2)
    layout = param_layout(net)
    names = [n for n, _ in net.named_parameters()]
    assert [s.name for s in layout] == names
    assert names[0] == "blocks.0.conv.weight" and names[-1] == "classifier.bias"
    offset = 0
    for slot, (_, p) in zip(layout, net.named_parameters()):
        assert slot.offset == offset and slot.shape == tuple(p.shape) and slot.numel == p.numel()
        offset += slot.numel
    flat = flat_params(net).requires_grad_(True)
    views = unflatten_params(net, flat)
    assert all(torch.equal(views[n], p) for n, p in net.named_parameters())
    views["classifier.bias"].sum().backward()
    assert flat.grad[-10:].eq(1).all() and flat.grad[:-10].eq(0).all()
    with pytest.raises(ValueError, match="needs a 1-D tensor"):
        unflatten_params(net, flat[:-1])


def test_maps_and_embed_equal_feature_maps_and_embed():
    """One forward gives both (attention matching relies on it), for every net with feature maps."""
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for name in ("convnet", "lenet", "alexnet", "vgg11", "resnet18"):
        net = make_net(name, 1, 3, (28, 28), generator=torch.Generator().manual_seed(1)).eval()
        with torch.no_grad():
            maps, emb = net.maps_and_embed(x)
            ref = net.feature_maps(x)
            assert len(maps) == len(ref) and all(torch.allclose(a, b) for a, b in zip(maps, ref)), name
            assert torch.allclose(emb, net.embed(x), atol=1e-6), name


@pytest.mark.parametrize("bad", ["big", "32", b"32", True, (32.5, 32), (32,), (0, 32)])
def test_an_image_size_that_is_not_one_or_two_positive_ints_is_refused(bad):
    from datadistill.errors import ConfigError
    from datadistill.nets import make_net

    with pytest.raises(ConfigError, match="im_size must be"):
        make_net("convnet", 3, 10, bad)
