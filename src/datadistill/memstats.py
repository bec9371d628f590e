"""Peak and available memory of this process, on the CPU and on CUDA (no package imports: the
run loop, the evaluation and the methods all record or consult it).

Peaks are the process's high-water marks so far: resident memory (`resource.getrusage`
ru_maxrss, KiB on Linux) and CUDA memory allocated by torch (`torch.cuda.max_memory_allocated`,
since the run loop last reset it). Values in MiB, named `_mb` as the rest of the records are."""
from __future__ import annotations

import os
import resource

import torch


def peak_memory(device: torch.device | str) -> dict[str, float]:
    """{"peak_rss_mb": ...} and, on CUDA, {"peak_cuda_mb": ...} (MiB)."""
    device = torch.device(device)
    rec = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        rec["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return rec


def available_bytes(device: torch.device | str) -> tuple[int, str]:
    """(bytes the process can still allocate on `device`, where the number comes from)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "torch.cuda.mem_get_info (free)"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "os.sysconf SC_AVPHYS_PAGES"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device: torch.device | str) -> float:
    """Start a new high-water mark (Linux: /proc/self/clear_refs resets VmHWM to the current
    resident size; CUDA: torch's peak statistics). Returns the current usage in MiB that
    `peak_since_reset` measures against (resident size, or CUDA allocated)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        raise RuntimeError(f"cannot reset the resident high-water mark ({e}); needs Linux's /proc") from e
    return (_status_kib("VmRSS") or 0) / 1024


def peak_since_reset(device: torch.device | str) -> float:
    """The high-water mark in MiB since `reset_peak` (VmHWM, or CUDA max allocated)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return (_status_kib("VmHWM") or 0) / 1024
