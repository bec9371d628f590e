"""Deprecated alias: the expert store and training moved to `datadistill.methods.trajectory`
(`experts.py`, `training.py`) in 0.2; this name stays for one release."""
import warnings

from .methods.trajectory.experts import *  # noqa: F401,F403
from .methods.trajectory.experts import ExpertSettings, Experts, expert_settings, load_experts, open_experts, stored_zca  # noqa: F401
from .methods.trajectory.training import ExpertsReport, train_experts  # noqa: F401

warnings.warn("datadistill.experts is deprecated; use datadistill.methods.trajectory", DeprecationWarning, stacklevel=2)
