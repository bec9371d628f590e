"""Deprecated alias of `datadistill.methods.trajectory.difficulty` (moved in 0.2; this name stays
for one release)."""
import sys
import warnings

from .methods.trajectory import difficulty as _moved

warnings.warn("datadistill.difficulty is deprecated; use datadistill.methods.trajectory.difficulty",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
