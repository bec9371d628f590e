"""Print the benchmark JSON files in benchmarks/results/ as Markdown tables (for README).

Usage: python benchmarks/summarize.py [results/NAME.json ...]
"""
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def acc(d):
    return f"{d['mean']:.2f} ± {d['std']:.2f} (n={d['runs']})" if d else "–"


def budget_label(b: dict | None) -> str:
    """An evaluation budget as a table cell or plot title: "3 x 50 epochs, lr 0.01" or "..., lr grid"."""
    b = b or {}
    return f"{b.get('runs')} x {b.get('epochs')} epochs, " + (f"lr {b['lr']}" if b.get("lr") else "lr grid")


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


def _flat(over: dict) -> list[tuple[str, object]]:
    """A row's overrides as (key, value) pairs, top-level settings first, then those nested one level
    down (method_args)."""
    return ([(k, v) for k, v in over.items() if not isinstance(v, dict)]
            + [(k, v) for d in over.values() if isinstance(d, dict) for k, v in d.items()])


def method_cell(row: dict) -> str:
    """The method, with any setting the row overrides besides lr_img (which has its own column)."""
    over = {k: v for k, v in (row.get("spec", {}).get("overrides") or {}).items() if k != "lr_img"}
    flat = [f"{k}={v}" for k, v in _flat(over)]
    return row["method"] + (f" ({', '.join(flat)})" if flat else "")


def provenance(row: dict, doc: dict) -> str:
    """Which run produced a row: its date, commit and thread count (rows merged by --resume keep
    their own; older files only have the document's)."""
    return _stamp(row.get("date") or doc["date"], row.get("machine") or doc["machine"])


def _stamp(date: str, m: dict) -> str:
    """date, commit, and the GPU or CPU thread count of a run."""
    return f"{date}, {m.get('commit') or '?'}, {m['cuda'] or str(m['cpu_threads']) + ' thr'}"


def _overrides(r: dict) -> str:
    """What a row set besides its preset (as its job spec says, else as the row records)."""
    over = (r.get("spec") or {}).get("overrides") or r.get("overrides") or {}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in _flat(over))


def _experts_of(r: dict, rows: list[dict]) -> str:
    """"N x E" for the experts folder a trajectory-matching row used ("–" for other methods)."""
    folder = (r.get("config") or {}).get("experts") or r.get("experts")
    for e in rows:
        if e.get("job") == "experts" and folder and e.get("directory") == folder:
            return f"{e['num_experts']} x {e['epochs']}" + (f" ({e['kind']})" if e.get("kind") else "")
    return "–"


def _versus(r: dict, ref: dict | None) -> str:
    """Mean difference to `ref` in points and Welch's t-test p-value over the runs' accuracies."""
    if ref is None or r is ref:
        return "–"
    from scipy import stats

    a, b = r["accuracy"]["accuracies"], ref["accuracy"]["accuracies"]
    diff = r["accuracy"]["mean"] - ref["accuracy"]["mean"]
    p = stats.ttest_ind(a, b, equal_var=False).pvalue if min(len(a), len(b)) > 1 else float("nan")
    return f"{diff:+.2f}, p {p:.2f}"


def pad_table(doc: dict) -> str:
    """benchmarks/pad_cifar10.py: the two kinds of experts, then MTT, PAD and PAD's ablations."""
    rows = doc["results"]
    lines = [f"`{doc['command']}` (torch {doc['machine']['torch']}; each row's run in its last column)", "",
             "| experts | N x epochs | test acc. % | s / expert | EL2N s | samples per epoch | run |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r.get("job") == "experts" and "error" not in r):
        el2n = f"{r['el2n_seconds']:.0f}" if r.get("el2n_seconds") else "–"
        samples = r.get("samples_per_epoch")
        span = f"{samples[0]} → {samples[-1]}" if samples else "all"
        lines.append(f"| {r['kind']} | {r['num_experts']} x {r['epochs']} | {r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f} | "
                     f"{r['seconds_per_expert']:.0f} | {el2n} | {span} | {provenance(r, doc)} |")
    lines += ["", "| variant | method | experts | alpha, selection | soft labels | test acc. % | vs PAD: points, Welch p | "
              "learned lr | s / iteration | distill s | eval s | peak MiB | run |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pad = next((r for r in rows if r.get("variant") == "pad" and "error" not in r), None)
    for r in (r for r in rows if r.get("job") == "distill"):
        if "error" in r:
            lines.append(f"| {r['spec'].get('variant')} | failed: {r['error']} ||||||||||||")
            continue
        a = r["method_args"]
        sel = f"{a['alpha']:g}, {a['selection']}" if r["method"] == "pad" else "–"
        soft = ("yes" if r["soft_labels"] else "no") if r["method"] == "pad" else "–"
        lines.append(f"| {r['variant']} | {r['method']} | {_experts_of(r, rows)} | {sel} | {soft} | {acc(r['accuracy'])} | "
                     f"{_versus(r, pad)} | {r['learned_lr']:.4f} | {r['seconds_per_iteration']:.2f} | {r['distill_seconds']:.0f} | "
                     f"{r['eval_seconds']:.0f} | {r['peak_memory_mb_process']:.0f} | {provenance(r, doc)} |")
    return "\n".join(lines)


def mtt_table(doc: dict) -> str:
    """benchmarks/mtt_cifar10.py: the experts, then MTT and DM accuracy, then the unroll probes."""
    rows = doc["results"]
    lines = [f"`{doc['command']}` (torch {doc['machine']['torch']}; each row's run in its last column)", ""]
    for r in (r for r in rows if r.get("job") == "experts"):
        lines += [f"Experts: {r['num_experts']} x {r['epochs']} epochs, test accuracy {r['accuracy_mean']:.2f} ± "
                  f"{r['accuracy_std']:.2f} %, {r['seconds_per_expert']:.0f} s per expert, {r['disk_mib']:.0f} MiB "
                  f"on disk ({provenance(r, doc)}).", ""]
    lines += ["| method | IPC | experts | settings besides the quick preset | iterations | test acc. % | starting images % | learned lr | s / iteration | distill s | run |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("job") not in ("mtt", "dm") or "error" in r:
            continue
        lr = f"{r['learned_lr']:.4f}" if r.get("learned_lr") else "–"
        settings = _overrides(r) or "–"
        lines.append(f"| {r['method']} | {r['ipc']} | {_experts_of(r, rows)} | {settings} | {r['iterations']} | {acc(r['accuracy'])} | "
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


def _run_of(run: dict | None) -> str:
    return f" — `{run['command']}` ({_stamp(run['date'], run['machine'])})" if run else ""


def applications_table(doc: dict) -> str:
    """benchmarks/applications_mnist.py: NAS proxy, cross-architecture, continual learning (each part
    with the command and run that produced it)."""
    lines = []
    nas = doc.get("nas")
    if nas:
        real = f"{nas['real_subset']} real images per class ({nas['real_images']})" if nas["real_subset"] else "all real images"
        lines += [f"Architecture-search proxy{_run_of(doc.get('nas_run'))}", "",
                  f"{len(nas['variants'])} ConvNet variants, validation accuracy ({nas['val_images']} images), "
                  f"{nas['runs']} run each; synthetic: the {nas['syn_images']} images x {nas['epochs_syn']} epochs "
                  f"({nas['aug_syn']}); real: {real} x {nas['epochs_real']} epochs ({nas['aug_real']}).", "",
                  "| variant | on the set % | rank | on real % | rank |", "|---|---|---|---|---|"]
        for v in nas["variants"]:
            lines.append(f"| {v['name']} | {v['syn_mean']:.1f} | {v['syn_rank']} | {v['real_mean']:.1f} | {v['real_rank']} |")
        lines += ["", f"Spearman {nas['spearman']:.3f} (p {nas['spearman_p']:.3g}), Kendall {nas['kendall']:.3f} "
                  f"(p {nas['kendall_p']:.3g}); training seconds: on the set {nas['syn_seconds']:.0f}, on the real subset "
                  f"{nas['real_seconds']:.0f} (on the whole training split at the same epochs, extrapolated: "
                  f"{nas.get('extrapolated_full_real_seconds', float('nan')):.0f})", ""]
    cross = doc.get("crossarch")
    if cross:
        lines += [f"Cross-architecture{_run_of(doc.get('crossarch_run'))}", "",
                  "| model | test acc. % | train s / run | train FLOPs / image |", "|---|---|---|---|"]
        for r in cross["models"]:
            lines.append(f"| {r['model']} | {r['mean']:.2f} ± {r['std']:.2f} (n={r['runs']}) | "
                         f"{r['train_seconds'] / max(1, r['runs']):.0f} | {r['flops']['train_per_image'] / 1e6:.0f} M |")
        lines.append("")
    cont = doc.get("continual")
    if cont:
        mems = list(cont)
        first = cont[mems[0]]
        lines += [f"Class-incremental learning{_run_of(doc.get('continual_run'))}", "",
                  f"{first['steps']} steps, IPC {first['ipc']}, {first['model']} from scratch per step, {first['epochs']} "
                  f"epochs, {first['aug']}, {first['runs']} run(s); test accuracy (%) on the classes seen so far.", "",
                  "| step | classes | " + " | ".join(mems) + " |", "|---|---|" + "---|" * len(mems)]
        for i, st in enumerate(first["per_step"]):
            seen = st["seen_classes"]
            lines.append(f"| {st['step']} | {seen[0]}–{seen[-1]} | "
                         + " | ".join(f"{cont[m]['per_step'][i]['mean']:.2f}" for m in mems) + " |")
        lines.append("| mean | | " + " | ".join(f"{cont[m]['average_accuracy']:.2f}" for m in mems) + " |")
    return "\n".join(lines)


def baseline_table(doc: dict) -> str:
    """benchmarks/baselines_mnist.py --full: the full-data baseline."""
    r = doc["result"]
    f = r["flops"]
    return "\n".join([
        f"`{doc['command']}` ({_stamp(doc['date'], doc['machine'])})", "",
        "| model | training images | epochs | test acc. % | train s / run | train FLOPs / image | test FLOPs / image |",
        "|---|---|---|---|---|---|---|",
        f"| {r['model']} | {r['train_images']:,} | {r['epochs']} | {r['test_mean']:.2f} ± {r['test_std']:.2f} (n={r['runs']}) | "
        f"{r['train_seconds'] / max(1, r['runs']):.0f} | {f['train_per_image'] / 1e6:.0f} M | {f['test_per_image'] / 1e6:.0f} M |",
    ])


def speed_table(doc: dict) -> str:
    """benchmarks/speed.py: seconds and FLOPs per iteration against the fp32 ceiling, bf16, the
    profile's top operators, and the evaluation timing."""
    c = doc["ceiling"]
    bf16 = f", bf16 {c['bf16_flops_per_s'] / 1e9:.0f}" if c.get("bf16_flops_per_s") else ""
    lines = [f"`{doc['command']}` ({_stamp(doc['date'], doc['machine'])}, load average at start "
             f"{doc['load_average_at_start'][0]:.2f}); ceiling: fp32 {c['fp32_flops_per_s'] / 1e9:.0f} GFLOP/s{bf16}"]
    if doc["methods"]:
        lines += ["", "| method | dataset | s / iteration | GFLOP / iteration | fraction of fp32 ceiling | ratio to ideal | "
                  "bf16 s / iteration (speed-up) | top operators (share of self time) |", "|---|---|---|---|---|---|---|---|"]
    for m in doc["methods"]:
        if "error" in m:
            lines.append(f"| {m['method']} | {m['dataset']} | failed: {m['error']} ||||||")
            continue
        b = m.get("bf16")
        b = f"{b['seconds_per_iteration']:.2f} ({b['speedup_vs_fp32']:.2f}x)" if b else "–"
        ops = ", ".join(f"{o['op']} {o['share_of_self_time']:.0%}" for o in (m.get("profile") or {}).get("top_ops", []))
        lines.append(f"| {m['method']} | {m['dataset']} | {m['seconds_per_iteration']:.2f} | "
                     f"{m['flops_per_iteration'] / 1e9:.0f} | {m['fraction_of_fp32_ceiling']:.0%} | "
                     f"{m['ratio_to_ideal']:.2f} | {b} | {ops or '–'} |")
    if doc.get("evaluation"):
        lines += ["", "| evaluation | runs x epochs | sequential s | stacked s | stacked / sequential | bf16 stacked s | "
                  "mean acc. fp32 → bf16 % | compiled sequential s (first run) | mean acc. eager → compiled % | "
                  "channels-last sequential s | mean acc. → channels-last % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in doc["evaluation"]:
            b, c, cl = e.get("bf16"), e.get("compile"), e.get("channels_last")
            bcells = (f"{b['train_seconds']:.1f} | {e['batched']['mean']:.2f} → {b['mean']:.2f}" if b else "– | –")
            ccells = (f"{c['train_seconds']:.1f} ({c['train_seconds_per_run'][0]:.1f}) | "
                      f"{e['sequential']['mean']:.2f} → {c['mean']:.2f}" if c else "– | –")
            clcells = (f"{cl['train_seconds']:.1f} | {e['sequential']['mean']:.2f} → {cl['mean']:.2f}" if cl else "– | –")
            lines.append(f"| {e['dataset']} ({e['test_images']} test images) | {e['runs']} x {e['epochs']} | "
                         f"{e['sequential']['train_seconds']:.1f} | {e['batched']['train_seconds']:.1f} | "
                         f"{e['speedup_train']:.2f}x | {bcells} | {ccells} | {clcells} |")
    if doc.get("mtt_memory"):
        lines += ["", *mtt_memory_lines(doc["mtt_memory"])]
    if doc.get("stopped"):
        lines += ["", f"({doc['stopped']})"]
    return "\n".join(lines)


def mtt_memory_lines(rows: list[dict]) -> list[str]:
    """speed.py --mtt-memory: per syn_steps, unroll and allocator, seconds and peak memory."""
    lines = ["| syn_steps | unroll | allocator | s / iteration | peak MiB above start | peak MiB in all | "
             "estimated MiB above start |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['syn_steps']} | {r['unroll']} | {r.get('allocator', '–')} |"
        if "seconds_per_iteration" not in r:
            lines.append(f"{head} {r.get('skipped') or 'failed: ' + str(r.get('error'))} ||||")
            continue
        total = f"{r['peak_mib']:,.0f}" if "peak_mib" in r else "–"
        lines.append(f"{head} {r['seconds_per_iteration']:.1f} | {r['peak_mib_above_start']:,.0f} | {total} | "
                     f"{r['estimated_mib']:,.0f} |")
    return lines


def precision_table(doc: dict) -> str:
    """benchmarks/precision.py: each method distilled in fp32 and in bf16 (same seed), evaluated in fp32."""
    rows = [r for r in doc["results"] if "error" not in r]
    lines = [f"`{doc['command']}` (torch {doc['machine']['torch']}; each row's run in its last column)", "",
             "| method | dataset | IPC | distillation precision | test acc. % (fp32 evaluation) | bf16 − fp32 (Welch p) | "
             "s / iteration | speed-up | run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        prec = r["config"]["precision"]
        ref = next((f for f in rows if f["method"] == r["method"] and f["dataset"] == r["dataset"]
                    and f["ipc"] == r["ipc"] and f["config"]["precision"] == "fp32"), None)
        speed = f"{ref['seconds_per_iteration'] / r['seconds_per_iteration']:.2f}x" if ref and r is not ref else "–"
        lines.append(f"| {r['method']} | {r['dataset']} | {r['ipc']} | {prec} | {acc(r['accuracy'])} | {_versus(r, ref)} | "
                     f"{r['seconds_per_iteration']:.2f} | {speed} | {provenance(r, doc)} |")
    lines += [f"| {r['spec']['method']} | failed: {r['error']} ||||||||" for r in doc["results"] if "error" in r]
    return "\n".join(lines)


def paper_protocol_table(doc: dict) -> str:
    """benchmarks/paper_protocol.py: each row at the paper's protocol beside the paper's number."""
    flip = {"digits": "dropped (digit rule)", "as_given": "kept (reference)", None: "–"}
    lines = [f"`{doc['command']}`{' (SMOKE: tiny budgets, numbers meaningless)' if doc.get('smoke') else ''}; "
             f"paper n = {doc.get('paper_n', 100)} models; each row's run in its last column", "",
             "| method | dataset | IPC | DSA flip | ours, test acc. % | paper % | ours − paper | Welch p | iterations | "
             "distillation h | evaluation s | peak MiB | threads, load | also measured | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if "error" in r:
            sp = r["spec"]
            lines.append(f"| {sp['method']} | {sp['dataset']} | {sp['ipc']} | {flip.get(sp.get('flip'), '?')} | "
                         f"failed: {r['error']} |||||||||||")
            continue
        p = r["welch"].get("p")
        secs = r.get("iteration_seconds_all_sessions") or r["distill_seconds"]
        load = r.get("loadavg_before") or [float("nan")]
        also = f"DC rotation as the reference (spline): {acc(r['accuracy_dc_spline'])}" if r.get("accuracy_dc_spline") else "–"
        lines.append(
            f"| {r['method']} | {r['dataset']} | {r['ipc']} | {flip.get(r.get('flip'), '?')} | {acc(r['accuracy'])} | "
            f"{r['paper']['mean']:.1f} ± {r['paper']['std']:.1f} | {r['difference']:+.2f} | "
            f"{'–' if p is None else f'{p:.2g}'} | {r['iterations']} | {secs / 3600:.2f} | {r['eval_seconds']:.0f} | "
            f"{r['peak_memory_mb']:.0f} | {r['torch_threads']}, {load[0]:.1f} | {also} | {provenance(r, doc)} |")
    return "\n".join(lines)


def dsa_gap_table(doc: dict) -> str:
    """benchmarks/dsa_gap_mnist.py: each 60-iteration set under both evaluation rules."""
    lines = [f"`{doc['command']}` (DSA, MNIST, IPC 1, paper preset for {_first(doc, 'iterations')} iterations; "
             "3 evaluation runs of 1,000 epochs per cell)", "",
             "| seed | flip while distilling | eval: flip dropped | eval: flip kept | s / iteration | run |",
             "|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if "error" in r:
            lines.append(f"| {r['spec']['seed']} | {r['spec']['flip']} | failed: {r['error']} ||||")
            continue
        ev = r["by_eval_rule"]
        lines.append(f"| {r['seed']} | {'kept' if r['flip_distill'] == 'as_given' else 'dropped'} | "
                     f"{acc(ev.get('digits'))} | {acc(ev.get('as_given'))} | {r['seconds_per_iteration']:.1f} | "
                     f"{provenance(r, doc)} |")
    return "\n".join(lines)


def soft_labels_table(doc: dict) -> str:
    """benchmarks/soft_labels.py: the teachers and baselines, then per set and protocol the
    accuracy, the random subset's, and DD-Ranking's scores (rows still to run are left out)."""
    rows = doc["results"]
    budgets = f"evaluation budget {doc.get('eval_budget')}" + (
        f", --short {doc['short_budget']}" if doc.get("short_budget") else "")
    lines = [f"`{doc['command']}` ({budgets}; each eval row names its own)", "",
             "| dataset | job | result | seconds | run |", "|---|---|---|---|---|"]
    for r in rows:
        if r.get("job") == "teacher":
            lines.append(f"| {r['dataset']} | teacher {r['model']} | test {r['test_accuracy']:.2f} %, validation "
                         f"{r['val_accuracy']:.2f} % | {r['seconds']:.0f} | {provenance(r, doc)} |")
        elif r.get("job") == "baseline":
            lines.append(f"| {r['dataset']} | full-data ConvNet, {r['epochs']} epochs | test {r['test_mean']:.2f} +- "
                         f"{r['test_std']:.2f} % | {r['train_seconds']:.0f} | {provenance(r, doc)} |")
        elif r.get("job") == "set":
            lines.append(f"| {r['dataset']} | {r['method']} set, {r['iterations']} iterations | | "
                         f"{r['distill_seconds']:.0f} | {provenance(r, doc)} |")
    evals = [r for r in rows if r.get("job") == "eval" and "scores" in r]
    if evals:
        lines += ["", "| dataset | method | protocol | budget | set % | random % | IOR | HLR | LRS | ARS |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in evals:
            s = r["scores"]
            lines.append(f"| {r['dataset']} | {r['method']} | {r['protocol']} | {budget_label(r.get('budget'))} | "
                         f"{acc(r['accuracy'])} | "
                         f"{r['random_mean']:.2f} | {s['ior']['mean']:+.2f} | {s['hlr']['mean']:+.2f} | "
                         f"{s['lrs']['mean']:.3f} | {s['ars']['mean']:.3f} |")
    return "\n".join(lines)


def datm_table(doc: dict) -> str:
    """benchmarks/datm.py: the experts, then per set its accuracy under its own labels and under
    hard labels (rows still to run are left out)."""
    rows = doc["results"]
    lines = [f"`{doc['command']}` (evaluation budget {doc.get('eval_budget')})", ""]
    for r in rows:
        if r.get("job") == "experts":
            lines += [f"Experts: {r['num_experts']} x {r['epochs']} epochs ({r['optimizer']['kind']}), {r['why']}", ""]
    evals = {(r["variant"], r["ipc"], r["protocol"]): r for r in rows if r.get("job") == "eval" and "accuracy" in r}
    lines += ["| set | IPC | iterations | skipped | loss first / last tenth | own labels % | hard labels % | distill s | run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("job") != "set" or "variant" not in r:
            continue
        own, hard = (evals.get((r["variant"], r["ipc"], p)) for p in ("own", "hard"))
        lines.append(f"| {r['variant']}{' (soft)' if r['soft_labels'] else ''} | {r['ipc']} | {r['iterations']} | "
                     f"{r['skipped_iterations']} | {r['loss_first_tenth']:.3f} / {r['loss_last_tenth']:.3f} | "
                     f"{acc(own['accuracy']) if own else '–'} | {acc(hard['accuracy']) if hard else '–'} | "
                     f"{r['distill_seconds']:.0f} | {provenance(r, doc)} |")
    return "\n".join(lines)


def _first(doc: dict, key: str):
    return next((r[key] for r in doc["results"] if key in r), "?")


def table(path: Path) -> str:
    doc = json.loads(path.read_text())
    special = {"budget": budget_table, "mtt_cifar10": mtt_table, "applications_mnist": applications_table,
               "baseline_mnist": baseline_table, "pad_cifar10": pad_table, "speed": speed_table,
               "precision": precision_table, "paper_protocol": paper_protocol_table, "dsa_gap_mnist": dsa_gap_table,
               "soft_labels": soft_labels_table, "datm": datm_table}
    if doc.get("benchmark") in special:
        return special[doc["benchmark"]](doc)
    rows = doc.get("results")
    if not rows or not all("config" in r or "error" in r for r in rows):
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


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(__doc__.strip())
        return 0
    for a in argv[1:]:
        if a.startswith("-"):
            return _error(f"unknown option {a}")
    paths = [Path(p) for p in argv[1:]] or sorted(RESULTS.glob("*.json"))
    tables = []
    for p in paths:  # every file read before anything is printed: one bad file, one error line
        try:
            tables.append((p, table(p)))
        except OSError as e:
            return _error(f"cannot read {p}: {e.strerror or e}")
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(f"{p} is not a benchmark results file (benchmarks/results/*.json)")
    for p, t in tables:
        print(f"### {p.stem}\n\n{t}\n")
    return 0


def _error(message: str) -> int:
    print(f"error: {message} (python benchmarks/summarize.py --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
