"""Figures and reports of runs: image grids (initial vs final), and a self-contained HTML report.

`write_report([run, ...], "report.html")` writes one HTML page that needs nothing else (images are
embedded as base64 PNG data URIs, no scripts, no external files) with, per run folder: the
resolved configuration, the initial and final image grids, the loss curve from metrics.jsonl,
the evaluations (eval.json from `distill`, evaluate.json from `datadistill evaluate`: mean +- std,
runs, seconds, FLOPs) and, when present, the architecture-search proxy (nas.json); and across the
runs a comparison table and a bar plot of accuracy.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from .run.folder import CONFIG, EVAL, EVAL_TABLE, EVALUATE, GRID_FINAL, GRID_INIT, METRICS, SYNSET
from ._version import __version__  # noqa: E402
from .errors import FormatError  # noqa: E402
from .fileio import atomic_path  # noqa: E402
from .synset import SyntheticSet  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


# ------------------------------------------------------------------------------- reading a run
@dataclass
class RunInfo:
    """What the report shows of one run folder (everything optional but the path)."""

    path: Path
    label: str
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    evals: list[tuple[str, dict]] = field(default_factory=list)  # (file name, EvalResult dict)
    grid_init: bytes | None = None
    grid_final: bytes | None = None
    stored_bytes: int | None = None
    images: int | None = None
    iterations_done: int | None = None
    class_names: list[str] = field(default_factory=list)
    nas: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> dict | None:
        """The evaluation the comparison uses: eval.json (the run's own; eval_table.json's first row),
        else evaluate.json's first row."""
        return self.evals[0][1] if self.evals else None

    @property
    def loss_records(self) -> list[dict]:
        return [r for r in self.metrics if "loss" in r and "it" in r]

    @property
    def iteration_seconds(self) -> float | None:
        secs = [r["seconds"] for r in self.loss_records if isinstance(r.get("seconds"), (int, float))]
        return float(sum(secs)) if secs else None

    @property
    def distill_seconds(self) -> float | None:
        vals = [r["distill_seconds"] for r in self.metrics if isinstance(r.get("distill_seconds"), (int, float))]
        return float(vals[-1]) if vals else None


def _read_json(path: Path, notes: list[str]):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{path.name} is unreadable ({e})")
        return None


def _read_png(path: Path, notes: list[str]) -> bytes | None:
    if not path.exists():
        notes.append(f"{path.name} is missing")
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        notes.append(f"{path.name} is not a PNG file")
        return None
    return data


def load_run(path: str | Path, label: str | None = None) -> RunInfo:
    """Read what a report needs from a run folder. Raises FormatError if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FormatError(f"{path}: not a run folder (expected a folder written by `datadistill distill`)")
    if not (path / CONFIG).exists() and not (path / SYNSET).exists():
        raise FormatError(f"{path}: not a run folder (neither config.yaml nor synset.safetensors is in it)")
    info = RunInfo(path=path, label=label or path.name)
    notes = info.notes
    if (path / CONFIG).exists():
        try:
            cfg = yaml.safe_load((path / CONFIG).read_text())
            info.config = cfg if isinstance(cfg, dict) else {}
        except yaml.YAMLError as e:
            notes.append(f"config.yaml is not valid YAML ({e})")
    syn_path = path / SYNSET
    if syn_path.exists():
        info.stored_bytes = syn_path.stat().st_size
        try:
            syn = SyntheticSet.load(syn_path)
            info.images = len(syn)
            info.iterations_done = syn.meta.get("iterations")
            info.class_names = list(syn.spec.class_names)
            if not info.config and isinstance(syn.meta.get("config"), dict):
                info.config = syn.meta["config"]
        except FormatError as e:
            notes.append(str(e))
    else:
        notes.append("synset.safetensors is missing")
    if (path / METRICS).exists():
        for line in (path / METRICS).read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a killed run may leave a torn last line
            if isinstance(rec, dict):
                info.metrics.append(rec)
    # eval_table.json: every network evaluated at the end of `distill` (its first row is eval.json)
    first = EVAL_TABLE if (path / EVAL_TABLE).exists() else EVAL
    for name in (first, EVALUATE):
        if (path / name).exists():
            doc = _read_json(path / name, notes)
            rows = doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) else []
            info.evals += [(name, r) for r in rows if isinstance(r, dict) and "mean" in r]
    if not info.evals:
        notes.append("no evaluation yet (eval.json / evaluate.json); run `datadistill evaluate` on the folder")
    if (path / "nas.json").exists():
        doc = _read_json(path / "nas.json", notes)
        info.nas = doc if isinstance(doc, dict) else None
    info.grid_init = _read_png(path / GRID_INIT, notes)
    info.grid_final = _read_png(path / GRID_FINAL, notes)
    return info


# ------------------------------------------------------------------------------- plots
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def loss_curve_png(metrics: Sequence[dict], title: str = "") -> bytes | None:
    """The distillation loss per iteration (and validation accuracy, if logged), as PNG bytes;
    None when the run has no iterations (coreset methods)."""
    recs = [r for r in metrics if "loss" in r and "it" in r]
    if not recs:
        return None
    its = np.array([r["it"] for r in recs], dtype=float)
    loss = np.array([r["loss"] for r in recs], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.3))
    ax.plot(its, loss, lw=1.0, color="#1f77b4", label="loss")
    if len(loss) >= 100:  # a moving average shows the trend under the per-iteration noise
        k = max(2, len(loss) // 20)
        ax.plot(its[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.8, color="#0b3c6b",
                label=f"mean of {k}")
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 30:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    val = [(r["it"], r["val_acc"]) for r in metrics if "val_acc" in r and "it" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([v[0] for v in val], [v[1] for v in val], "o-", color="#d62728", ms=4, label="validation accuracy")
        ax2.set_ylabel("validation accuracy (%)", color="#d62728")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
    else:
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = [], []
    # below the axes, so that it never hides a curve
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def accuracy_bars_png(labels: Sequence[str], means: Sequence[float], stds: Sequence[float],
                      title: str = "test accuracy") -> bytes | None:
    """A bar per run, with its std as an error bar, as PNG bytes; None without any bar."""
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.4))
    x = np.arange(len(labels))
    bars = ax.bar(x, means, yerr=stds, capsize=4, color="#4c72b0")
    for b, m, s in zip(bars, means, stds):
        ax.annotate(f"{m:.1f}", (b.get_x() + b.get_width() / 2, m + s), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                       fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------- HTML pieces
def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _img(data: bytes | None, alt: str, cls: str = "", width: int | None = None) -> str:
    if data is None:
        return f'<p class="missing">{esc(alt)}: not available</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    w = f' width="{int(width)}"' if width else ""
    c = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{uri}" alt="{esc(alt)}"{c}{w}>'


def _grid_width(data: bytes | None) -> int | None:
    if data is None:
        return None
    w, h = Image.open(io.BytesIO(data)).size
    scale = max(1, min(6, math.ceil(400 / max(w, h, 1))))  # enlarged; integer factors keep pixels square
    return w * scale


def _table(headers: Sequence[str], rows: Sequence[Sequence], cls: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _num(x, fmt: str = "{:.1f}", dash: str = "-") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return dash
    return fmt.format(x)


def _acc(ev: dict | None) -> str:
    if not ev:
        return "-"
    return f"{ev['mean']:.2f} ± {ev.get('std', 0.0):.2f}"


def _flops(x) -> str:
    if not isinstance(x, (int, float)) or x <= 0:
        return "-"
    for unit, f in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= f:
            return f"{x / f:.2f} {unit}"
    return f"{x:.0f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


CONFIG_ROWS = (
    ("method", "method"), ("dataset", "dataset"), ("IPC", "ipc"), ("preset", "preset"),
    ("iterations (configured)", "iterations"), ("init", "init"), ("seed", "seed"), ("model", "model"),
    ("model_args", "model_args"), ("lr_img", "lr_img"), ("batch_real", "batch_real"),
    ("DSA strategy", "dsa_strategy"), ("method_args", "method_args"), ("device", "device"),
)


def _config_table(run: RunInfo) -> str:
    c = run.config
    rows = []
    for title, key in CONFIG_ROWS:
        if key in c and c[key] not in (None, {}, ""):
            v = c[key]
            rows.append((title, json.dumps(v) if isinstance(v, (dict, list)) else v))
    ev = c.get("eval") or {}
    if ev:
        rows.append(("evaluation protocol", f"{', '.join(ev.get('models') or [])}; {ev.get('runs')} run(s), "
                     f"epochs {ev.get('epochs') or 'default'}, aug {ev.get('aug')}, lr {ev.get('lr') or 'default'}"))
    rows.append(("iterations done", _num(run.iterations_done, "{}")))
    rows.append(("synthetic images", _num(run.images, "{}")))
    rows.append(("stored bytes (synset.safetensors)", _bytes(run.stored_bytes)))
    rows.append(("seconds in iterations (sum over metrics.jsonl)", _num(run.iteration_seconds)))
    rows.append(("distillation seconds (last session, with init)", _num(run.distill_seconds)))
    for src in c.get("sources") or []:
        rows.append(("preset source", src))
    return _table(("setting", "value"), rows, "config")


EVAL_HEADERS = ("file", "model", "split", "accuracy (%)", "runs", "per-run accuracies", "epochs", "aug",
                "train s/run", "train FLOPs/run", "test FLOPs/image", "gain over random (points)")


def _eval_rows(run: RunInfo) -> list[tuple]:
    rows = []
    for src, ev in run.evals:
        runs = max(1, int(ev.get("runs", 1) or 1))
        fl = ev.get("flops") or {}
        gain = (ev.get("extra") or {}).get("gain")
        rows.append((
            src, ev.get("model", "?"), ev.get("split", "test"), _acc(ev), runs,
            ", ".join(f"{a:.2f}" for a in ev.get("accuracies", [])), ev.get("epochs", "-"), ev.get("aug", "-"),
            _num(ev.get("train_seconds", math.nan) / runs if isinstance(ev.get("train_seconds"), (int, float)) else None),
            _flops(fl.get("train_total")), _flops(fl.get("test_per_image")),
            _num(gain, "{:+.2f}"),
        ))
    return rows


def _nas_section(nas: dict) -> str:
    rows = [(v["name"], f"{v['syn_mean']:.2f} ± {v['syn_std']:.2f}", v.get("syn_rank"),
             f"{v['real_mean']:.2f} ± {v['real_std']:.2f}", v.get("real_rank"),
             _num(v.get("syn_seconds")), _num(v.get("real_seconds"))) for v in nas.get("variants", [])]
    real = (f"{nas.get('real_subset')} real images per class" if nas.get("real_subset")
            else "the whole training split") + f" ({nas.get('real_images')} images)"
    summary = (f"Validation accuracy ({nas.get('val_images', '?')} validation images; a selection, so the test split "
               f"is not used), {nas.get('runs')} run(s) per variant "
               f"and side; real side: {real}. Spearman {_num(nas.get('spearman'), '{:.3f}', 'n/a')}, "
               f"Kendall {_num(nas.get('kendall'), '{:.3f}', 'n/a')}. Best on synthetic: {nas.get('best_syn')}; "
               f"best on real: {nas.get('best_real')}; the synthetic pick ranks {nas.get('syn_best_real_rank')} on real "
               f"data. Seconds: synthetic {_num(nas.get('syn_seconds'))}, real {_num(nas.get('real_seconds'))}.")
    table = _table(("variant", "synthetic (%)", "rank", "real (%)", "rank", "synthetic s", "real s"), rows, "nas")
    return f'<h3>Architecture-search proxy (nas.json)</h3><p class="nas-summary">{esc(summary)}</p>{table}'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1120px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0.2em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.8em}
h3{margin:1.2em 0 0.4em;font-size:1.05em}
table{border-collapse:collapse;margin:6px 0 12px;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7}tbody tr:nth-child(even){background:#fafbfc}
table.comparison td:nth-child(n+4),table.evaluation td:nth-child(n+4){text-align:right}
table.config td:first-child{color:#555;white-space:nowrap}
table.comparison td:nth-child(2),table.comparison td:nth-child(3),table.comparison td:nth-child(8),table.evaluation td:nth-child(4),table.nas td{white-space:nowrap}
table.comparison{font-size:0.85em}
.scroll{overflow-x:auto}
.grids{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0}figcaption{font-size:0.85em;color:#555;text-align:center}
img.grid{image-rendering:pixelated;border:1px solid #ddd}
img.plot{max-width:100%;height:auto}
.meta,.path,.missing,.notes{color:#666;font-size:0.9em}.path{font-family:monospace}
.notes li{margin:0}
"""


def _run_section(i: int, run: RunInfo) -> str:
    c = run.config
    title = f"{i}. {run.label}"
    parts = [f'<section class="run" id="run-{i}"><h2>{esc(title)}</h2>',
             f'<p class="path">{esc(run.path)}</p>',
             "<h3>Configuration</h3>", _config_table(run),
             "<h3>Synthetic images (classes as rows)</h3><div class=\"grids\">"]
    for name, data in (("initial", run.grid_init), ("final", run.grid_final)):
        parts.append(f"<figure>{_img(data, f'{name} grid of {run.label}', 'grid', _grid_width(data))}"
                     f"<figcaption>{esc(name)}</figcaption></figure>")
    parts.append("</div>")
    if run.class_names:
        names = ", ".join(run.class_names[:40]) + (", ..." if len(run.class_names) > 40 else "")
        parts.append(f'<p class="meta">rows, top to bottom: {esc(names)}</p>')
    parts.append("<h3>Loss curve</h3>")
    curve = loss_curve_png(run.metrics, f"{c.get('method', '?')} on {c.get('dataset', '?')}, IPC {c.get('ipc', '?')}")
    if curve is None:
        parts.append('<p class="missing">no loss curve: the run has no logged iterations '
                     '(coreset methods select in one step)</p>')
    else:
        parts.append(_img(curve, f"loss curve of {run.label}", "plot"))
    parts.append("<h3>Evaluation</h3>")
    if run.evals:
        parts.append(_table(EVAL_HEADERS, _eval_rows(run), "evaluation"))
    else:
        parts.append('<p class="missing">not evaluated</p>')
    if run.nas:
        try:
            parts.append(_nas_section(run.nas))
        except (KeyError, TypeError, ValueError) as e:
            run.notes.append(f"nas.json has an unexpected shape ({e})")
    if run.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in run.notes) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


COMPARISON_HEADERS = ("run", "method", "dataset", "IPC", "preset", "iterations", "images", "accuracy (%)",
                      "runs", "model", "split", "iteration s", "train s/run", "train FLOPs/run", "stored")


def _labels(paths: Sequence[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]


def build_report(runs: Sequence[str | Path], title: str = "datadistill report") -> str:
    """The HTML text of the report of `runs` (run folders)."""
    if not runs:
        raise FormatError("no run folders given")
    paths = [Path(r) for r in runs]
    infos = [load_run(p, label) for p, label in zip(paths, _labels(paths))]
    rows, bar_labels, means, stds = [], [], [], []
    for run in infos:
        c, ev = run.config, run.primary
        rows.append((
            run.label, c.get("method", "-"), c.get("dataset", "-"), c.get("ipc", "-"), c.get("preset", "-"),
            _num(run.iterations_done if run.iterations_done is not None else c.get("iterations"), "{}"),
            _num(run.images, "{}"), _acc(ev), ev.get("runs", "-") if ev else "-", ev.get("model", "-") if ev else "-",
            ev.get("split", "test") if ev else "-", _num(run.iteration_seconds),
            _num(ev["train_seconds"] / max(1, ev.get("runs", 1)) if ev and isinstance(ev.get("train_seconds"), (int, float)) else None),
            _flops((ev.get("flops") or {}).get("train_total")) if ev else "-", _bytes(run.stored_bytes),
        ))
        if ev:
            bar_labels.append(f"{run.label} ({ev.get('model', '?')})")
            means.append(float(ev["mean"]))
            stds.append(float(ev.get("std", 0.0)))
    splits = {ev.get("split", "test") for run in infos if (ev := run.primary)}
    bars = accuracy_bars_png(bar_labels, means, stds, f"{'/'.join(sorted(splits)) or 'test'} accuracy, mean ± std over the runs")
    doc = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{len(infos)} run(s); written {esc(time.strftime("%Y-%m-%d %H:%M"))} by datadistill '
        f'{esc(__version__)}. Accuracy: mean ± population std over the stated number of training runs.</p>',
        '<section id="comparison"><h2>Comparison</h2>',
        '<p class="meta">Accuracy from each run\'s eval.json (its own final evaluation), else the first row '
        "of evaluate.json. Iteration s: the sum of the per-iteration seconds in metrics.jsonl; train s/run: "
        "training one evaluation network; train FLOPs/run: forward + backward, as counted by "
        "torch.utils.flop_counter.</p>",
        _table(COMPARISON_HEADERS, rows, "comparison"),
        _img(bars, "accuracy per run (bar plot)", "plot") if bars is not None
        else '<p class="missing">no evaluated run to plot</p>',
        "</section>",
        *(_run_section(i, run) for i, run in enumerate(infos, start=1)),
        "</body></html>",
    ]
    return "\n".join(doc) + "\n"


def write_report(runs: Sequence[str | Path], dest: str | Path = "report.html", title: str = "datadistill report") -> Path:
    """Write the report of `runs` to `dest` atomically; returns `dest`."""
    dest = Path(dest)
    text = build_report(runs, title)
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a page to share: the usual file mode, not mkstemp's 0600
    return dest
