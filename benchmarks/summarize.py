"""Print the benchmark JSON files in benchmarks/results/ as Markdown tables (for README).

Usage: python benchmarks/summarize.py [results/NAME.json ...]
"""
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def acc(d):
    return f"{d['mean']:.2f} ± {d['std']:.2f} (n={d['runs']})" if d else "–"


def budget_table(doc: dict) -> str:
    lines = [f"`{doc['command']}` ({doc['date']}, torch {doc['machine']['torch']}, "
             f"{doc['machine']['cuda'] or str(doc['machine']['cpu_threads']) + ' CPU threads'}, nothing else running)", "",
             "| command | wall time | budget | iterations | s / iteration | test acc. % (1 run) |",
             "|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if "error" in r:
            lines.append(f"| {r['case']} | failed: {r['error']} |||||")
            continue
        lines.append(f"| `{r['command']}` | {r['wall_seconds'] / 60:.1f} min | {r['budget_seconds'] / 60:.0f} min | "
                     f"{r['iterations']} | {r['seconds_per_iteration']:.2f} | {r['test_accuracy']:.2f} |")
    return "\n".join(lines)


def per_iteration(r: dict) -> str:
    """Seconds per iteration, or "–" for a method that runs none (coresets: all their time is selection)."""
    return f"{r['distill_seconds'] / r['iterations']:.2f}" if r["iterations"] else "–"


def method_cell(row: dict) -> str:
    """The method, with any setting the row overrides besides lr_img (which has its own column)."""
    over = {k: v for k, v in (row.get("spec", {}).get("overrides") or {}).items() if k != "lr_img"}
    flat = [f"{k}={v}" for k, v in over.items() if not isinstance(v, dict)]
    flat += [f"{k}={v}" for d in over.values() if isinstance(d, dict) for k, v in d.items()]
    return row["method"] + (f" ({', '.join(flat)})" if flat else "")


def provenance(row: dict, doc: dict) -> str:
    """Which run produced a row: its date, commit and thread count (rows merged by --resume keep
    their own; older files only have the document's)."""
    m = row.get("machine") or doc["machine"]
    where = m["cuda"] or f"{m['cpu_threads']} thr"
    return f"{row.get('date') or doc['date']}, {m.get('commit') or '?'}, {where}"


def _overrides(r: dict) -> str:
    over = r.get("overrides") or {}
    flat = {**{k: v for k, v in over.items() if not isinstance(v, dict)},
            **{k: v for d in over.values() if isinstance(d, dict) for k, v in d.items()}}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in flat.items())


def mtt_table(doc: dict) -> str:
    """benchmarks/mtt_cifar10.py: the experts, then MTT and DM accuracy, then the unroll probes."""
    rows = doc["results"]
    lines = [f"`{doc['command']}` (torch {doc['machine']['torch']}; each row's run in its last column)", ""]
    for r in (r for r in rows if r.get("job") == "experts"):
        lines += [f"Experts: {r['num_experts']} x {r['epochs']} epochs, test accuracy {r['accuracy_mean']:.2f} ± "
                  f"{r['accuracy_std']:.2f} %, {r['seconds_per_expert']:.0f} s per expert, {r['disk_mib']:.0f} MiB "
                  f"on disk ({provenance(r, doc)}).", ""]
    lines += ["| method | IPC | settings | iterations | test acc. % | starting images % | learned lr | s / iteration | distill s | run |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("job") not in ("mtt", "dm") or "error" in r:
            continue
        lr = f"{r['learned_lr']:.4f}" if r.get("learned_lr") else "–"
        settings = _overrides(r) or "quick preset"
        lines.append(f"| {r['method']} | {r['ipc']} | {settings} | {r['iterations']} | {acc(r['accuracy'])} | "
                     f"{acc(r.get('init_accuracy'))} | {lr} | {r['seconds_per_iteration']:.2f} | {r['distill_seconds']:.0f} | "
                     f"{provenance(r, doc)} |")
    probes = [r for r in rows if r.get("job") == "probe" and "error" not in r]
    if probes:
        lines += ["", "| IPC | unroll | syn_steps x batch_syn | s / iteration | peak memory above start (MiB) | memory kind |",
                  "|---|---|---|---|---|---|"]
        for r in probes:
            seg = f" (segment {r['segment']})" if r.get("segment") else ""
            lines.append(f"| {r['ipc']} | {r['unroll']}{seg} | {r['syn_steps']} x {r['batch_syn'] or 'all'} | "
                         f"{r['seconds_per_iteration']:.2f} | {r['peak_above_before_mb']:.0f} | {r['memory_kind']} |")
    failed = [r for r in rows if "error" in r]
    lines += [f"\nfailed: {r['spec']} ({r['error']})" for r in failed]
    return "\n".join(lines)


def table(path: Path) -> str:
    doc = json.loads(path.read_text())
    if doc["benchmark"] == "budget":
        return budget_table(doc)
    if doc["benchmark"] == "mtt_cifar10":
        return mtt_table(doc)
    if not all("config" in r or "error" in r for r in doc.get("results", [None])):
        return f"(no table layout for `{doc['command']}`: its fields are in {path.name})"
    lines = [f"`{doc['command']}` ({doc['date']}, torch {doc['machine']['torch']}, "
             f"{doc['machine']['cuda'] or str(doc['machine']['cpu_threads']) + ' CPU threads'})", "",
             "| method | dataset | IPC | lr_img | iterations | test acc. % | init acc. % | s / iteration | distill s | eval s / run | peak MiB | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if "error" in r:
            lines.append(f"| {r['spec']['method']} | {r['spec']['dataset']} | {r['spec']['ipc']} | failed: {r['error']} ||||||||")
            continue
        lines.append(
            f"| {method_cell(r)} | {r['dataset']} | {r['ipc']} | {r['config']['lr_img']:g} | {r['iterations']} | {acc(r['accuracy'])} | "
            f"{acc(r.get('init_accuracy'))} | {per_iteration(r)} | {r['distill_seconds']:.0f} | "
            f"{r['eval']['seconds_per_run_with_test']:.0f} | {r['peak_memory_mb']:.0f} | {provenance(r, doc)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(RESULTS.glob("*.json"))
    for p in paths:
        print(f"### {p.stem}\n\n{table(p)}\n")
