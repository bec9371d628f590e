"""The files of an experts folder, checked: the manifest's structure, and each shard's tensor data
against the CRC-32 stored in its header when it was written (so a shard whose data is corrupted
while its safetensors header is intact is caught when the experts are opened, before any work).

Shards written before checksums existed (no ``trajectory_crc32`` in their metadata) are read
unchecked, as before.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...errors import FormatError
from ...fileio import atomic_path

CRC_KEY = "trajectory_crc32"
_AGAIN = "delete the experts folder (or that file) and run `datadistill experts` again"


def _crc(t: torch.Tensor) -> str:
    return f"{zlib.crc32(t.contiguous().view(torch.uint8).reshape(-1).numpy()):08x}"


def save_shard(path: Path, trajectory: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write one expert's trajectory atomically, with the CRC-32 of its data in the metadata."""
    traj = trajectory.detach().float().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file({"trajectory": traj}, str(tmp), metadata={**metadata, CRC_KEY: _crc(traj)})


def verify_shard(path: Path) -> None:
    """Read a shard's data once and compare it with its stored CRC-32; FormatError if they differ."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            want = (f.metadata() or {}).get(CRC_KEY)
            if want is None:
                return
            got = _crc(f.get_tensor("trajectory"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FormatError(f"{path}: unreadable expert shard ({e}); {_AGAIN}") from e
    if got != want:
        raise FormatError(f"{path}: the trajectory data fails its checksum (CRC-32 {got}, stored {want}): the file "
                          f"is corrupt; {_AGAIN}")


def _is(v, kind) -> bool:
    return isinstance(v, kind) and not isinstance(v, bool)


def check_manifest(path: Path, m: dict) -> None:
    """Every manifest field the loaders use, with its type; FormatError naming the first bad one."""
    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            shown = repr(m.get(key, "(missing)"))
            raise FormatError(f"{path}: experts manifest field '{key}' {what}, got {shown[:80]}; {_AGAIN}")

    need("fingerprint", _is(m.get("fingerprint"), str), "must be a string")
    for key in ("epochs", "num_params"):
        need(key, _is(m.get(key), int) and m[key] >= 1, "must be a positive integer")
    for key in ("dataset", "model_args", "zca"):
        need(key, isinstance(m.get(key), dict), "must be a mapping")
    need("zca", isinstance(m["zca"].get("enabled"), bool), "must say whether ZCA is enabled")
    need("model", _is(m.get("model"), str), "must be a network name")
    need("param_layout", isinstance(m.get("param_layout"), list), "must be a list")
    need("experts", isinstance(m.get("experts"), list), "must be a list")
    for e in m["experts"]:
        ok = (isinstance(e, dict) and _is(e.get("index"), int) and e["index"] >= 0 and _is(e.get("file"), str)
              and "/" not in e["file"] and "\\" not in e["file"] and e["file"] not in ("", ".", "..")
              and all(_is(e.get(k), (int, float)) for k in ("test_accuracy", "seconds", "bytes")))
        need("experts", ok, "must list entries of index, file, test_accuracy, seconds and bytes")
