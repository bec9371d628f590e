"""Reading and writing the pieces of a published set: pickled ``.pt`` files (tensors and plain
containers only), the checks every importer applies to images, labels and a learning rate, and the
small ``datadistill.json`` note an export leaves beside foreign-format files.

Safety: a ``.pt`` file is read with ``torch.load(weights_only=True)`` and nothing else. The only
globals allowed beyond torch's own list are numpy's numeric scalar and dtype (the VICO code stores
its accuracies as numpy floats); anything else a pickle asks for - a class to build, a function to
call - is refused before it runs.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..data.base import DatasetSpec
from ..errors import FormatError, OutputError
from ..fileio import atomic_path, file_head, is_torch_file, write_json

NOTE_FILE = "datadistill.json"  # written by an export: how the images are stored, for the way back


def _numpy_number_globals() -> list:
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar")]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
                if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]
    return allowed


def load_pt(path: str | os.PathLike):
    """The object in a torch file, unpickled with ``weights_only=True`` (see the module docstring).
    A file that is no torch file (neither torch's zip archive nor a pickle) is a FormatError that
    says so; a pickle that names code (a class, a function) is refused, unrun."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    if not is_torch_file(path):
        head = file_head(path, 4)
        what = f"starts with {head!r}" if head else "is empty"
        raise FormatError(f"{path}: not a torch file (torch.save writes a zip archive or a pickle; this file {what})")
    try:
        with torch.serialization.safe_globals(_numpy_number_globals()), warnings.catch_warnings():
            # torch warns about a bare pickle of protocol 4 or 5 before refusing its opcodes: the error
            # below says it, in the one line a refusal prints
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines()]
        asked = [ln for ln in lines if "GLOBAL" in ln]  # a pickle that names code
        why = (f"unpickling it needs code beyond tensors and plain containers ({asked[0]})" if asked else
               f"the safe unpickler cannot read it ({next((ln for ln in lines if 'Unsupported' in ln), type(e).__name__)})")
        raise FormatError(f"{path}: refused: {why}; datadistill reads .pt files with torch.load(weights_only=True) "
                          f"only, which never runs code") from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes torch raise is one FormatError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"{path}: not a readable torch file ({first})") from None


def save_pt(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def images_tensor(x, spec: DatasetSpec, path: Path) -> torch.Tensor:
    """`x` checked as float images (N, C, H, W) of the dataset's channels and size, as float32."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise FormatError(f"{path}: expected a float image tensor, found {_kind(x)}")
    if x.ndim != 4:
        raise FormatError(f"{path}: images must be (N, C, H, W), found shape {tuple(x.shape)}")
    want = (spec.channels, *spec.im_size)
    if tuple(x.shape[1:]) != want:
        raise FormatError(f"{path}: images are {'x'.join(map(str, x.shape[1:]))} (C x H x W) but {spec.name} images "
                          f"are {'x'.join(map(str, want))}; give the dataset the set was distilled from")
    if x.shape[0] == 0:
        raise FormatError(f"{path}: holds no images")
    if not torch.isfinite(x).all():
        raise FormatError(f"{path}: images hold NaN or infinite values")
    return x.detach().float().contiguous()


def hard_labels(y, n: int, spec: DatasetSpec, path: Path) -> torch.Tensor:
    """`y` checked as n integer class labels in [0, K)."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise FormatError(f"{path}: expected an integer label tensor, found {_kind(y)}")
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or y.shape[0] != n:
        raise FormatError(f"{path}: {n} images but labels of shape {tuple(y.shape)}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= spec.num_classes:
        raise FormatError(f"{path}: labels span {lo}..{hi} but {spec.name} has {spec.num_classes} classes "
                          f"(0..{spec.num_classes - 1})")
    return y.long().contiguous()


def soft_labels_from_logits(y, n: int, spec: DatasetSpec, path: Path) -> torch.Tensor:
    """`y` checked as (n, K) label logits; returned as softmax probabilities (the set stores those)."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise FormatError(f"{path}: expected float soft labels (N, K), found {_kind(y)}")
    if y.ndim != 2 or y.shape[0] != n:
        raise FormatError(f"{path}: {n} images but soft labels of shape {tuple(y.shape)}")
    if y.shape[1] != spec.num_classes:
        raise FormatError(f"{path}: soft labels have {y.shape[1]} classes but {spec.name} has {spec.num_classes}")
    if not torch.isfinite(y).all():
        raise FormatError(f"{path}: soft labels hold NaN or infinite values")
    return torch.softmax(y.detach().float(), dim=1).contiguous()


def logits_of(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is `probs` (log-probabilities; a zero becomes log 1e-30)."""
    return probs.detach().float().cpu().clamp_min(1e-30).log().contiguous()


def class_ordered_labels(n: int, spec: DatasetSpec, path: Path) -> torch.Tensor:
    """The labels a class-ordered tensor implies: n / K images of class 0, then of class 1, ..."""
    k = spec.num_classes
    if n % k:
        raise FormatError(f"{path}: {n} images cannot be {k} classes of equal size in class order "
                          f"({spec.name} has {k} classes)")
    return torch.arange(k).repeat_interleave(n // k)


def learning_rate(obj, path: Path) -> float:
    """A learned learning rate saved as a one-element tensor or a plain number."""
    if isinstance(obj, torch.Tensor) and obj.numel() == 1 and obj.is_floating_point():
        v = float(obj.detach().reshape(()))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        v = float(obj)
    else:
        raise FormatError(f"{path}: expected a learning rate (a number or a one-element float tensor), found {_kind(obj)}")
    if not math.isfinite(v) or v <= 0:
        raise FormatError(f"{path}: learning rate {v} is not a positive number")
    return v


def read_note(folder: Path) -> dict | None:
    """The note a datadistill export left in `folder`, or None."""
    p = folder / NOTE_FILE
    if not p.is_file():
        return None
    try:
        note = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise FormatError(f"{p}: not readable JSON ({e})") from None
    if not isinstance(note, dict) or "images" not in note:
        raise FormatError(f"{p}: not a datadistill export note (no 'images' field)")
    return note


def check_free(folder: Path, names) -> None:
    """Refuse, before anything is written, an export that would replace a file of `folder` it did
    not write: a folder holding an export note (a datadistill export wrote it) is refreshed, any other
    keeps its files (an MTT run's own images_best.pt, say)."""
    if (folder / NOTE_FILE).is_file():
        return
    for name in names:
        if (folder / name).exists():
            raise OutputError(f"{folder / name} already exists and was not written by a datadistill export; "
                              f"export into a new or empty folder (or delete it)")


def write_note(folder: Path, fmt: str, spec: DatasetSpec, space: str) -> None:
    write_json(folder / NOTE_FILE, {"written_by": f"datadistill {__version__}", "format": fmt,
                                    "dataset": spec.name, "images": space})


def _kind(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"
