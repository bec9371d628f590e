"""Deprecated alias of `datadistill.run` (the loop, the run folder and the setup moved there in
0.2; this name stays for one release)."""
import warnings

from .run import RunResult, default_out, peak_memory_mb, prepare, run_distillation  # noqa: F401
from .run.folder import CHECKPOINT_FORMAT, RESUMABLE_CHANGES  # noqa: F401

warnings.warn("datadistill.runner is deprecated; use datadistill.run", DeprecationWarning, stacklevel=2)
