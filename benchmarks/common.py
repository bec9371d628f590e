"""Shared benchmark harness: run one distillation + evaluation per subprocess, collect JSON.

Each configuration runs in a fresh Python process so that peak memory (ru_maxrss on CPU,
max_memory_allocated on CUDA) belongs to that run alone. Results are written to
benchmarks/results/<name>.json together with the machine description and the command line.
"""
from __future__ import annotations

import ast
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

# Benchmarks call the Python API, so apply the allocator setting the CLI applies (perf.py), so that
# their timings are those a CLI user gets.
from datadistill import tune_allocator  # noqa: E402

ALLOCATOR_TUNED = tune_allocator()


# The harness's own options, valid for every script that runs through run_all or run_jobs.
HARNESS_USAGE = """
Options of every job-list benchmark (benchmarks/common.py):
  --list         print each job's index and name, run nothing
  --only I,J     run only these jobs (indices from --list), keep the other rows of the results file
  --resume       keep the finished rows of the results file, run the others
  --fresh        start over: the rows of an existing results file are replaced as the new ones finish
                 (without --resume, --only or --fresh a script refuses to touch a file that holds rows)
  --data-root D  the datasets folder (default $DATADISTILL_DATA, else ../shared/data)"""
HARNESS_FLAGS = {"--list", "--only", "--resume", "--fresh", "--data-root", "--one", "--help", "-h"}


def is_job_process(argv: list[str]) -> bool:
    """Whether this process is one job the harness started (`script --one JSON`), not a user's
    command: its options were checked by the parent."""
    return len(argv) > 2 and argv[1] == "--one"


def _usage_error(script: str, message: str) -> None:
    print(f"error: {message} (python benchmarks/{Path(script).name} --help lists its options)", file=sys.stderr)
    sys.exit(2)


def check_flags(argv: list[str]) -> None:
    """`--help` prints the script's docstring and the harness's options, then exits; any other
    `--flag` that neither the docstring nor the harness names ends the script with an `error:` line
    (status 2) before anything runs, so a misspelt option never starts hours of jobs without it.
    Called by run_all and run_jobs, and by a script's main before any work of its own."""
    if is_job_process(argv):
        return
    if "--one" in argv:
        _usage_error(argv[0], "--one JSON is how the harness starts one job; run jobs with --only I,J")
    doc = ast.get_docstring(ast.parse(Path(argv[0]).read_text())) or ""
    if "--help" in argv[1:] or "-h" in argv[1:]:
        print(doc + "\n" + HARNESS_USAGE)
        sys.exit(0)
    known = HARNESS_FLAGS | set(re.findall(r"--[a-z][a-z0-9-]*", doc))
    unknown = [a for a in argv[1:] if a.startswith("-") and not a.lstrip("-").replace(".", "").isdigit() and a not in known]
    if unknown:
        flag, _, value = unknown[0].partition("=")
        if value and flag in known:
            _usage_error(argv[0], f"write {flag} {value} (a space, not =)")
        _usage_error(argv[0], f"unknown option {unknown[0]}")


def data_root_arg(argv: list[str], required: bool = False) -> str:
    """The data root of a benchmark's command line: `--data-root DIR`, else $DATADISTILL_DATA, else
    ../shared/data beside the checkout. A folder named on the command line or in the environment
    that does not exist ends the script with an `error:` line; so does an absent default when
    `required` (a script that reads real data; smoke runs and embedded datasets need none)."""
    if "--data-root" in argv:
        i = argv.index("--data-root")
        if i + 1 >= len(argv):
            _usage_error(argv[0], "--data-root needs a folder")
        root, named = argv[i + 1], "--data-root"
    elif os.environ.get("DATADISTILL_DATA"):
        root, named = os.environ["DATADISTILL_DATA"], "$DATADISTILL_DATA"
    elif not required:
        return str(DEFAULT_DATA)
    else:
        root, named = str(DEFAULT_DATA), "the default data root"
    if not is_job_process(argv) and not Path(root).is_dir():
        _usage_error(argv[0], f"{named} {root} is not a folder; give the folder that holds the datasets")
    return root


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator_tuned": ALLOCATOR_TUNED,
        "commit": _commit(),
        **_cpu(),
    }


def _cpu() -> dict:
    """The CPU's model name and its native bf16 instructions (AVX-512 BF16, AMX): without them bf16
    matrix products are emulated and slower than fp32, so a bf16 speed figure means nothing apart
    from these (the machine of the project's sessions has changed between the two)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: the model as Python knows it, the instructions unknown
        return {"cpu": platform.processor() or None, "cpu_bf16_instructions": None}
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return {"cpu": model, "cpu_bf16_instructions": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16"))}


def _commit() -> str | None:
    """The git commit the benchmark ran from (with "+dirty" when the tree had local changes)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        # Results files a benchmark itself rewrites do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_one(spec: dict) -> dict:
    """Distill and evaluate one configuration in this process. `spec` keys: method, dataset, ipc,
    preset, overrides (dict), eval_runs, eval_init (bool), data_root, and optionally out: a run
    folder (relative paths under the checkout) that the distillation checkpoints into and resumes
    from, for rows of hours that may be interrupted (default: none, nothing written)."""
    import torch

    from datadistill.config import resolve_config
    from datadistill.evaluate import evaluate
    from datadistill.run import peak_memory_mb, prepare, run_distillation
    from datadistill.run.setup import load_data

    over = dict(spec.get("overrides", {}))
    over.setdefault("data_root", spec.get("data_root"))
    over["eval"] = {**over.get("eval", {}), "runs": 0}
    cfg = resolve_config(spec["method"], spec["dataset"], spec["ipc"], spec.get("preset", "quick"), **over)
    data = load_data(cfg, progress=False)
    out_dir = (REPO / spec["out"]) if spec.get("out") else None
    res = run_distillation(cfg, out_dir, data=data, progress=False, log=lambda m: print(m, file=sys.stderr))
    ev_kw = dict(model=cfg.eval.models[0], runs=spec.get("eval_runs", 3), epochs=cfg.eval.resolved_epochs(),
                 test=data.test, device=cfg.device, seed=cfg.seed, progress=False)
    t0 = time.perf_counter()
    ev = evaluate(res.synset, cfg.eval, **ev_kw)
    out = {
        "method": cfg.method, "dataset": cfg.dataset, "ipc": cfg.ipc, "preset": cfg.preset,
        "iterations": cfg.iterations, "distill_seconds": res.distill_seconds,
        "seconds_per_iteration": res.distill_seconds / cfg.iterations if cfg.iterations else None,
        "accuracy": {"mean": ev.mean, "std": ev.std, "runs": ev.runs, "accuracies": ev.accuracies},
        "eval": {"model": ev.model, "epochs": ev.epochs, "aug": ev.aug, "lr": ev.lr,
                 "train_seconds_per_run": ev.train_seconds / ev.runs,
                 "seconds_per_run_with_test": (time.perf_counter() - t0) / ev.runs, "flops": ev.flops},
        "config": cfg.to_dict(),
    }
    if spec.get("eval_init", True):
        syn0 = prepare(cfg, data=data, progress=False).syn0  # the starting set the run began from
        ev0 = evaluate(syn0, cfg.eval, **ev_kw)
        out["init_accuracy"] = {"mean": ev0.mean, "std": ev0.std, "runs": ev0.runs, "accuracies": ev0.accuracies}
    out["peak_memory_mb"] = peak_memory_mb(torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")))
    return out


def command_line(argv: list[str]) -> str:
    """The command that produced a results file, as README quotes it."""
    return "python " + " ".join(["benchmarks/" + Path(argv[0]).name, *argv[1:]])


def _portable(value):
    """A spec value with checkout-specific paths removed: an absolute path into some checkout's
    runs/ folder becomes "runs/..." (so rows made from another worktree or clone still match)."""
    if isinstance(value, str) and os.path.isabs(value) and "/runs/" in value:
        return "runs/" + value.split("/runs/", 1)[1]
    return value


def spec_key(spec: dict) -> str:
    """What identifies a configuration across runs: the spec without machine-specific paths (the
    data root is dropped, run folders are taken relative to the checkout's runs/)."""
    return json.dumps({k: _portable(v) for k, v in spec.items() if k != "data_root"}, sort_keys=True)


def _previous_rows(dest: Path) -> dict[str, dict]:
    """Successful rows of an earlier results file, keyed by spec, each carrying the date, machine and
    note of the run that produced it (so rows from different runs stay attributable)."""
    if not dest.exists():
        return {}
    doc = json.loads(dest.read_text())
    rows = {}
    for r in doc.get("results", []):
        if "error" in r or "spec" not in r:
            continue
        r.setdefault("date", doc.get("date"))
        r.setdefault("machine", doc.get("machine"))
        if doc.get("note"):
            r.setdefault("note", doc["note"])
        rows[spec_key(r["spec"])] = r
    return rows


def _run_list(name: str, specs: list[dict], argv: list[str], *, label, report, dest: Path, extra=None) -> Path:
    """The loop behind run_all and run_jobs: each spec in a subprocess (`python this_script --one
    JSON`), the results file rewritten (atomically) after each one.

    `--resume` keeps the finished rows of the existing file and runs the others; `--only I,J` runs
    only those spec indices (0-based) and keeps the other rows. With either, rows of jobs this plan
    does not hold (another budget's, a job since renamed) stay in the file after this plan's rows,
    never dropped: only `--fresh` discards measured rows. With either, the file is re-read
    before each write, so two processes running different rows of one script both land in it.
    Every new row records its spec, date, machine (commit, threads) and wall seconds."""
    if "--list" in argv:
        for i, spec in enumerate(specs):
            print(f"{i:4d}  {label(spec)}")
        sys.exit(0)
    only = _only(argv, len(specs))
    merge = "--resume" in argv or only is not None
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = command_line(argv)
    kept = _previous_rows(dest) if merge else {}
    if not merge and "--fresh" not in argv and dest.exists():
        _refuse_overwrite(argv[0], dest)
    done: dict[str, dict] = {}
    planned = {spec_key(s) for s in specs}  # rows of other keys (another plan's: --short, --smoke...) stay
    this_machine = machine()  # the same for every row of this process
    for i, spec in enumerate(specs):
        key = spec_key(spec)
        if (only is not None and i not in only) or (only is None and key in kept):
            if key in kept:
                print(f"[{time.strftime('%H:%M:%S')}] {label(spec)}: kept from {kept[key].get('date')}", file=sys.stderr, flush=True)
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {label(spec)} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, argv[0], "--one", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            done[key] = {"spec": spec, "error": f"exit status {proc.returncode}"}
        else:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(spec=spec, date=time.strftime("%Y-%m-%d %H:%M"), machine=this_machine,
                     job_wall_seconds=time.perf_counter() - t0)
            done[key] = r
            report(r)
        print(f"    done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        on_disk = _previous_rows(dest) if merge else {}
        rows = [r for r in (done.get(spec_key(s)) or on_disk.get(spec_key(s)) for s in specs) if r]
        rows += [r for k, r in on_disk.items() if k not in planned]
        doc = {"benchmark": name, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": this_machine,
               **(extra(rows) if extra else {}), "results": rows}
        write_atomic(dest, doc)
    print(dest)
    return dest


def _refuse_overwrite(script: str, dest: Path) -> None:
    """A plain run would replace a results file's rows, hours of work, one finished job at a time."""
    try:
        doc = json.loads(dest.read_text())
        rows, date = len(doc.get("results", [])), doc.get("date", "an earlier run")
    except (OSError, ValueError, AttributeError):
        rows, date = None, None
    if rows == 0:
        return
    held = f"{rows} rows (last written {date})" if rows is not None else "something that is not a results file"
    _usage_error(script, f"{dest} already holds {held}; --resume keeps them and runs the missing ones, "
                         f"--only I,J reruns some, --fresh starts over")


def _only(argv: list[str], n: int) -> set[int] | None:
    """The job indices of `--only I,J,...`, each checked against the n jobs of the list."""
    if "--only" not in argv:
        return None
    i = argv.index("--only")
    value = argv[i + 1] if i + 1 < len(argv) else ""
    try:
        only = {int(v) for v in value.split(",")}
    except ValueError:
        _usage_error(argv[0], f"--only takes job indices separated by commas, got {value!r}")
    outside = sorted(j for j in only if not 0 <= j < n)
    if outside:
        _usage_error(argv[0], f"--only {outside[0]}: this benchmark has jobs 0 to {n - 1} (--list names them)")
    return only


def write_atomic(dest: Path, doc: dict) -> None:
    """Write `doc` as JSON to `dest` through a temporary file, so a reader never sees half a file."""
    tmp = dest.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(dest)


def update_keys(dest: Path, updates: dict) -> dict:
    """Re-read `dest` (if any), set `updates` on it and write it back atomically: a results file
    whose parts are written by different processes keeps every part. Returns the written document."""
    doc = json.loads(dest.read_text()) if dest.exists() else {}
    doc.update(updates)
    write_atomic(dest, doc)
    return doc


def run_all(name: str, specs: list[dict], argv: list[str]) -> Path:
    """Distil + evaluate each spec (run_one) in its own process; write results/<name>.json.
    Options as in `_run_list` (--resume, --only)."""
    check_flags(argv)
    if is_job_process(argv):
        print(json.dumps(run_one(json.loads(argv[2]))))
        sys.exit(0)
    for spec in specs:
        spec.setdefault("data_root", os.environ.get("DATADISTILL_DATA", str(DEFAULT_DATA)))

    def report(r):
        init = r.get("init_accuracy", {}).get("mean")
        per_it = f"{r['seconds_per_iteration']:.2f} s/it, " if r["seconds_per_iteration"] is not None else ""
        print(f"    {r['accuracy']['mean']:.2f} +- {r['accuracy']['std']:.2f} % (init {init}) "
              f"{per_it}{r['distill_seconds']:.0f} s", file=sys.stderr, flush=True)

    return _run_list(name, specs, argv, dest=RESULTS / f"{name}.json", report=report,
                     label=lambda s: f"{s['method']} {s['dataset']} ipc{s['ipc']} {s.get('overrides') or ''}".strip())


def rss_mb() -> float:
    """Peak resident memory of this process, MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jobs(name: str, jobs: list[dict], handlers: dict, argv: list[str], *, label_keys: tuple[str, ...],
             dest: Path | None = None, extra=None) -> Path:
    """Run each job dict (dispatched on job["job"] to `handlers`) in its own process and write
    `dest` (default results/<name>.json); `extra(rows)` adds fields to the document. Options as in
    `_run_list` (--resume, --only), so a run of hours can be split over sessions."""
    check_flags(argv)
    if is_job_process(argv):
        job = json.loads(argv[2])
        print(json.dumps(handlers[job["job"]](job)))
        sys.exit(0)

    def report(r):
        if "accuracy" in r:
            a = r["accuracy"]
            print(f"    {a['mean']:.2f} +- {a['std']:.2f} % ({a['runs']} runs)", file=sys.stderr, flush=True)

    return _run_list(name, jobs, argv, dest=dest or RESULTS / f"{name}.json", extra=extra, report=report,
                     label=lambda j: " ".join(f"{k}={j[k]}" for k in label_keys if k in j))


def results_file(name: str, argv: list[str]) -> Path:
    """results/<name>.json, or results/<name>_smoke.json with --smoke (a smoke run never overwrites
    the measured results)."""
    return RESULTS / f"{name}{'_smoke' if '--smoke' in argv else ''}.json"


def save_figure(fig, dest: Path) -> Path:
    """Lay out, write (PNG, 100 dpi) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)
    return dest


def redraw(plot, dest: Path) -> Path:
    """`plot(doc, png)` of the results file `dest`, the PNG beside it; prints its path."""
    png = plot(json.loads(Path(dest).read_text()), Path(dest).with_suffix(".png"))
    print(png)
    return png


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed_steps(d, first: int, iters: int, device) -> list[float]:
    """Seconds of `iters` outer iterations of the distiller `d`: iterations first, first + 1, ..."""
    secs = []
    for it in range(first, first + iters):
        t0 = time.perf_counter()
        d.step(it)
        sync(device)
        secs.append(time.perf_counter() - t0)
    return secs
