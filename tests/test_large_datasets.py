"""The loaders of issue 19 on small generated files in their exact official layouts, good and
malformed: tiny-imagenet, imagenet (and its subsets), imagenet32/64, mhist."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datadistill.data import DataError, load_dataset
from datadistill.data.imagenet import SUBSETS

from data_fixtures import (MHIST_COLUMNS, write_downsampled, write_image, write_imagenet, write_mhist,
                           write_tiny_imagenet)


def load(name, root, **kw):
    return load_dataset(name, root, download=False, progress=False, **kw)


# -- tiny-imagenet ----------------------------------------------------------------------------------
def test_tiny_imagenet_official_layout(tmp_path):
    write_tiny_imagenet(tmp_path / "tiny-imagenet")
    d = load("tiny-imagenet", tmp_path, val_fraction=0.0)
    assert d.spec.num_classes == 3 and d.spec.im_size == (64, 64) and d.spec.channels == 3
    assert d.spec.class_names[0] == "name of n01443537"  # sorted wnids, names from words.txt
    assert d.train.class_counts() == [3, 3, 3] and d.test.class_counts() == [2, 2, 2]
    # class-coloured: class c's mean pixel is near 37 c / 255 (normalized back)
    px = d.test.spec.denormalize(d.test.images[:]).mean((1, 2, 3))
    assert torch.allclose(px, (37 * d.test.labels.float() / 255), atol=0.03)
    assert (tmp_path / "tiny-imagenet" / ".cache" / "tiny-imagenet-64x64" / "manifest.json").is_file()
    small = load("tiny-imagenet", tmp_path, image_size=32)
    assert tuple(small.train.images.shape[1:]) == (3, 32, 32)


def test_tiny_imagenet_ignores_non_image_files(tmp_path):
    base = write_tiny_imagenet(tmp_path / "tiny-imagenet")
    (base / "train" / "n01443537" / "images" / "notes.txt").write_text("not an image")
    (base / "val" / "images" / ".DS_Store").write_bytes(b"\0")
    assert load("tiny-imagenet", tmp_path).train.spec.num_classes == 3


@pytest.mark.parametrize("breakage,message", [
    ("missing_row", "no row for 1 validation image"),
    ("unknown_wnid_row", "is not in"),
    ("unknown_wnid_folder", "are not in"),
    ("truncated", "cannot read image"),
    ("no_annotations", "files missing"),
])
def test_tiny_imagenet_malformed(tmp_path, breakage, message):
    base = write_tiny_imagenet(tmp_path / "tiny-imagenet")
    ann = base / "val" / "val_annotations.txt"
    if breakage == "missing_row":
        ann.write_text("\n".join(ann.read_text().splitlines()[1:]) + "\n")
    elif breakage == "unknown_wnid_row":
        ann.write_text(ann.read_text().replace("n04067472", "n00000001", 1))
    elif breakage == "unknown_wnid_folder":
        write_image(base / "train" / "n00000002" / "images" / "x.JPEG", np.zeros((64, 64, 3), np.uint8))
    elif breakage == "truncated":
        f = base / "train" / "n02124075" / "images" / "n02124075_1.JPEG"
        f.write_bytes(f.read_bytes()[:200])
    elif breakage == "no_annotations":
        ann.unlink()
    with pytest.raises(DataError, match=message) as e:
        load("tiny-imagenet", tmp_path)
    if breakage == "no_annotations":
        assert "tiny-imagenet-200/val/val_annotations.txt" in str(e.value) and "Layout:" in str(e.value)
    if breakage == "truncated":
        assert "n02124075_1.JPEG" in str(e.value)
        assert not list((base.parent / ".cache").glob("tiny-imagenet-*/manifest.json"))  # nothing half-written


# -- imagenet ---------------------------------------------------------------------------------------
WNIDS = ["n03000684", "n01440764", "n02102040"]


@pytest.mark.parametrize("flat", [False, True])
def test_imagenet_train_and_both_val_layouts(tmp_path, flat):
    write_imagenet(tmp_path / "imagenet", WNIDS, val_flat=flat)
    d = load("imagenet", tmp_path, image_size=32, val_fraction=0.0)
    assert d.spec.class_names == tuple(sorted(WNIDS)) and d.spec.im_size == (32, 32)
    assert d.train.class_counts() == [2, 2, 2] and d.test.class_counts() == [1, 1, 1]
    px = d.test.spec.denormalize(d.test.images[:]).mean((1, 2, 3))
    assert torch.allclose(px, 37 * d.test.labels.float() / 255, atol=0.02)  # the right label for each val image


def test_imagenet_sizes_and_center_crop(tmp_path):
    base = write_imagenet(tmp_path / "imagenet", WNIDS[:2])
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # a white centre band, cropped to a white square at any size
    write_image(base / "train" / "n01440764" / "wide.png", img)
    d = load("imagenet", tmp_path, image_size=64, val_fraction=0.0, storage="disk")
    idx = int(torch.nonzero(d.train.labels == 0)[-1])  # the last file of class 0: wide.png (sorted names)
    x = d.spec.denormalize(d.train.images[idx : idx + 1])
    assert x[..., 2:-2].min() > 0.95  # the centre band only (a squash to 64x64 would keep the black sides)
    with pytest.raises(DataError, match="not one of 32, 64, 128, 224"):
        load("imagenet", tmp_path, image_size=48)


def test_imagenet_flat_val_without_devkit_says_where(tmp_path):
    base = write_imagenet(tmp_path / "imagenet", WNIDS, val_flat=True)
    (base / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(DataError, match="devkit"):
        load("imagenet", tmp_path, image_size=32)


def test_imagenet_missing_folder_says_where(tmp_path):
    with pytest.raises(DataError, match=r"imagenet/train/<wnid>/\*\.JPEG"):
        load("imagenet", tmp_path)


def test_imagenet_val_folder_of_unknown_class(tmp_path):
    base = write_imagenet(tmp_path / "imagenet", WNIDS)
    write_image(base / "val" / "n09999999" / "x.JPEG", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="n09999999"):
        load("imagenet", tmp_path, image_size=32)


def test_subset_positions_and_labels(tmp_path):
    wnids = [f"n{i:08d}" for i in range(1000)]
    positions, names = SUBSETS["imagenette"]
    chosen = [wnids[i] for i in positions]
    write_imagenet(tmp_path / "imagenet", wnids, with_images=chosen, per_class=2)
    d = load("imagenette", tmp_path, image_size=32, val_fraction=0.0)
    assert d.spec.class_names == names and d.spec.num_classes == 10
    assert d.train.class_counts() == [2] * 10
    # label i is MTT's i-th position: its images carry the colour of sorted class positions[i]
    px = d.train.spec.denormalize(d.train.images[:]).mean((1, 2, 3))
    expected = torch.tensor([(37 * positions[int(y)]) % 256 / 255 for y in d.train.labels])
    assert torch.allclose(px, expected, atol=0.02)
    assert (tmp_path / "imagenet" / ".cache" / "imagenette-32x32").is_dir()


def test_subset_needs_the_1000_classes(tmp_path):
    write_imagenet(tmp_path / "imagenet", WNIDS)
    with pytest.raises(DataError, match="1000"):
        load("imagewoof", tmp_path)


# -- imagenet32 / imagenet64 --------------------------------------------------------------------------
@pytest.mark.parametrize("side", [32, 64])
def test_downsampled_npz(tmp_path, side):
    folder = write_downsampled(tmp_path / f"imagenet{side}", side=side)
    d = load(f"imagenet{side}", tmp_path, val_fraction=0.0)
    assert len(d.train) == 40 and len(d.test) == 3 and d.spec.num_classes == 1000 and d.spec.im_size == (side, side)
    npz = np.load(folder / "train_data_batch_1.npz")
    first = npz["data"][0].reshape(3, side, side)  # plane by plane
    assert int(d.train.labels[0]) == int(npz["labels"][0]) - 1  # 1-based in the file
    assert torch.allclose(d.spec.denormalize(d.train.images[:1])[0] * 255, torch.from_numpy(first).float(), atol=1e-3)


@pytest.mark.parametrize("breakage,message", [
    ("no_labels", "no 'labels' array"),
    ("zero_label", "1-based"),
    ("wrong_width", "must be uint8"),
    ("missing_batch", "train_data_batch_7.npz"),
    ("not_npz", "not a readable .npz"),
])
def test_downsampled_malformed(tmp_path, breakage, message):
    folder = write_downsampled(tmp_path / "imagenet32")
    b1 = folder / "train_data_batch_1.npz"
    if breakage == "no_labels":
        np.savez(b1, data=np.zeros((4, 3072), np.uint8), mean=np.zeros(3072))
    elif breakage == "zero_label":
        np.savez(b1, data=np.zeros((4, 3072), np.uint8), labels=[0, 1, 2, 3], mean=np.zeros(3072))
    elif breakage == "wrong_width":
        np.savez(b1, data=np.zeros((4, 12288), np.uint8), labels=[1, 1, 2, 3], mean=np.zeros(3072))
    elif breakage == "missing_batch":
        (folder / "train_data_batch_7.npz").unlink()
    elif breakage == "not_npz":
        b1.write_bytes(b"garbage")
    with pytest.raises(DataError, match=message):
        load("imagenet32", tmp_path)


# -- mhist ------------------------------------------------------------------------------------------
def test_mhist_layout_and_agreement(tmp_path):
    write_mhist(tmp_path / "mhist", size=32)
    d = load("mhist", tmp_path, val_fraction=0.0)
    assert d.spec.class_names == ("HP", "SSA") and d.spec.im_size == (224, 224)  # the originals' size
    assert len(d.train) == 6 and len(d.test) == 4
    assert d.train.extra["ssa_votes"].tolist() == [0, 1, 2, 3, 4, 5]
    assert d.test.extra["ssa_votes"].tolist() == [6, 7, 0, 1]
    assert torch.equal(d.train.labels, (d.train.extra["ssa_votes"] >= 4).long())
    # statistics: the training split's own, so its normalized images have mean 0 per channel
    assert d.train.images[:].mean((0, 2, 3)).abs().max() < 1e-4
    disk = load("mhist", tmp_path, val_fraction=0.3, storage="disk")
    mem = load("mhist", tmp_path, val_fraction=0.3, storage="memory")
    assert torch.equal(disk.val.extra["ssa_votes"], mem.val.extra["ssa_votes"])
    assert torch.equal(disk.val.images[:], mem.val.images)
    assert tuple(load("mhist", tmp_path, image_size=16).train.images.shape[1:]) == (3, 16, 16)


@pytest.mark.parametrize("breakage,message", [
    ("missing_column", "missing column"),
    ("missing_image", "is not in"),
    ("orphan_image", "no row for 1 image"),
    ("bad_label", "is not HP or SSA"),
    ("bad_partition", "is not train or test"),
])
def test_mhist_malformed(tmp_path, breakage, message):
    cols = MHIST_COLUMNS[:2] + MHIST_COLUMNS[3:] if breakage == "missing_column" else MHIST_COLUMNS
    folder = write_mhist(tmp_path / "mhist", size=16, columns=cols)
    csv = folder / "annotations.csv"
    if breakage == "missing_image":
        (folder / "images" / "MHIST_002.png").unlink()
    elif breakage == "orphan_image":
        write_image(folder / "images" / "extra.png", np.zeros((16, 16, 3), np.uint8))
    elif breakage == "bad_label":
        csv.write_text(csv.read_text().replace(",HP,", ",XX,", 1))
    elif breakage == "bad_partition":
        csv.write_text(csv.read_text().replace(",train", ",dev", 1))
    (folder / "images" / "readme.txt").write_text("skipped")  # non-image files are not an error
    with pytest.raises(DataError, match=message) as e:
        load("mhist", tmp_path)
    assert str(folder) in str(e.value)


def test_dm_distils_a_generated_mhist_folder_out_of_core(tmp_path, monkeypatch):
    """The command line end to end on MHIST's layout: the store is built, DM reads its class batches
    from it (--out-of-core), the set is evaluated on the test split read from it."""
    import json

    from datadistill.cli import main

    write_mhist(tmp_path / "mhist", train=8, test=4, size=16)
    out = tmp_path / "run"
    rc = main(["distill", "--method", "dm", "--dataset", "mhist", "--data-root", str(tmp_path), "--image-size", "16",
               "--out-of-core", "--ipc", "1", "--iterations", "2", "--batch-real", "3", "--model-arg", "width=4",
               "--eval-runs", "1", "--eval-epochs", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    config = (out / "config.yaml").read_text()
    assert "storage: disk" in config and "convnet_depth: 3" in config
    assert (tmp_path / "mhist" / ".cache" / "mhist-16x16" / "manifest.json").is_file()
    assert json.loads((out / "eval.json").read_text())
