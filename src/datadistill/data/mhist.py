"""MHIST (Wei et al. 2021, "A Petri Dish for Histopathology Image Analysis"): 3,152 colorectal polyp
images, 224x224, hyperplastic polyp (HP) or sessile serrated adenoma (SSA), read into the
out-of-core store (`store.py`).

Layout (``<root>/mhist/``, as the dataset is distributed after the request form at
bmirds.github.io/MHIST)::

    images/*.png
    annotations.csv       columns "Image Name", "Majority Vote Label" (HP or SSA),
                          "Number of Annotators who Selected SSA (Out of 7)", "Partition" (train or test)

Classes: 0 HP, 1 SSA. The annotators' vote is kept per image as the extra ``ssa_votes`` (0..7) of
each split (``ImageData.extra``), so results can be split by agreement (``max(v, 7 - v)`` of 7).
``--image-size`` resizes at decoding. Normalization: the training split's own per-channel mean and
standard deviation (computed when the cache is built). Rows naming a missing image, images without
a row, unknown labels or partitions, and a missing column are errors naming the file; non-PNG
files in images/ are skipped.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import DataError
from .scan import Scan, SplitScan, image_parts
from .unit import DatasetInfo, register_dataset

CSV_FILE = "annotations.csv"
COL_NAME = "Image Name"
COL_LABEL = "Majority Vote Label"
COL_VOTES = "Number of Annotators who Selected SSA (Out of 7)"
COL_PART = "Partition"
CLASSES = ("HP", "SSA")
NATIVE = 224


def scan_mhist(folder: Path, size: int | None = None) -> Scan:
    folder = Path(folder)
    path = folder / CSV_FILE
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in (COL_NAME, COL_LABEL, COL_VOTES, COL_PART) if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} (has "
                                f"{', '.join(repr(h) for h in header)}); use MHIST's annotations.csv unchanged")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    images = folder / "images"
    present = {p.name for p in images.iterdir() if p.is_file() and p.suffix.lower() == ".png"} if images.is_dir() else set()
    splits: dict[str, tuple[list[Path], list[int], list[int]]] = {"train": ([], [], []), "test": ([], [], [])}
    named = set()
    for n, r in enumerate(rows, 2):
        name, label, part = r[COL_NAME], r[COL_LABEL], r[COL_PART].lower()
        if label not in CLASSES:
            raise DataError(f"{path}:{n}: label {label!r} is not HP or SSA")
        if part not in splits:
            raise DataError(f"{path}:{n}: partition {r[COL_PART]!r} is not train or test")
        try:
            votes = int(r[COL_VOTES])
        except ValueError:
            votes = -1
        if not 0 <= votes <= 7:
            raise DataError(f"{path}:{n}: {COL_VOTES!r} must be 0..7, got {r[COL_VOTES]!r}")
        if name not in present:
            raise DataError(f"{path}:{n}: image {name!r} is not in {images}; put MHIST's images/*.png there")
        named.add(name)
        files, labels, agree = splits[part]
        files.append(images / name)
        labels.append(CLASSES.index(label))
        agree.append(votes)
    orphans = sorted(present - named)
    if orphans:
        raise DataError(f"{path}: no row for {len(orphans)} image(s) of {images} ({', '.join(orphans[:3])}); "
                        "every image needs its row")
    side = size or NATIVE

    def split(key: str) -> SplitScan:
        files, labels, votes = splits[key]
        return SplitScan(image_parts(files, side), labels, {"ssa_votes": np.asarray(votes, dtype=np.int64)})

    every = splits["train"][0] + splits["test"][0]
    return Scan(split("train"), split("test"), CLASSES, (3, side, side), [path, *every])


register_dataset(DatasetInfo(
    "mhist", "MHIST colorectal polyps, 2,175 train / 977 test, 3x224x224, 2 classes (HP, SSA), annotator votes kept",
    3, (NATIVE, NATIVE), (), (), (CSV_FILE, "images/"), None, scan=scan_mhist,
    layout="<root>/mhist/images/*.png and <root>/mhist/annotations.csv (request the files at bmirds.github.io/MHIST)",
))
