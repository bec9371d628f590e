"""The trajectory-matching family: MTT (`mtt.py`), PAD (`pad.py`), the expert store and its
artifact (`experts.py`), expert training (`training.py`), and PAD's difficulty scores and data
scheduler (`difficulty.py`)."""
from .experts import ExpertSettings, Experts, expert_settings, load_experts, open_experts, stored_zca
from .mtt import MTTOptions, TrajectoryMatching, student_unroll, trajectory_loss, unroll
from .pad import PAD
from .training import ExpertsReport, train_experts

__all__ = [
    "ExpertSettings", "Experts", "ExpertsReport", "MTTOptions", "PAD", "TrajectoryMatching", "expert_settings",
    "load_experts", "open_experts", "stored_zca", "student_unroll", "train_experts", "trajectory_loss", "unroll",
]
