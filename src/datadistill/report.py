"""Figures of a run: the initial vs final image grids (and, later, loss curves and HTML reports)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .fileio import atomic_path  # noqa: E402
from .synset import SyntheticSet  # noqa: E402


def save_comparison(syn: SyntheticSet, dest: str | Path, init_grid: str | Path | None = None) -> Path:
    """A PNG with the initial grid (if given) beside the final grid, classes as rows."""
    final = syn.grid_array()
    panels = [("final", final)]
    if init_grid is not None:
        panels.insert(0, ("initial", np.asarray(Image.open(init_grid).convert("RGB" if final.shape[2] == 3 else "L"))))
    h, w = final.shape[:2]
    scale = max(2.0, min(8.0, 600 / max(h, 1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * w * scale / 100 + 0.5, h * scale / 100 + 0.6), dpi=100)
    axes = np.atleast_1d(axes)
    for ax, (title, arr) in zip(axes, panels):
        ax.imshow(arr.squeeze(), cmap="gray" if arr.ndim == 2 or arr.shape[-1] == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{title} ({syn.meta.get('method', '?')}, IPC {syn.ipc})", fontsize=9)
        ax.set_yticks([(k + 0.5) * (h / syn.spec.num_classes) for k in range(syn.spec.num_classes)])
        ax.set_yticklabels(syn.spec.class_names, fontsize=6)
        ax.set_xticks([])
    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest
