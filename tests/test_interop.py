"""Published sets in and out (datadistill.interop): each format's importer on small files of its exact
layout, written here with torch.save / PIL; export then import gives the set back; bad input is one
`error:` line with exit status 2 and writes nothing; a pickle that would run code is refused unrun."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from data_fixtures import Evil, write_cifar10, write_cifar100, write_image
from datadistill.cli import main
from datadistill.data import load_dataset
from datadistill.data.zca import fit_zca, whiten
from datadistill.synset import SyntheticSet
from datadistill.errors import FormatError

K, IPC = 10, 2
N = K * IPC


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data root with a tiny CIFAR-10 (10 train images per class) and CIFAR-100, in their real files."""
    r = tmp_path_factory.mktemp("data")
    write_cifar10(r / "cifar10")
    write_cifar100(r / "cifar100")
    return r


@pytest.fixture(scope="module")
def splits(root):
    return load_dataset("cifar10", root, progress=False)


@pytest.fixture(scope="module")
def zca_set(tmp_path_factory, splits):
    """A datadistill set carrying a ZCA whitening fitted on the tiny CIFAR-10: what --zca-from names."""
    zca = fit_zca(splits.train)
    path = tmp_path_factory.mktemp("zca") / "zca-run.safetensors"
    SyntheticSet(splits.train.images[:N], splits.train.labels[:N], splits.spec, zca=zca).save(path)
    return path, zca


def cli(root, capsys, *args) -> tuple[int, str, str]:
    extra = [] if args[0] == "export" else ["--data-root", str(root), "--no-progress"]
    try:
        rc = main([*map(str, args), *extra])
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def refused(root, capsys, *args) -> str:
    """Run the command; assert exit status 2 and exactly one `error:` line on stderr; return it."""
    rc, _, err = cli(root, capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def class_ordered() -> torch.Tensor:
    return torch.arange(K).repeat_interleave(IPC)


def images(seed: int = 0, shape=(N, 3, 32, 32)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def logits(seed: int = 1) -> torch.Tensor:
    return 3 * torch.randn(N, K, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ importers on their own layouts
def test_mtt_normalized_with_a_forks_learned_lr(root, tmp_path, capsys):
    x, y = images(), class_ordered()
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.0123), tmp_path / "syn_lr_best.pt")
    rc, out, err = cli(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar10", "--normalized",
                       "--out", tmp_path / "set.safetensors")
    assert rc == 0, err
    syn = SyntheticSet.load(tmp_path / "set.safetensors")
    assert torch.equal(syn.images, x) and torch.equal(syn.labels, y)
    assert syn.lr == pytest.approx(0.0123) and syn.zca is None and syn.spec.name == "cifar10"
    assert syn.meta["imported"]["format"] == "mtt" and syn.meta["imported"]["lr_file"] == "syn_lr_best.pt"
    assert "learned lr 0.0123" in err


def test_mtt_an_iteration_file_and_no_lr(root, tmp_path, capsys):
    torch.save(images(), tmp_path / "images_3000.pt")
    torch.save(class_ordered(), tmp_path / "labels_3000.pt")
    assert cli(root, capsys, "import", tmp_path / "images_3000.pt", "--format", "mtt", "--dataset", "cifar10",
               "--normalized", "--out", tmp_path / "s.safetensors")[0] == 0
    assert SyntheticSet.load(tmp_path / "s.safetensors").lr is None


def test_mtt_zca_space_images_keep_the_whitening_named(root, tmp_path, capsys, zca_set, splits):
    path, zca = zca_set
    real = splits.train.subset(torch.arange(N))
    z = whiten(real, zca).images  # what MTT saves with --zca: whitened pixels
    torch.save(z, tmp_path / "images_best.pt")
    torch.save(real.labels, tmp_path / "labels_best.pt")
    assert cli(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar10", "--zca-from", path,
               "--out", tmp_path / "s.safetensors")[0] == 0
    syn = SyntheticSet.load(tmp_path / "s.safetensors")
    assert torch.equal(syn.images, z) and torch.allclose(syn.zca["transform"], zca["transform"])
    # the set's pixels are the real images' pixels: the whitening is undone exactly
    assert torch.allclose(syn.pixels(), splits.spec.denormalize(real.images).clamp(0, 1), atol=1e-4)


def test_mtt_cifar100_is_normalized_with_cifar10_statistics(root, tmp_path, capsys):
    """The MTT code normalizes CIFAR-100 with CIFAR-10's mean/std; the import converts to CIFAR-100's."""
    spec100 = load_dataset("cifar100", root, progress=False).spec
    px = torch.rand(100, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    c10 = load_dataset("cifar10", root, progress=False).spec
    torch.save(c10.normalize(px), tmp_path / "images_best.pt")
    torch.save(torch.arange(100), tmp_path / "labels_best.pt")
    assert cli(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar100", "--normalized",
               "--out", tmp_path / "s.safetensors")[0] == 0
    syn = SyntheticSet.load(tmp_path / "s.safetensors")
    assert spec100.mean != c10.mean
    assert torch.allclose(syn.images, spec100.normalize(px), atol=1e-5)


@pytest.mark.parametrize("fmt", ["datm", "pad"])
def test_datm_and_pad_soft_logits_under_normal(root, tmp_path, capsys, fmt):
    normal = tmp_path / "run" / "Normal"
    normal.mkdir(parents=True)
    x, lg = images(), logits()
    torch.save(x, normal / "images_best.pt")
    torch.save(lg.clone().requires_grad_(True), normal / "labels_best.pt")  # saved as the learned leaf it is
    torch.save(torch.tensor(0.03), normal / "lr_best.pt")
    assert cli(root, capsys, "import", tmp_path / "run", "--format", fmt, "--dataset", "cifar10", "--normalized",
               "--out", tmp_path / "s.safetensors")[0] == 0
    syn = SyntheticSet.load(tmp_path / "s.safetensors")
    assert syn.soft and torch.allclose(syn.labels, torch.softmax(lg, 1))
    assert torch.equal(syn.images, x) and syn.lr == pytest.approx(0.03)


def test_an_lr_saved_as_a_plain_float(root, tmp_path, capsys):
    torch.save(images(), tmp_path / "images_best.pt")
    torch.save(logits(), tmp_path / "labels_best.pt")
    torch.save(0.007, tmp_path / "lr_best.pt")  # some forks save syn_lr.item()
    assert cli(root, capsys, "import", tmp_path, "--format", "datm", "--dataset", "cifar10", "--normalized",
               "--out", tmp_path / "s.safetensors")[0] == 0
    assert SyntheticSet.load(tmp_path / "s.safetensors").lr == pytest.approx(0.007)


def vico_file(path, experiments: int = 2):
    data = [[images(seed=e), class_ordered()] for e in range(experiments)]
    # the VICO code's accuracies are numpy floats (np.mean of its per-batch counts)
    torch.save({"data": data, "accs_all_exps": {"ConvNet": [np.float64(0.25 + e / 10) for e in range(experiments)]}},
               path)
    return data


def test_vico_experiments(root, tmp_path, capsys):
    f = tmp_path / "res_DM_CIFAR10_ConvNet_2ipc.pt"
    data = vico_file(f)
    rc, _, err = cli(root, capsys, "import", f, "--format", "vico", "--dataset", "cifar10", "--exp", "1",
                     "--out", tmp_path / "s.safetensors")
    assert rc == 0, err
    assert "experiment 1 of 2" in err
    syn = SyntheticSet.load(tmp_path / "s.safetensors")
    assert torch.equal(syn.images, data[1][0]) and torch.equal(syn.labels, data[1][1])
    assert syn.meta["imported"]["accs_all_exps"] == {"ConvNet": [0.25, pytest.approx(0.35)]}
    assert cli(root, capsys, "import", tmp_path, "--format", "vico", "--dataset", "cifar10",  # the folder; exp 0
               "--out", tmp_path / "s0.safetensors")[0] == 0
    assert torch.equal(SyntheticSet.load(tmp_path / "s0.safetensors").images, data[0][0])
    line = refused(root, capsys, "import", f, "--format", "vico", "--dataset", "cifar10", "--exp", "2",
                   "--out", tmp_path / "s2.safetensors")
    assert "2 experiment(s), 0..1" in line
    line = refused(root, capsys, "import", f, "--format", "vico", "--dataset", "cifar10", "--unnormalized",
                   "--out", tmp_path / "s3.safetensors")
    assert "drop --unnormalized" in line
    assert not (tmp_path / "s2.safetensors").exists() and not (tmp_path / "s3.safetensors").exists()


def test_ddranking_with_and_without_soft_labels(root, tmp_path, capsys):
    x, lg = images(), logits()
    torch.save(x, tmp_path / "images.pt")
    assert cli(root, capsys, "import", tmp_path, "--format", "ddranking", "--dataset", "cifar10", "--normalized",
               "--out", tmp_path / "hard.safetensors")[0] == 0
    hard = SyntheticSet.load(tmp_path / "hard.safetensors")
    assert not hard.soft and torch.equal(hard.labels, class_ordered()) and hard.lr is None
    torch.save(lg, tmp_path / "labels.pt")
    torch.save(torch.tensor(0.05), tmp_path / "lr.pt")
    assert cli(root, capsys, "import", tmp_path / "images.pt", "--format", "ddranking", "--dataset", "cifar10",
               "--normalized", "--out", tmp_path / "soft.safetensors")[0] == 0
    soft = SyntheticSet.load(tmp_path / "soft.safetensors")
    assert torch.allclose(soft.labels, torch.softmax(lg, 1)) and soft.lr == pytest.approx(0.05)


def test_ddranking_images_not_divisible_into_classes(root, tmp_path, capsys):
    torch.save(images(shape=(N + 1, 3, 32, 32)), tmp_path / "images.pt")
    line = refused(root, capsys, "import", tmp_path, "--format", "ddranking", "--dataset", "cifar10", "--normalized",
                   "--out", tmp_path / "s.safetensors")
    assert "21 images" in line and "10 classes" in line
    assert not (tmp_path / "s.safetensors").exists()


def png_folder(folder, names, size=32, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in names:
        for i in range(IPC):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            write_image(folder / name / f"{i}.png", a)
            arrays[(name, i)] = a
    return arrays


def test_imagefolder_by_name_index_and_index_name(root, tmp_path, capsys, splits):
    names = {"cat": 3, "CAR": 1, "00005": 5, "007_horse": 7, "0": 0}
    arrays = png_folder(tmp_path / "f", names)
    rc, _, err = cli(root, capsys, "import", tmp_path / "f", "--format", "imagefolder", "--dataset", "cifar10",
                     "--out", tmp_path / "s.safetensors")
    assert rc == 0, err
    syn = SyntheticSet.load(tmp_path / "s.safetensors")
    assert syn.labels.tolist() == sorted(c for c in names.values() for _ in range(IPC))
    want = torch.from_numpy(arrays[("cat", 1)]).permute(2, 0, 1).float() / 255
    got = syn.images[syn.labels.tolist().index(3) + 1]
    assert torch.allclose(got, splits.spec.normalize(want[None])[0], atol=1e-6)


def test_imagefolder_refuses_unknown_folders_wrong_sizes_and_zca(root, tmp_path, capsys, zca_set):
    png_folder(tmp_path / "a", ["cat", "unicorn"])
    line = refused(root, capsys, "import", tmp_path / "a", "--format", "imagefolder", "--dataset", "cifar10",
                   "--out", tmp_path / "s.safetensors")
    assert "unicorn" in line
    png_folder(tmp_path / "b", ["cat"], size=28)
    line = refused(root, capsys, "import", tmp_path / "b", "--format", "imagefolder", "--dataset", "cifar10",
                   "--out", tmp_path / "s.safetensors")
    assert "28x28" in line and "32x32" in line
    png_folder(tmp_path / "c", ["cat"])
    line = refused(root, capsys, "import", tmp_path / "c", "--format", "imagefolder", "--dataset", "cifar10",
                   "--zca-from", zca_set[0], "--out", tmp_path / "s.safetensors")
    assert "drop --zca-from" in line
    assert not (tmp_path / "s.safetensors").exists()


# ------------------------------------------------------------------ export, then import: the same set
def a_set(spec, soft: bool, lr: float | None = 0.02, zca=None) -> SyntheticSet:
    x = images(seed=5)
    if zca is None:  # in range, so that an image folder's PNG quantization is the only loss
        x = spec.normalize(torch.rand(x.shape, generator=torch.Generator().manual_seed(5)))
    hard = class_ordered()[torch.randperm(N, generator=torch.Generator().manual_seed(2))]  # IPC of each class, shuffled
    labels = torch.softmax(logits(seed=6) + 30 * torch.nn.functional.one_hot(hard, K), 1) if soft else hard
    return SyntheticSet(x, labels, spec, lr, zca, {"method": "dm", "config": {"model": "convnet"}})


@pytest.mark.parametrize("fmt, soft", [("mtt", False), ("datm", True), ("pad", True), ("ddranking", True),
                                       ("ddranking", False), ("vico", False), ("imagefolder", False)])
def test_export_then_import_gives_the_set_back(root, tmp_path, capsys, splits, fmt, soft):
    syn = a_set(splits.spec, soft, lr=None if fmt in ("vico", "imagefolder") else 0.02)
    syn.save(tmp_path / "orig.safetensors")
    rc, out, err = cli(root, capsys, "export", tmp_path / "orig.safetensors", tmp_path / "exp", "--format", fmt)
    assert rc == 0, err
    src = next((tmp_path / "exp").glob("res_*.pt")) if fmt == "vico" else tmp_path / "exp"
    if fmt == "vico":
        assert src.name == "res_dm_CIFAR10_convnet_2ipc.pt"
    rc, _, err = cli(root, capsys, "import", src, "--format", fmt, "--dataset", "cifar10",
                     "--out", tmp_path / "back.safetensors")  # no flag: the export recorded the space
    assert rc == 0, err
    back = SyntheticSet.load(tmp_path / "back.safetensors")
    if fmt == "imagefolder":  # PNG: 8-bit pixels, images regrouped by class
        order = torch.argsort(syn.labels, stable=True)
        assert torch.equal(back.labels, syn.labels[order])
        assert (back.pixels() - syn.pixels()[order]).abs().max() <= 0.5 / 255 + 1e-6
        return
    order = torch.argsort(syn.hard_labels, stable=True) if fmt == "ddranking" else torch.arange(N)
    assert torch.allclose(back.images, syn.images[order], atol=1e-6)
    assert torch.allclose(back.labels.float(), syn.labels[order].float(), atol=1e-6)
    assert back.soft == syn.soft and back.lr == (None if syn.lr is None else pytest.approx(syn.lr))


@pytest.mark.parametrize("fmt", ["mtt", "ddranking"])
def test_a_zca_set_round_trips_with_its_whitening(root, tmp_path, capsys, splits, zca_set, fmt):
    syn = a_set(splits.spec, soft=False, zca=zca_set[1])
    syn.save(tmp_path / "orig.safetensors")
    assert cli(root, capsys, "export", tmp_path / "orig.safetensors", tmp_path / "exp", "--format", fmt)[0] == 0
    note = json.loads((tmp_path / "exp" / "datadistill.json").read_text())
    assert note["images"] == "zca" and (tmp_path / "exp" / "zca.safetensors").is_file()
    assert cli(root, capsys, "import", tmp_path / "exp", "--format", fmt, "--dataset", "cifar10",
               "--out", tmp_path / "back.safetensors")[0] == 0
    back = SyntheticSet.load(tmp_path / "back.safetensors")
    order = torch.argsort(syn.labels, stable=True) if fmt == "ddranking" else torch.arange(N)
    assert torch.equal(back.images, syn.images[order]) and torch.equal(back.zca["inverse"], zca_set[1]["inverse"])


def test_vico_export_of_a_zca_set_undoes_the_whitening(root, tmp_path, capsys, splits, zca_set):
    syn = a_set(splits.spec, soft=False, zca=zca_set[1])
    syn.save(tmp_path / "orig.safetensors")
    assert cli(root, capsys, "export", tmp_path / "orig.safetensors", tmp_path / "v.pt", "--format", "vico")[0] == 0
    assert cli(root, capsys, "import", tmp_path / "v.pt", "--format", "vico", "--dataset", "cifar10",
               "--out", tmp_path / "back.safetensors")[0] == 0
    back = SyntheticSet.load(tmp_path / "back.safetensors")
    assert back.zca is None and torch.allclose(back.pixels(), syn.pixels(), atol=1e-4)


def test_export_refuses_what_the_format_cannot_hold(root, tmp_path, capsys, splits):
    a_set(splits.spec, soft=True).save(tmp_path / "soft.safetensors")
    assert "soft labels" in refused(root, capsys, "export", tmp_path / "soft.safetensors", tmp_path / "m", "--format", "mtt")
    unbalanced = SyntheticSet(images(shape=(3, 3, 32, 32)), torch.tensor([0, 0, 1]), splits.spec)
    unbalanced.save(tmp_path / "u.safetensors")
    assert "per class" in refused(root, capsys, "export", tmp_path / "u.safetensors", tmp_path / "d", "--format", "ddranking")
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()


# ------------------------------------------------------------------ refusals
WRITERS = {  # how a .pt file may hold a pickle: torch's zip format, its legacy format, a bare pickle
    "zip": (torch.save, lambda p: torch.load(p, weights_only=False)),
    "legacy": (lambda o, p: torch.save(o, p, _use_new_zipfile_serialization=False),
               lambda p: torch.load(p, weights_only=False)),
    "pickle": (lambda o, p: p.write_bytes(pickle.dumps(o)), lambda p: pickle.loads(p.read_bytes())),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_pickle_that_would_run_code_is_refused_unrun(root, tmp_path, capsys, kind):
    marker = tmp_path / "pwned"
    write, unsafe_load = WRITERS[kind]
    write(Evil(marker), tmp_path / "images_best.pt")
    torch.save(class_ordered(), tmp_path / "labels_best.pt")
    line = refused(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar10", "--normalized",
                   "--out", tmp_path / "s.safetensors")
    assert "refused" in line and "weights_only=True" in line
    assert not marker.exists() and not (tmp_path / "s.safetensors").exists()
    unsafe_load(tmp_path / "images_best.pt")  # the payload is live: a full unpickle runs it
    assert marker.exists()


def test_ambiguous_normalization_names_the_flags(root, tmp_path, capsys, zca_set):
    torch.save(images(), tmp_path / "images_best.pt")
    torch.save(class_ordered(), tmp_path / "labels_best.pt")
    line = refused(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar10",
                   "--out", tmp_path / "s.safetensors")
    assert "--normalized" in line and "--unnormalized" in line and "--zca-from" in line
    line = refused(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar10", "--normalized",
                   "--zca-from", zca_set[0], "--out", tmp_path / "s.safetensors")
    assert "not allowed with" in line  # argparse: the flags exclude each other
    line = refused(root, capsys, "import", tmp_path, "--format", "mtt", "--dataset", "cifar10", "--normalized",
                   "--exp", "1", "--out", tmp_path / "s.safetensors")
    assert "drop --exp" in line
    assert not (tmp_path / "s.safetensors").exists()


@pytest.mark.parametrize("what, fragment", [
    ("labels", "labels span 0..10"),
    ("soft", "soft labels have 5 classes"),
    ("size", "3x28x28"),
    ("channels", "1x32x32"),
])
def test_sets_that_do_not_fit_the_dataset_are_refused(root, tmp_path, capsys, what, fragment):
    x = images(shape={"size": (N, 3, 28, 28), "channels": (N, 1, 32, 32)}.get(what, (N, 3, 32, 32)))
    y = logits()[:, :5] if what == "soft" else class_ordered()
    if what == "labels":
        y = y.clone()
        y[-1] = 10
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    fmt = "datm" if what == "soft" else "mtt"
    line = refused(root, capsys, "import", tmp_path, "--format", fmt, "--dataset", "cifar10", "--normalized",
                   "--out", tmp_path / "s.safetensors")
    assert fragment in line
    assert not (tmp_path / "s.safetensors").exists()


# ------------------------------------------------------------------ evaluate reads them directly
def test_evaluate_a_published_set_directly(root, tmp_path, capsys):
    torch.save(images(), tmp_path / "images_best.pt")
    torch.save(class_ordered(), tmp_path / "labels_best.pt")
    rc, out, err = cli(root, capsys, "evaluate", tmp_path, "--format", "mtt", "--dataset", "cifar10", "--normalized",
                       "--models", "mlp", "--runs", "1", "--epochs", "1", "--aug", "none", "--device", "cpu")
    assert rc == 0, err
    assert "imported 20 images (stored normalized)" in err and "mlp" in out
    assert json.loads((tmp_path / "evaluate.json").read_text())[0]["model"] == "mlp"
    line = refused(root, capsys, "evaluate", tmp_path, "--dataset", "cifar10")
    assert "--format" in line


def test_a_published_file_given_without_format_names_the_flag(root, tmp_path, capsys):
    torch.save(images(), tmp_path / "images_best.pt")
    for target in (tmp_path / "images_best.pt", tmp_path):  # the file, and its folder (no synset.safetensors)
        line = refused(root, capsys, "evaluate", target)
        assert "--format mtt|datm|pad|ddranking|vico|imagefolder --dataset D" in line, line
        with pytest.raises(FormatError, match="--format mtt"):  # every command that reads a set: show, export...
            SyntheticSet.load(target)
    (tmp_path / "notes.safetensors").write_text("not a set")
    assert "not a readable safetensors file" in refused(root, capsys, "evaluate", tmp_path / "notes.safetensors")
