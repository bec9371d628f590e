"""How a published set's images are stored, and the way into (and out of) the set's own space.

A `SyntheticSet` holds images normalized with the dataset's mean and std, or ZCA-whitened with
its ``zca`` matrices attached. Published files hold one of three things:

- ``normalized``: ``(pixels - mean) / std`` with the statistics of the code that saved them. These
  equal datadistill's for every dataset, except that the MTT line of code (MTT, DATM, PAD) and
  DD-Ranking normalize CIFAR-100 with CIFAR-10's statistics (``utils.get_dataset`` of
  GeorgeCazenavette/mtt-distillation, ``utils/utils_baseline.py`` of NUS-HPC-AI-Lab/PAD,
  ``ddranking/utils/data.py`` of NUS-HPC-AI-Lab/DD-Ranking): `Stats` of the format say so.
- ``pixels``: [0, 1] values (``ToTensor()`` alone; image files).
- ``zca``: kornia ``ZCAWhitening(eps=0.1)`` of [0, 1] pixels, as MTT saves with ``--zca``; this is
  the convention of `data.zca.fit_zca`, so such images are stored unchanged with the matrices.

Where the files record which (an export's note, a format that always normalizes) that is used;
otherwise the user says so with ``--normalized``, ``--unnormalized`` or ``--zca-from RUN_OR_SET``,
and a file that could be any of them is refused with a message naming the flags.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..data.base import DatasetSpec
from ..data.zca import unwhiten_images
from ..errors import ConfigError, FormatError
from ..synset import SyntheticSet
from .registry import ImportOptions

NORMALIZED, PIXELS, ZCA = "normalized", "pixels", "zca"
FLAGS = {NORMALIZED: "--normalized", PIXELS: "--unnormalized", ZCA: "--zca-from RUN_OR_SET"}
WORDS = {NORMALIZED: "normalized", PIXELS: "[0, 1] pixels", ZCA: "ZCA-whitened"}
ZCA_FILE = "zca.safetensors"  # beside exported files, as in an experts folder

# dataset -> the (mean, std) a format's code normalizes it with, where it is not datadistill's
Stats = dict[str, tuple[tuple[float, ...], tuple[float, ...]]]


def cifar100_as_cifar10() -> Stats:
    from ..data.unit import DATASETS

    c10 = DATASETS["cifar10"]
    return {"cifar100": (tuple(c10.mean), tuple(c10.std))}


def given_space(opts: ImportOptions) -> str | None:
    given = [s for s, on in ((NORMALIZED, opts.normalized is True), (PIXELS, opts.normalized is False),
                             (ZCA, opts.zca is not None)) if on]
    if len(given) > 1:
        raise ConfigError(f"give one of {', '.join(FLAGS[s] for s in given)}, not several")
    return given[0] if given else None


def resolve_space(fmt: str, path: Path, opts: ImportOptions, recorded: str | None = None,
                  where: str = "", allowed: tuple[str, ...] = (NORMALIZED, PIXELS, ZCA)) -> str:
    """The space the images of `path` are in: `recorded` (by `where`) if known, else the flag given."""
    given = given_space(opts)
    if recorded is not None:
        if given is not None and given != recorded:
            raise ConfigError(f"{path}: {where} records {WORDS[recorded]} images; drop {FLAGS[given].split()[0]}")
        return recorded
    if given is None:
        flags = ", ".join(FLAGS[s] for s in allowed[:-1]) + f" or {FLAGS[allowed[-1]]}"
        raise ConfigError(f"{path}: {fmt} files do not record whether the images are "
                          f"{', '.join(WORDS[s] for s in allowed[:-1])} or {WORDS[allowed[-1]]}; give {flags}")
    if given not in allowed:
        raise ConfigError(f"{path}: {fmt} images cannot be {WORDS[given]}; drop {FLAGS[given].split()[0]}")
    return given


def into_set(images: torch.Tensor, space: str, spec: DatasetSpec, zca: dict | None,
             stats: Stats | None = None) -> tuple[torch.Tensor, dict | None]:
    """Images in `space` -> (images in the set's space, the set's zca)."""
    if space == ZCA:
        check_zca(zca, spec)
        return images, zca
    if space == PIXELS:
        return spec.normalize(images), None
    theirs = (stats or {}).get(spec.name)
    if theirs is None or theirs == (tuple(spec.mean), tuple(spec.std)):
        return images, None
    return spec.normalize(replace(spec, mean=theirs[0], std=theirs[1]).denormalize(images)), None


def out_of_set(syn: SyntheticSet, keep_zca: bool, stats: Stats | None = None) -> tuple[torch.Tensor, str]:
    """The set's images as a format stores them: still whitened (`keep_zca`), else normalized with
    the format's statistics."""
    x = syn.images.detach().float().cpu()
    if syn.zca is not None:
        if keep_zca:
            return x, ZCA
        x = unwhiten_images(x, {k: v.float().cpu() for k, v in syn.zca.items()})
    theirs = (stats or {}).get(syn.spec.name)
    if theirs is not None and theirs != (tuple(syn.spec.mean), tuple(syn.spec.std)):
        x = replace(syn.spec, mean=theirs[0], std=theirs[1]).normalize(syn.spec.denormalize(x))
    return x.contiguous(), NORMALIZED


def check_zca(zca: dict | None, spec: DatasetSpec) -> None:
    d = spec.channels * spec.im_size[0] * spec.im_size[1]
    if zca is None:
        raise ConfigError("ZCA-whitened images need the whitening: give --zca-from RUN_OR_SET")
    if tuple(zca["transform"].shape) != (d, d) or tuple(zca["mean"].shape) != (d,):
        raise FormatError(f"the ZCA whitening is for {zca['mean'].numel()} values per image, "
                          f"{spec.name} images have {d}")


def load_zca_from(path: str | Path, spec: DatasetSpec) -> dict[str, torch.Tensor]:
    """The ZCA whitening of a run folder or synthetic set (or a folder holding zca.safetensors:
    an experts folder, an export), checked against `spec`."""
    from ..methods.trajectory.experts import load_zca

    p = Path(path)
    if p.is_dir() and (p / ZCA_FILE).is_file():
        zca = load_zca(p / ZCA_FILE)
    else:
        src = SyntheticSet.load(p)
        if src.zca is None:
            raise ConfigError(f"--zca-from {path}: that set has no ZCA whitening; give a run distilled with ZCA")
        if src.spec.name != spec.name:
            raise ConfigError(f"--zca-from {path}: its whitening is of {src.spec.name}, not {spec.name}")
        zca = src.zca
    zca = {k: v.float().cpu() for k, v in zca.items()}
    check_zca(zca, spec)
    return zca


def save_zca_beside(folder: Path, zca: dict[str, torch.Tensor]) -> None:
    from ..methods.trajectory.experts import save_zca

    save_zca(folder / ZCA_FILE, zca, fingerprint="none (an exported synthetic set)")


def folder_space(fmt: str, folder: Path, opts: ImportOptions) -> tuple[str, dict | None]:
    """The space of the images in `folder` and their whitening (None unless ZCA): from the note an
    export left there (and its zca.safetensors), else from the flags."""
    from .files import NOTE_FILE, read_note

    note = read_note(folder)
    if note and note.get("dataset") != opts.spec.name:
        raise ConfigError(f"{folder}: exported from {note.get('dataset')}, not {opts.spec.name}; "
                          f"give --dataset {note.get('dataset')}")
    space = resolve_space(fmt, folder, opts, note["images"] if note else None, f"its {NOTE_FILE}")
    if space != ZCA:
        return space, None
    if note and (folder / ZCA_FILE).is_file():
        return space, load_zca_from(folder, opts.spec)
    return space, opts.zca


def write_folder(folder: Path, fmt: str, syn: SyntheticSet, space: str, tensors: dict[str, torch.Tensor],
                 lr_name: str) -> list[str]:
    """Write `tensors` (file name -> tensor), the set's learned lr as `lr_name`, its whitening if the
    images stay whitened, and the note recording `space`, into `folder`; the names written."""
    from .files import NOTE_FILE, check_free, save_pt, write_note

    check_free(folder, [*tensors, *([lr_name] if syn.lr is not None else []), *([ZCA_FILE] if space == ZCA else []),
                        NOTE_FILE])
    for name, t in tensors.items():
        save_pt(t.contiguous(), folder / name)
    written = list(tensors)
    if syn.lr is not None:
        save_pt(torch.tensor(float(syn.lr)), folder / lr_name)
        written.append(lr_name)
    if space == ZCA:
        save_zca_beside(folder, syn.zca)
        written.append(ZCA_FILE)
    write_note(folder, fmt, syn.spec, space)
    return written
