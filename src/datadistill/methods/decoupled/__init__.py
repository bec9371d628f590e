"""Decoupled distillation: a teacher trained once (`datadistill teacher`), images recovered from it
(SRe2L, `sre2l.py`) or real patches selected by it and stitched (RDED, `rded.py`), and the
teacher's soft labels for the result (`relabel.py`, shared with the coresets given a teacher)."""
from . import rded, sre2l  # noqa: F401  (registration)
from .relabel import Relabeller, relabel

__all__ = ["Relabeller", "relabel"]
