"""Deprecated alias of `datadistill.methods.trajectory.pad` (moved in 0.2; this name stays for
one release)."""
import sys
import warnings

from .trajectory import pad as _moved

warnings.warn("datadistill.methods.pad is deprecated; use datadistill.methods.trajectory.pad",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
