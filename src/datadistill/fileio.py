"""Atomic file writes: a file is either the old one or the complete new one, never half-written.

Files get the usual mode (0666 less the umask, like any other tool), not mkstemp's 0600. A write
that fails for a reason of the place (a full disk, no permission, a folder in the way) raises
OutputError naming the file. `check_out_dir` / `check_out_file` find such problems before any
work starts; `remove_stale_temporaries` removes what a killed write left behind.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import OutputError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    from safetensors import SafetensorError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}; choose another place") from e
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, (OSError, SafetensorError)) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {path}: {_reason(e)} (nothing was changed); "
                              "free some space or choose another place") from e
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def torch_save(path: str | os.PathLike, obj) -> None:
    """`torch.save` atomically; serialized in memory first, so a full disk is an OSError of the
    write (torch's own writer reports it as a RuntimeError)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def _missing_chain(path: Path) -> tuple[Path, list[Path]]:
    """The nearest existing ancestor of `path` and the missing folders below it, top first."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return p, missing[::-1]


FOLDER_KINDS = {"run": "a distillation run", "experts": "an experts folder", "teacher": "a teacher"}


def folder_kind(path: Path) -> str | None:
    """What a datadistill folder holds: the artifact its manifest names ("experts", "teacher"), "run"
    for a distillation run (config.yaml beside a run's files), None for a new or any other folder."""
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            fmt = json.loads(manifest.read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            fmt = None
        if isinstance(fmt, str) and fmt.startswith("datadistill."):
            return fmt.split(".", 1)[1]
    if (path / "config.yaml").is_file() and any((path / n).exists() for n in ("metrics.jsonl", "checkpoint.pt",
                                                                              "synset.safetensors")):
        return "run"
    return None


def check_out_dir(path: str | os.PathLike, what: str = "--out", kind: str | None = None) -> Path:
    """Refuse, before any work, an output folder that cannot be made or written: a file in its
    place or above it, no permission, a read-only file system. Leaves the disk as it was. With
    `kind` ("run", "experts", "teacher"), also a folder that holds another kind of datadistill
    folder (a teacher's files are not a distillation's to resume or mix with)."""
    path = Path(path)
    found = folder_kind(path) if kind is not None and path.is_dir() else None
    if found is not None and found != kind:
        raise OutputError(f"{what} {path} holds {FOLDER_KINDS.get(found, 'a datadistill ' + found)}, not {FOLDER_KINDS[kind]}; "
                          f"give another folder")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; give a folder (new or a run folder)")
    top, missing = _missing_chain(path)
    if not top.is_dir():
        raise OutputError(f"{what} {path}: {top} is a file, not a folder; choose another place")
    made = []
    try:
        for p in missing:  # a probe: make the folders, then remove them again
            p.mkdir()
            made.append(p)
        fd, probe = tempfile.mkstemp(prefix=".datadistill-probe.", suffix=TMP_SUFFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written ({_reason(e)}); choose another place") from e
    finally:
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.rmdir()
    return path


def check_out_file(path: str | os.PathLike, what: str = "--out", *, kind: str | None = None,
                   replaces: Callable[[Path], bool] | None = None) -> Path:
    """Refuse, before any work, an output file that is a folder or whose folder cannot be written.

    With `replaces`, an existing file is replaced only if `replaces(path)` says it is of the `kind`
    the command writes: re-running a command refreshes its own output, and never overwrites a file
    of another kind (a synthetic set, a checkpoint, a text file) that happens to have the name."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    if replaces is not None and path.exists() and not replaces(path):
        raise OutputError(f"{what} {path} already exists and is not {kind}; writing would destroy it: "
                          f"give another file name (or delete it)")
    check_out_dir(path.parent, what=f"{what} {path}: the folder")
    return path


def file_head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_png(path: Path) -> bool:
    """Whether `path` starts with the PNG signature."""
    return file_head(path, 8) == b"\x89PNG\r\n\x1a\n"


def is_torch_file(path: Path) -> bool:
    """Whether `path` starts as torch.save writes: its zip archive, or a pickle (the legacy format)."""
    head = file_head(path, 4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def is_json(path: Path, limit: int = 64 << 20) -> bool:
    """Whether `path` holds one JSON value (files above `limit` bytes are not read: False)."""
    try:
        if path.stat().st_size > limit:
            return False
        json.loads(path.read_bytes())
        return True
    except (OSError, ValueError):
        return False


def is_html(path: Path) -> bool:
    head = file_head(path, 512).lstrip().lower()
    return head.startswith(b"<!doctype html") or head.startswith(b"<html")


def safetensors_format(path: Path) -> str | None:
    """The `format` tag in a safetensors file's header (datadistill's files carry one), else None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError):
        return None


def remove_stale_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files atomic writes of `names` left in `folder` when a run was killed
    between creating them and their rename (`.NAME.<random>.tmp`). Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for p in folder.glob(f".{name}.*{TMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
