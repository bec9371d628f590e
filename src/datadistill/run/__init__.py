"""A distillation run: its folder (`folder.py`), its setup (`setup.py`) and its loop (`loop.py`)."""
from .folder import RunFolder, default_out, run_name
from .loop import RunResult, dry_run, peak_memory_mb, run_distillation
from .setup import Prepared, prepare

__all__ = ["Prepared", "RunFolder", "RunResult", "default_out", "dry_run", "peak_memory_mb", "prepare", "run_distillation",
           "run_name"]
