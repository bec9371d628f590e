"""The trajectory-matching family: MTT (`mtt.py`), DATM (`datm.py`), PAD (`pad.py`), their shared
soft-label path (`labels.py`), the expert store and its artifact (`experts.py`), expert training
(`training.py`, SGD or GSAM: `gsam.py`), and PAD's difficulty scores and data scheduler
(`difficulty.py`)."""
from .experts import ExpertSettings, Experts, expert_settings, load_experts, open_experts, stored_zca
from .mtt import MTTOptions, TrajectoryMatching, student_unroll, trajectory_loss, unroll
from .datm import DATM, DATMOptions, start_epoch_range
from .pad import PAD
from .training import ExpertsReport, train_experts

__all__ = [
    "DATM", "DATMOptions", "start_epoch_range", "ExpertSettings", "Experts", "ExpertsReport", "MTTOptions", "PAD", "TrajectoryMatching", "expert_settings",
    "load_experts", "open_experts", "stored_zca", "student_unroll", "train_experts", "trajectory_loss", "unroll",
]
