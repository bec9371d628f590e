"""``datm`` and ``pad``: the folder DATM's ``distill/DATM.py`` (NUS-HPC-AI-Lab/DATM) and PAD's
``distill/PAD.py`` (NUS-HPC-AI-Lab/PAD, built on DATM's code) save.

Layout (``logged_files/<dataset>/<ipc>/<model>/<run>/Normal/``): ``images_best.pt`` (as MTT's:
ZCA-whitened with ``zca: True`` in the config, else normalized), ``labels_best.pt`` (float (N, K)
label *logits*, learned with the images; the student's loss takes their softmax, so the set stores
softmax(logits)), ``lr_best.pt`` (the learned learning rate, a 0-d tensor), and ``*_<it>.pt`` at
other iterations. FILE_OR_DIR may be the run folder or its ``Normal/``. Export writes log-probabilities
as the logits (their softmax is the set's labels) and hard labels as one-hot logits.
"""
from __future__ import annotations

from .mtt import TrajectoryFolder
from .registry import register_format


@register_format
class DATM(TrajectoryFolder):
    name = "datm"
    description = "DATM's Normal/images_best.pt, labels_best.pt (soft-label logits), lr_best.pt"
    source = "NUS-HPC-AI-Lab/DATM distill/DATM.py (saving), utils/utils_baseline.py get_dataset (normalization, ZCA)"
    subfolder = "Normal"
    lr_names = ("lr_{tag}.pt",)
    soft = True


@register_format
class PAD(DATM):
    name = "pad"
    description = "PAD's Normal/images_best.pt, labels_best.pt (soft-label logits), lr_best.pt (DATM's layout)"
    source = "NUS-HPC-AI-Lab/PAD distill/PAD.py (saving), utils/utils_baseline.py get_dataset (normalization, ZCA)"
