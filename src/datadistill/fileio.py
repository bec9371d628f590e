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
from typing import Iterable, Iterator

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


def check_out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, an output folder that cannot be made or written: a file in its
    place or above it, no permission, a read-only file system. Leaves the disk as it was."""
    path = Path(path)
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


def check_out_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, an output file that is a folder or whose folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    check_out_dir(path.parent, what=f"{what} {path}: the folder")
    return path


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
