
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from datadistill.data import DatasetSpec
from datadistill.errors import FormatError
from datadistill.synset import SyntheticSet

SPEC = DatasetSpec("toy", 3, (4, 5), 2, ("cat", "dog/wolf"), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))


def make(soft=False, lr=None, zca=None):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 4, 5, generator=g)
    labels = torch.softmax(torch.randn(4, 2, generator=g), 1) if soft else torch.tensor([0, 0, 1, 1])
    return SyntheticSet(images, labels, SPEC, lr=lr, zca=zca, meta={"method": "dm", "ipc": 2, "config": {"a": [1, 2]}})


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip_is_exact(tmp_path, soft):
    zca = {"mean": torch.randn(60), "transform": torch.eye(60) * 2, "inverse": torch.eye(60) / 2}
    syn = make(soft=soft, lr=0.0123, zca=zca)
    syn.save(tmp_path / "s.safetensors")
    back = SyntheticSet.load(tmp_path / "s.safetensors")
    assert torch.equal(back.images, syn.images) and torch.equal(back.labels, syn.labels)
    assert back.labels.dtype == syn.labels.dtype
    assert back.lr == pytest.approx(0.0123) and back.spec == SPEC
    assert back.meta["config"] == {"a": [1, 2]} and "package_version" in back.meta
    assert all(torch.equal(back.zca[k], zca[k]) for k in zca)
    assert back.soft == soft and back.ipc == 2


def test_refuses_foreign_and_corrupt_files(tmp_path):
    save_file({"images": torch.zeros(1, 3, 4, 5)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FormatError, match="not a datadistill synthetic set"):
        SyntheticSet.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(FormatError, match="not a readable safetensors"):
        SyntheticSet.load(tmp_path / "junk.safetensors")
    with pytest.raises(FormatError, match="no such file"):
        SyntheticSet.load(tmp_path / "missing.safetensors")


def test_pixels_undo_normalization_and_zca():
    px = torch.rand(4, 3, 4, 5)
    norm = SPEC.normalize(px)
    syn = SyntheticSet(norm, torch.tensor([0, 0, 1, 1]), SPEC)
    assert torch.allclose(syn.pixels(), px, atol=1e-6)
    # whiten with a known invertible transform; pixels() must undo it first
    d = 60
    A = torch.eye(d) * 3.0
    mean = norm.reshape(4, -1).mean(0)
    white = ((norm.reshape(4, -1) - mean) @ A.T).reshape(norm.shape)
    syn = SyntheticSet(white, torch.tensor([0, 0, 1, 1]), SPEC, zca={"mean": mean, "transform": A, "inverse": torch.eye(d) / 3.0})
    assert torch.allclose(syn.pixels(), px, atol=1e-5)


def test_grid_and_imagefolder_export(tmp_path):
    px = torch.rand(4, 3, 4, 5)
    syn = SyntheticSet(SPEC.normalize(px), torch.tensor([0, 1, 0, 1]), SPEC)
    arr = syn.grid_array(pad=1)
    assert arr.shape == (2 * 5 + 1, 2 * 6 + 1, 3)
    # class 1 row, second column is image 3
    expected = (px[3] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(arr[1 + 5 : 1 + 5 + 4, 1 + 6 : 1 + 6 + 5], expected)
    syn.save_grid(tmp_path / "g.png", pad=1)
    assert Image.open(tmp_path / "g.png").size == (arr.shape[1], arr.shape[0])
    out = syn.export_imagefolder(tmp_path / "export")
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["000_cat", "001_dog_wolf"]
    img = np.asarray(Image.open(out / "001_dog_wolf" / "0001.png"))
    assert np.array_equal(img, expected)


def test_shape_checks():
    with pytest.raises(FormatError):
        SyntheticSet(torch.zeros(3, 4, 5), torch.zeros(3, dtype=torch.long), SPEC)
    with pytest.raises(FormatError):
        SyntheticSet(torch.zeros(2, 3, 4, 5), torch.zeros(3, dtype=torch.long), SPEC)
    with pytest.raises(FormatError, match=r"soft 'labels' must be \(2, 2\)"):
        SyntheticSet(torch.zeros(2, 3, 4, 5), torch.zeros(2, 5), SPEC)
    with pytest.raises(FormatError, match="integer classes or"):  # 2-D labels that are not floats
        SyntheticSet(torch.zeros(2, 3, 4, 5), torch.zeros(2, 2, dtype=torch.long), SPEC)
    with pytest.raises(FormatError, match="'region_labels' must be floats of shape"):
        SyntheticSet(torch.zeros(2, 3, 4, 5), torch.zeros(2, dtype=torch.long), SPEC, region_labels=torch.zeros(2, 4, 3))



def test_a_set_whose_images_or_labels_do_not_fit_its_dataset_is_refused_when_made():
    x, y = torch.zeros(3, 3, 4, 5), torch.tensor([0, 1, 1])  # SPEC: 3 channels, 4x5, 2 classes
    SyntheticSet(x, y, SPEC)
    with pytest.raises(FormatError, match=r"classes 0\.\.1, found 0\.\.9"):
        SyntheticSet(x, torch.tensor([0, 1, 9]), SPEC)
    with pytest.raises(FormatError, match="found -1"):
        SyntheticSet(x, torch.tensor([-1, 1, 1]), SPEC)
    with pytest.raises(FormatError, match="integer classes"):
        SyntheticSet(x, torch.tensor([0.0, 1.0, 1.0]), SPEC)
    with pytest.raises(FormatError, match="'images' have 1 channels, the dataset's have 3"):
        SyntheticSet(torch.zeros(3, 1, 4, 5), y, SPEC)
    with pytest.raises(FormatError, match="'images' are 5x4, the dataset's image size is 4x5"):
        SyntheticSet(torch.zeros(3, 3, 5, 4), y, SPEC)
