"""A run folder: every file name in it, and the reading and writing of each file.

A run folder holds:
  config.yaml          the resolved configuration (what the run depends on)
  synset.safetensors   the synthetic set (at the last checkpoint, then the final one)
  checkpoint.pt        everything needed to resume (written atomically every `checkpoint_every`)
  metrics.jsonl        one JSON object per line: loss and seconds per iteration, validation accuracy
  grid_init.png        the starting set, classes as rows
  grid_final.png       the final set
  eval.json            the evaluation of the final set on the real test split (first network)
  eval_table.json      every network's evaluation, when more than one was evaluated
  evaluate.json        what `datadistill evaluate RUN` wrote
  show.png             what `datadistill show RUN` wrote

Every file is replaced atomically (fileio.py), so none is ever half-written. `report`, the CLI
and the benchmarks read run folders through the names here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from .. import checkpoints
from ..config import DistillConfig, load_yaml, save_yaml
from ..errors import ConfigError
from ..fileio import remove_stale_temporaries, write_json, write_text
from ..synset import RUN_FOLDER_FILE, SyntheticSet

CONFIG = "config.yaml"
SYNSET = RUN_FOLDER_FILE
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
GRID_INIT = "grid_init.png"
GRID_FINAL = "grid_final.png"
EVAL = "eval.json"
EVAL_TABLE = "eval_table.json"
EVALUATE = "evaluate.json"
SHOW = "show.png"

RUN_FILES = (CONFIG, SYNSET, CHECKPOINT, METRICS, GRID_INIT, GRID_FINAL, EVAL, EVAL_TABLE, EVALUATE, SHOW)
CHECKPOINT_FORMAT = checkpoints.FORMAT
# Settings that may differ when resuming: they do not change the synthetic set's trajectory.
# `sources` is the presets' citation text, which documents the settings rather than being one (a
# reworded preset must not strand a run of hours).
RESUMABLE_CHANGES = {"iterations", "eval", "device", "val_every", "val_epochs", "checkpoint_every", "data_root",
                     "storage", "cache", "resolved",
                     "artifact_fingerprints", "sources"}


def run_name(dataset: str) -> str:
    """A file-name-safe form of a dataset name (``folder:./my images`` -> ``folder-my images``)."""
    name = str(dataset)
    if name.startswith("folder:"):
        name = "folder-" + name[len("folder:"):].lstrip("./")
    return name.replace("/", "_").replace("\\", "_").strip("_.") or "dataset"


def default_out(cfg: DistillConfig) -> Path:
    """runs/<dataset>-<method>-ipc<ipc>."""
    return Path("runs") / f"{run_name(cfg.dataset)}-{cfg.method}-ipc{cfg.ipc}"


class RunFolder:
    """The files of one run folder `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- config ---------------------------------------------------------------------------
    def check_same_run(self, cfg: DistillConfig) -> None:
        """ConfigError when the folder holds a run with other settings than `cfg` (beyond those a
        resume may change)."""
        if not (self.path / CONFIG).exists():
            return
        saved = load_yaml((self.path / CONFIG).read_text(), str(self.path / CONFIG))
        a, b = saved.to_dict(), cfg.to_dict()
        diffs = [k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k)]
        # an artifact's contents must be the same ones (folders written before fingerprints have none)
        diffs += [f"artifact_fingerprints.{k}" for k, v in a["artifact_fingerprints"].items()
                  if k in b["artifact_fingerprints"] and b["artifact_fingerprints"][k] != v]
        if diffs:
            def value(d, k):
                return d["artifact_fingerprints"].get(k.split(".", 1)[1]) if "." in k else d.get(k)

            detail = ", ".join(f"{k}: {value(a, k)!r} -> {value(b, k)!r}" for k in diffs)
            raise ConfigError(
                f"{self.path} holds a run with other settings ({detail}); use another --out, or the same settings "
                "to resume"
            )

    def write_config(self, cfg: DistillConfig) -> None:
        write_text(self.path / CONFIG, save_yaml(cfg))

    # -- metrics --------------------------------------------------------------------------
    def metrics_upto(self, upto: int) -> list[str]:
        """Complete lines of metrics.jsonl whose iteration is <= upto (a killed run may leave a torn line)."""
        keep = []
        path = self.path / METRICS
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and rec.get("it", 0) <= upto:
                    keep.append(line)
        return keep

    def truncate_metrics(self, upto: int) -> None:
        """Keep the records of iterations <= upto (what a resume from `upto` will not write again)."""
        write_text(self.path / METRICS, "".join(line + "\n" for line in self.metrics_upto(upto)))

    def open_metrics(self) -> IO[str]:
        return open(self.path / METRICS, "a")

    def append_metrics(self, rec: dict) -> None:
        with self.open_metrics() as f:
            f.write(json.dumps(rec) + "\n")

    # -- checkpoint -----------------------------------------------------------------------
    def read_checkpoint(self) -> dict | None:
        """The checked checkpoint (checkpoints.py), None when there is none."""
        return checkpoints.read_checkpoint(self.path / CHECKPOINT)

    def write_checkpoint(self, iteration: int, distiller_state: dict) -> None:
        checkpoints.write_checkpoint(self.path / CHECKPOINT, iteration, distiller_state)

    def checkpoint_note(self) -> str:
        return checkpoints.checkpoint_note(self.path / CHECKPOINT)

    def remove_stale_temporaries(self) -> None:
        """What atomic writes of a run killed mid-write left (`.synset.safetensors.*.tmp`, ...)."""
        remove_stale_temporaries(self.path, RUN_FILES)

    def final_validation_written(self, iterations: int) -> bool:
        """Whether metrics.jsonl holds the final validation line (a run killed during the final
        validation has every iteration but not it; the rerun validates again)."""
        records = (json.loads(line) for line in self.metrics_upto(iterations))
        return any(r.get("it") == iterations and "val_acc" in r and "distill_seconds" in r for r in records)

    # -- the set, its grids, its evaluations --------------------------------------------------
    def save_set(self, syn: SyntheticSet) -> None:
        syn.save(self.path / SYNSET)

    def has_set(self) -> bool:
        return (self.path / SYNSET).exists()

    def write_grid(self, syn: SyntheticSet, name: str, *, keep: bool = False) -> None:
        """A grid PNG (GRID_INIT, GRID_FINAL); `keep`: leave an existing one."""
        if not (keep and (self.path / name).exists()):
            syn.save_grid(self.path / name)

    def write_evals(self, results: list) -> None:
        """eval.json (the first network), and eval_table.json when there are several."""
        write_json(self.path / EVAL, results[0].to_dict())
        if len(results) > 1:
            write_json(self.path / EVAL_TABLE, [r.to_dict() for r in results])
