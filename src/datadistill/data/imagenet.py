"""Tiny-ImageNet, ImageNet-1K (ILSVRC2012) and the ImageNet subsets of the trajectory-matching
papers, read from their official folder layouts into the out-of-core store (`store.py`).

``tiny-imagenet`` (``<root>/tiny-imagenet/tiny-imagenet-200/``, the official zip extracted)::

    wnids.txt                         the 200 class wnids, one per line
    words.txt                         wnid <tab> names (optional: class names; else the wnids)
    train/<wnid>/images/*.JPEG        500 per class, 64x64
    val/images/*.JPEG                 10,000 images, labelled by
    val/val_annotations.txt           <file> <tab> <wnid> <tab> x0 y0 x1 y1  (one row per image)

The classes are the wnids sorted (the order an ImageFolder gives them, as in the MTT code); the
official validation split is the test split (the official test split has no labels).

``imagenet`` (``<root>/imagenet/``)::

    train/<wnid>/*.JPEG               the 1000 class folders of ILSVRC2012_img_train
    val/<wnid>/*.JPEG                 the validation images in class folders, or flat:
    val/*.JPEG + ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt and meta.mat

Every image is decoded to RGB, its shorter side resized (bilinear) to ``--image-size`` (32, 64,
128 or 224; default 64) and center-cropped to a square.

The subsets (``imagenette``, ``imagewoof``, ``imagefruit``, ``imageyellow``, ``imagemeow``,
``imagesquawk``; ten classes each, 128x128 by default) are read from the same ``<root>/imagenet/``
folder: as in the MTT code (``Config`` of utils.py in github.com/GeorgeCazenavette/mtt-distillation),
each is ten positions in the sorted list of the 1000 training class folders, label i being the
i-th position of the list. Non-image files are skipped; a file with an image extension that does
not decode (a truncated JPEG) stops the cache build with its path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError
from .download import Source
from .scan import Scan, SplitScan, image_parts
from .unit import DatasetInfo, register_dataset

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics the MTT code uses for Tiny-ImageNet and ImageNet
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_DIR = "tiny-imagenet-200"
IMAGENET_SIZES = (32, 64, 128, 224)
DEVKIT = "ILSVRC2012_devkit_t12/data"
VAL_TRUTH = f"{DEVKIT}/ILSVRC2012_validation_ground_truth.txt"
META = f"{DEVKIT}/meta.mat"
NUM_IMAGENET_CLASSES = 1000

# name -> (positions in the sorted 1000 ImageNet wnids, class names), from the MTT code's Config
SUBSETS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "imagenette": ((0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
                   ("tench", "english_springer", "cassette_player", "chain_saw", "church", "french_horn",
                    "garbage_truck", "gas_pump", "golf_ball", "parachute")),
    "imagewoof": ((193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
                  ("australian_terrier", "border_terrier", "samoyed", "beagle", "shih-tzu", "english_foxhound",
                   "rhodesian_ridgeback", "dingo", "golden_retriever", "english_sheepdog")),
    "imagefruit": ((953, 954, 949, 950, 951, 957, 952, 945, 943, 948),
                   ("pineapple", "banana", "strawberry", "orange", "lemon", "pomegranate", "fig", "bell_pepper",
                    "cucumber", "green_apple")),
    "imageyellow": ((309, 986, 954, 951, 987, 779, 599, 291, 72, 11),
                    ("bee", "ladys_slipper", "banana", "lemon", "corn", "school_bus", "honeycomb", "lion",
                     "garden_spider", "goldfinch")),
    "imagemeow": ((281, 282, 283, 284, 285, 291, 292, 290, 289, 287),
                  ("tabby_cat", "bengal_cat", "persian_cat", "siamese_cat", "egyptian_cat", "lion", "tiger",
                   "jaguar", "snow_leopard", "lynx")),
    "imagesquawk": ((84, 130, 88, 144, 145, 22, 96, 9, 100, 89),
                    ("peacock", "flamingo", "macaw", "pelican", "king_penguin", "bald_eagle", "toucan", "ostrich",
                     "black_swan", "cockatoo")),
}


def _images_in(folder: Path) -> list[Path]:
    """Image files of `folder` (sorted; hidden and non-image files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e


# -- Tiny-ImageNet ----------------------------------------------------------------------------------
def scan_tiny(folder: Path, size: int | None = None) -> Scan:
    base = Path(folder) / TINY_DIR
    wnids = sorted({w.strip() for w in _read_lines(base / "wnids.txt") if w.strip()})
    if not wnids:
        raise DataError(f"{base / 'wnids.txt'}: no wnids; it must list the 200 class wnids, one per line")
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (base / "words.txt").is_file():
        for line in _read_lines(base / "words.txt"):
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.split(",")[0].strip()
    train_dir = base / "train"
    found = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if train_dir.is_dir() else []
    unknown = [w for w in found if w not in index]
    if unknown:
        raise DataError(f"{train_dir}: class folder(s) {', '.join(unknown[:5])} are not in {base / 'wnids.txt'}; "
                        "use the official tiny-imagenet-200 folder unchanged")
    files, labels = [], []
    for w in wnids:
        d = train_dir / w / "images"
        if not d.is_dir():
            raise DataError(f"{d}: missing; Tiny-ImageNet's training images go in {train_dir}/<wnid>/images/*.JPEG")
        imgs = _images_in(d)
        if not imgs:
            raise DataError(f"{d}: holds no JPEG images")
        files += imgs
        labels += [index[w]] * len(imgs)
    ann_path = base / "val" / "val_annotations.txt"
    annotations = {}
    for n, line in enumerate(_read_lines(ann_path), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(f"{ann_path}:{n}: expected <file> <tab> <wnid> ..., got {line[:60]!r}")
        name, wnid = cols[0].strip(), cols[1].strip()
        if wnid not in index:
            raise DataError(f"{ann_path}:{n}: wnid {wnid!r} is not in {base / 'wnids.txt'}")
        annotations[name] = index[wnid]
    val_files = _images_in(base / "val" / "images")
    missing = [f.name for f in val_files if f.name not in annotations]
    if missing:
        raise DataError(f"{ann_path}: no row for {len(missing)} validation image(s) ({', '.join(missing[:3])}); "
                        "every file of val/images/ needs its row (the official file has 10,000)")
    val_labels = [annotations[f.name] for f in val_files]
    side = size or 64  # the official images are all 64x64; another file is resized
    return Scan(SplitScan(image_parts(files, side), labels), SplitScan(image_parts(val_files, side), val_labels),
                tuple(words.get(w) or w for w in wnids), (3, side, side),
                [base / "wnids.txt", ann_path, *files, *val_files])


# -- ImageNet-1K ------------------------------------------------------------------------------------
def _train_classes(base: Path) -> list[str]:
    train = base / "train"
    if not train.is_dir():
        raise DataError(f"{train}: missing; ImageNet's training images go in {train}/<wnid>/*.JPEG "
                        "(ILSVRC2012_img_train.tar, each class tar extracted into its wnid folder)")
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not wnids:
        raise DataError(f"{train}: no class folders (expected {train}/<wnid>/*.JPEG)")
    return wnids


def _val_ground_truth(base: Path, wnids: list[str]) -> dict[str, str]:
    """Flat validation folder: file name -> wnid, from the devkit's ground truth and meta.mat."""
    import scipy.io  # noqa: PLC0415

    truth, meta = base / VAL_TRUTH, base / META
    for p in (truth, meta):
        if not p.is_file():
            raise DataError(f"{p}: missing; a flat {base / 'val'} needs the devkit (ILSVRC2012_devkit_t12.tar.gz "
                            f"extracted in {base}), or put the validation images in {base}/val/<wnid>/ folders")
    try:
        synsets = scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except Exception as e:  # noqa: BLE001 (untrusted file)
        raise DataError(f"{meta}: not the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID and WNID): "
                        f"{type(e).__name__}: {e}") from e
    out = {}
    for n, line in enumerate(_read_lines(truth), 1):
        if not line.strip():
            continue
        try:
            wnid = id_to_wnid[int(line)]
        except (ValueError, KeyError):
            raise DataError(f"{truth}:{n}: {line.strip()!r} is not an ILSVRC2012_ID of {meta}") from None
        out[f"ILSVRC2012_val_{n:08d}"] = wnid
    return out


def _val_split(base: Path, wnids: list[str], keep: dict[str, int]) -> tuple[list[Path], list[int]]:
    """Validation files and labels for the classes in `keep` (wnid -> label)."""
    val = base / "val"
    if not val.is_dir():
        raise DataError(f"{val}: missing; put the ILSVRC2012 validation images there, in <wnid>/ folders or flat "
                        "with the devkit")
    known = set(wnids)
    dirs = sorted(p.name for p in val.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    if dirs:
        unknown = [d for d in dirs if d not in known]
        if unknown:
            raise DataError(f"{val}: class folder(s) {', '.join(unknown[:5])} are not training classes of {base / 'train'}")
        for w in dirs:
            if w in keep:
                imgs = _images_in(val / w)
                files += imgs
                labels += [keep[w]] * len(imgs)
        return files, labels
    truth = _val_ground_truth(base, wnids)
    for f in _images_in(val):
        wnid = truth.get(f.stem)
        if wnid is None:
            raise DataError(f"{f}: no row in {base / VAL_TRUTH} (rows are numbered as the files "
                            "ILSVRC2012_val_00000001.JPEG ...)")
        if wnid not in known:
            raise DataError(f"{f}: its class {wnid} has no folder in {base / 'train'}")
        if wnid in keep:
            files.append(f)
            labels.append(keep[wnid])
    return files, labels


def _scan_classes(base: Path, chosen: list[str], names: tuple[str, ...], wnids: list[str], size: int) -> Scan:
    keep = {w: i for i, w in enumerate(chosen)}
    files: list[Path] = []
    labels: list[int] = []
    for w in chosen:
        imgs = _images_in(base / "train" / w)
        if not imgs:
            raise DataError(f"{base / 'train' / w}: holds no JPEG images")
        files += imgs
        labels += [keep[w]] * len(imgs)
    val_files, val_labels = _val_split(base, wnids, keep)
    if not val_files:
        raise DataError(f"{base / 'val'}: no validation images of these classes")
    sources = [*files, *val_files] + [base / p for p in (VAL_TRUTH, META) if (base / p).is_file()]
    return Scan(SplitScan(image_parts(files, size), labels), SplitScan(image_parts(val_files, size), val_labels),
                names, (3, size, size), sources)


def scan_imagenet(folder: Path, size: int | None = None) -> Scan:
    base = Path(folder)
    wnids = _train_classes(base)
    return _scan_classes(base, wnids, tuple(wnids), wnids, size or 64)


def subset_scanner(name: str):
    positions, names = SUBSETS[name]

    def scan(folder: Path, size: int | None = None) -> Scan:
        base = Path(folder)
        wnids = _train_classes(base)
        if len(wnids) != NUM_IMAGENET_CLASSES:
            raise DataError(
                f"{base / 'train'}: {len(wnids)} class folders; {name} is ten positions in the sorted list of the "
                f"{NUM_IMAGENET_CLASSES} ImageNet-1K training classes (as in the MTT code), so the folder must hold "
                "all of them"
            )
        return _scan_classes(base, [wnids[i] for i in positions], names, wnids, size or 128)

    return scan


# -- the datasets in these layouts --------------------------------------------------------------------
TINY_LAYOUT = (f"<root>/tiny-imagenet/{TINY_DIR}/ with wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
               "val/images/*.JPEG and val/val_annotations.txt (the official zip extracted)")
IMAGENET_LAYOUT = ("<root>/imagenet/train/<wnid>/*.JPEG (ILSVRC2012 training classes) and <root>/imagenet/val/ "
                   "as <wnid>/ folders or flat with ILSVRC2012_devkit_t12/ beside it; register at image-net.org")

register_dataset(DatasetInfo(
    "tiny-imagenet", "Tiny-ImageNet, 100,000 train / 10,000 val (used as test), 3x64x64, 200 classes",
    3, (64, 64), IMAGENET_MEAN, IMAGENET_STD,
    (f"{TINY_DIR}/wnids.txt", f"{TINY_DIR}/val/val_annotations.txt"), None,
    Source("http://cs231n.stanford.edu/", {"tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de"}, archive=True),
    aliases=("tiny", "tinyimagenet", "tiny_imagenet"), scan=scan_tiny, layout=TINY_LAYOUT,
))
register_dataset(DatasetInfo(
    "imagenet", "ImageNet-1K (ILSVRC2012), 1,281,167 train / 50,000 val (used as test), 1000 classes; "
    "--image-size 32/64/128/224 (default 64), shorter side resized and center-cropped",
    3, (64, 64), IMAGENET_MEAN, IMAGENET_STD, ("train/", "val/"), None,
    aliases=("imagenet-1k", "imagenet1k", "ilsvrc2012"), scan=scan_imagenet, layout=IMAGENET_LAYOUT,
    sizes=IMAGENET_SIZES,
))
for _name, (_pos, _names) in SUBSETS.items():
    register_dataset(DatasetInfo(
        _name, f"ImageNet subset of the MTT paper, 10 classes ({', '.join(_names[:3])}, ...), 3x128x128, read "
        "from the imagenet folder", 3, (128, 128), IMAGENET_MEAN, IMAGENET_STD, ("train/", "val/"), None,
        scan=subset_scanner(_name), layout=IMAGENET_LAYOUT, folder="imagenet", sizes=IMAGENET_SIZES,
    ))
