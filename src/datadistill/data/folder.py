"""``folder:PATH``: an ImageFolder of PNG / JPEG files, one sub-folder per class.

Layout: ``PATH/<class>/<image>`` (sorted sub-folder names are the class names, extensions
``.png``, ``.jpg``, ``.jpeg`` in any case; hidden files and other files are ignored). If
``PATH/train/`` and ``PATH/test/`` both exist they are the two splits (each laid out as above);
otherwise :data:`TEST_FRACTION` (20%) of each class is held out as the test split, drawn with the
fixed seed :data:`TEST_SPLIT_SEED` (same folder -> same split).

Images are greyscale (1 channel) if every image is mode ``L`` (or bilevel ``1``), else RGB
(3 channels); all are resized with Pillow's bilinear filter to ``image_size`` or, if that is
None, to the size of the first training image (first file of the first class).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError
from .raw import RawSplits, stratified_split

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
GREY_MODES = frozenset({"L", "1"})
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


def _class_dirs(root: Path) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>.png)")
    return names


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataError(f"{class_dir}: class folder holds no PNG/JPEG images")
    return files


def _scan(root: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """Files and labels of ``root/<class>/`` for the classes found under ``root``."""
    files: list[Path] = []
    labels: list[int] = []
    for name in _class_dirs(root):
        if name not in class_names:
            raise DataError(f"{root / name}: class {name!r} is not among the training classes {class_names}")
        found = _image_files(root / name)
        files += found
        labels += [class_names.index(name)] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (width, height) of an image, reading only its header."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception as e:  # noqa: BLE001 (untrusted file)
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def _read(path: Path, grey: bool, size_wh: tuple[int, int]) -> np.ndarray:
    """One image as uint8 (C, H, W), converted and resized."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            im = im.convert("L" if grey else "RGB")
            if im.size != size_wh:
                im = im.resize(size_wh, Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 (untrusted file)
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    return arr[None] if grey else arr.transpose(2, 0, 1)


def _stack(files: list[Path], grey: bool, size_wh: tuple[int, int]) -> np.ndarray:
    c = 1 if grey else 3
    out = np.empty((len(files), c, size_wh[1], size_wh[0]), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = _read(f, grey, size_wh)
    return out


def load_image_folder(path: str | Path, image_size: tuple[int, int] | None = None) -> RawSplits:
    """Read an ImageFolder (see the module docstring); ``image_size`` is (H, W) or None."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (folder:PATH needs PATH/<class>/<image>.png)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_names = _class_dirs(root / "train")
        train_files, train_labels = _scan(root / "train", class_names)
        test_files, test_labels = _scan(root / "test", class_names)
    else:
        class_names = _class_dirs(root)
        files, labels = _scan(root, class_names)
        keep, held = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
        train_files, train_labels = [files[i] for i in keep], labels[keep]
        test_files, test_labels = [files[i] for i in held], labels[held]
    if not len(test_files):
        raise DataError(
            f"{root}: no test images: each class needs at least 2 images (one is held out for the test split), "
            f"or give {root}/train/<class>/ and {root}/test/<class>/ folders"
        )
    headers = [_header(f) for f in train_files + test_files]
    grey = all(mode in GREY_MODES for mode, _ in headers)
    size_wh = (int(image_size[1]), int(image_size[0])) if image_size else headers[0][1]
    return RawSplits(
        _stack(train_files, grey, size_wh), train_labels,
        _stack(test_files, grey, size_wh), test_labels,
        tuple(class_names),
    )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) in [0, 1] (a zero std becomes 1)."""
    means, stds = [], []
    for c in range(images.shape[1]):
        v = images[:, c].astype(np.float64) / 255.0
        m, s = (float(v.mean()), float(v.std())) if v.size else (0.0, 1.0)
        means.append(m)
        stds.append(s if s > 1e-8 else 1.0)
    return tuple(means), tuple(stds)
