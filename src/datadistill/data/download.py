"""Fetch dataset files: canonical URLs, md5 check, atomic write, safe archive extraction.

Where files come from
    :data:`SOURCES` maps each dataset to a :class:`Source`: a base URL and the published md5 of
    each remote file (each dataset's definition holds its own, `unit.py`). A file's URL is
    ``base_url + file name``.

Overriding the source (mirrors, tests)
    * environment variable ``DATADISTILL_MIRROR``: when set, every file is fetched from
      ``$DATADISTILL_MIRROR/<dataset>/<file name>`` instead (for example
      ``DATADISTILL_MIRROR=http://mirror.local/datasets`` -> ``http://mirror.local/datasets/mnist/
      train-images-idx3-ubyte.gz``). The md5 check still applies.
    * tests replace entries of :data:`SOURCES` (``monkeypatch.setitem(download.SOURCES, "mnist",
      Source(base_url=..., files={...}))``) to serve generated files with their own checksums.

Guarantees
    A download goes to a temporary file in the destination folder, is checked against the
    published md5, and only then is moved into place with ``os.replace``: a half-written or
    corrupt file never appears under its real name. A checksum mismatch deletes the temporary
    file and raises :class:`ChecksumError` naming the URL, the expected and the actual md5.
    Archives (``.tar.gz``) are extracted member by member after checking every member (no
    absolute paths, no ``..``, no links or special files), with ``tarfile``'s ``"data"`` filter
    where Python has it, into a temporary folder whose files are then moved into place.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import zipfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .base import DataError

MIRROR_ENV = "DATADISTILL_MIRROR"
TIMEOUT_S = 60.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a dataset's files are published: ``base_url + name`` for each ``name`` in ``files``.

    ``files`` maps remote file name -> published md5. ``archive``: the files are ``.tar.gz``
    (or ``.zip``) archives, extracted into the dataset folder after download and then deleted.
    """

    base_url: str
    files: dict[str, str] = field(default_factory=dict)
    archive: bool = False


# dataset name -> where its files are published; filled by `unit.register_dataset` from each
# dataset's definition (tests replace entries to serve generated files)
SOURCES: dict[str, Source] = {}


class ChecksumError(DataError):
    """A downloaded file does not have the published md5."""


def url_for(dataset: str, file_name: str) -> str:
    """The URL of one remote file, honouring ``DATADISTILL_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    base = f"{mirror.rstrip('/')}/{dataset}/" if mirror else SOURCES[dataset].base_url
    return base + file_name


def urls(dataset: str) -> list[str]:
    """Every URL a dataset is fetched from (empty for datasets with no source)."""
    src = SOURCES.get(dataset)
    return [url_for(dataset, name) for name in src.files] if src else []


def download_file(url: str, dest: Path, md5: str, *, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``md5``.

    Network errors propagate as ``OSError`` (``urllib.error.URLError`` is one); a wrong
    checksum raises :class:`ChecksumError`. Either way no file or temporary file is left behind.
    """
    from tqdm import tqdm  # noqa: PLC0415

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      file=sys.stderr, disable=not progress, leave=False) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != md5.lower():
            raise ChecksumError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {got}; the file was discarded "
                "(a broken download, or the server serves a different file)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the extraction folder."""
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts:
        raise DataError(f"{archive}: refusing to extract member {name!r} (absolute path or '..')")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing to extract member {name!r} (link or special file)")


def _untar(archive: Path, tmp: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            _check_member(m, archive)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(tmp, members=members, filter="data")
        else:  # Python without extraction filters: members were checked above
            tf.extractall(tmp, members=members)  # noqa: S202


def _unzip(archive: Path, tmp: Path) -> None:
    """A zip archive (Tiny-ImageNet's) member by member, refusing absolute paths, '..' and links."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts:
                raise DataError(f"{archive}: refusing to extract member {name!r} (absolute path or '..')")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(f"{archive}: refusing to extract member {name!r} (link)")
        zf.extractall(tmp)


def extract_tar(archive: Path, dest: Path) -> None:
    """Safely extract ``archive`` into ``dest``: check members, extract to a temp folder, move files."""
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        if str(archive).lower().endswith(".zip"):
            _unzip(archive, tmp)
        else:
            _untar(archive, tmp)
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                target = dest / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: corrupt archive, cannot extract ({type(e).__name__}: {e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(dataset: str, folder: Path, missing: list[str], *, progress: bool = True) -> None:
    """Download what ``dataset`` needs into ``folder``.

    Plain files: only the remote files named in ``missing``. Archives: every archive of the
    source is downloaded, extracted into ``folder``, then deleted.
    """
    src = SOURCES[dataset]
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name, md5 in src.files.items():
            if not src.archive and name not in missing:
                continue
            path = download_file(url_for(dataset, name), folder / name, md5, progress=progress)
            if src.archive:
                try:
                    extract_tar(path, folder)
                finally:
                    path.unlink(missing_ok=True)
    except BaseException:
        for p in created:  # a failed download leaves no empty folders behind (deepest first)
            try:
                p.rmdir()
            except OSError:
                break
        raise
