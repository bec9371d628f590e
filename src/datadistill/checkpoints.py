"""checkpoint.pt of a run folder: written atomically, read back with `weights_only=True`, its
structure checked before anything uses it.

A checkpoint is a dict ``{"format": FORMAT, "iteration": int, "distiller": dict}`` (the
distiller's state: tensors, numbers, strings, lists and dicts). torch refuses, under
``weights_only=True``, any file that would need other Python objects: such a file is not a
datadistill checkpoint and is never loaded (nothing in it runs). Each problem is one FormatError
naming the file and what to do.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import FormatError
from .fileio import torch_save

FORMAT = "datadistill.checkpoint/1"
_RESTART = "delete it to start the run over from iteration 0, or use another --out"


def read_checkpoint(path: Path | None) -> dict | None:
    """The checked state of `path`, or None when there is none."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise FormatError(
            f"{path} is not a datadistill checkpoint: it holds Python objects other than tensors and plain "
            f"values, or is not a checkpoint at all, and was not loaded; {_RESTART}"
        ) from e
    except Exception as e:  # noqa: BLE001  (torch raises many types for a truncated or corrupt file)
        raise FormatError(f"{path}: checkpoint is truncated or corrupt ({_first_line(e)}); {_RESTART}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FormatError(f"{path} is not a datadistill checkpoint (no '{FORMAT}' format tag); {_RESTART}")
    it = state.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise FormatError(f"{path}: checkpoint field 'iteration' must be a count >= 0, got {it!r}; {_RESTART}")
    if not isinstance(state.get("distiller"), dict):
        raise FormatError(f"{path}: checkpoint field 'distiller' is missing or not a mapping; {_RESTART}")
    return _owned(state)


def _owned(obj: Any) -> Any:
    """`obj` with every tensor copied into its own dense memory: a crafted file can give a tensor
    strides under which elements share memory, which in-place updates (an optimizer step) refuse."""
    if isinstance(obj, torch.Tensor):
        return obj.clone(memory_format=torch.contiguous_format)
    if isinstance(obj, dict):
        return {k: _owned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_owned(v) for v in obj)
    return obj


def restore(distiller: Any, state: dict, path: Path | None) -> int:
    """Load `state` (from `read_checkpoint`) into `distiller`; returns the iteration it is at."""
    try:
        distiller.load_state_dict(state["distiller"])
        for opt in vars(distiller).values():  # an optimizer's settings are read only at its next step
            if isinstance(opt, torch.optim.Optimizer):
                for group in opt.param_groups:
                    missing = sorted(set(opt.defaults) - set(group))
                    if missing:
                        raise KeyError(f"optimizer setting(s) {missing}")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise FormatError(
            f"{path}: checkpoint does not hold a state of this {getattr(distiller, 'name', '')} run "
            f"({type(e).__name__}: {_first_line(e)}); {_RESTART}"
        ) from e
    return int(state["iteration"])


def write_checkpoint(path: Path, iteration: int, distiller_state: dict) -> None:
    torch_save(path, {"format": FORMAT, "iteration": int(iteration), "distiller": distiller_state})


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def checkpoint_note(path: Path | None) -> str:
    """What a failed run leaves to resume from, as the end of its error message."""
    if path is not None and path.exists():
        return f" The last checkpoint, {path}, is kept."
    return " No checkpoint had been written yet."
