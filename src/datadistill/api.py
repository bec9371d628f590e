"""The Python entry points behind `import datadistill as dd`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import resolve_config
from .run import RunResult, run_distillation
from .synset import SyntheticSet


def distill(
    method: str = "dm",
    dataset: str = "mnist-5k",
    ipc: int = 10,
    *,
    preset: str = "quick",
    out: str | Path | None = None,
    eval_runs: int = 0,
    progress: bool = True,
    return_run: bool = False,
    **options: Any,
) -> SyntheticSet | RunResult:
    """Distill `dataset` to `ipc` images per class with `method` and return the SyntheticSet.

    `options` override the preset: any DistillConfig field (iterations, seed, init, device,
    data_root, lr_img, batch_real, model, method_args={...}, eval={...}, ...). With `out`, the run
    folder is written (and resumed if it exists). `eval_runs` > 0 also evaluates on the test split;
    pass `return_run=True` to get the RunResult with the evaluations and timings."""
    ev = dict(options.pop("eval", {}) or {})
    ev["runs"] = eval_runs
    cfg = resolve_config(method, dataset, ipc, preset, eval=ev, **options)
    result = run_distillation(cfg, out, progress=progress)
    return result if return_run else result.synset
