"""DD-Ranking's scores of a distilled set (NUS-HPC-AI-Lab/DD-Ranking, its README and
ddranking/metrics/): what a set adds over a random real subset of the same size and class
balance, under the same protocol.

- HLR, hard-label recovery = acc(full real data, hard labels) - acc(set, hard labels);
- IOR, improvement over random = acc(set) - acc(random subset), both under the set's protocol;
- LRS, label-robust score = (e^a - e^-1) / (e - e^-1) with a = w * IOR - (1 - w) * HLR;
- ARS, augmentation-robust score, likewise with a = w * (acc(set) - acc(random)) with augmentation
  + (1 - w) * (the same difference without augmentation).

Accuracies enter the exponentials as fractions in [0, 1]: then a is in [-1, 1] and the score in
[0, 1] (1 for a = 1, 0 for a = -1, 0.27 for a = 0). DD-Ranking's code computes the differences in
percent (``1.00 * (acc_a - acc_b)`` of accuracies in percent), which inside e^a would make the
score saturate (a = 20 points gives e^20); we divide by 100 first, and print the raw differences
(percentage points) beside the scores, so either reading can be checked.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

W = 0.5


def squash(a: float) -> float:
    """(e^a - e^-1) / (e - e^-1): [-1, 1] onto [0, 1]."""
    return (math.exp(a) - math.exp(-1)) / (math.e - math.exp(-1))


def hlr(full_hard: float, set_hard: float) -> float:
    """Hard-label recovery in percentage points (accuracies in percent)."""
    return full_hard - set_hard


def ior(set_acc: float, random_acc: float) -> float:
    """Improvement over random in percentage points."""
    return set_acc - random_acc


def lrs(ior_points: float, hlr_points: float, w: float = W) -> float:
    """Label-robust score from IOR and HLR given in percentage points."""
    return squash(w * ior_points / 100 - (1 - w) * hlr_points / 100)


def ars(gain_with_aug: float, gain_without_aug: float, w: float = W) -> float:
    """Augmentation-robust score from the gains over random (percentage points) with and without
    augmentation."""
    return squash(w * gain_with_aug / 100 + (1 - w) * gain_without_aug / 100)


def summarize(per_run: list[dict]) -> dict:
    """Mean and std (population, as the evaluations) of every score over the runs."""
    keys = per_run[0].keys() if per_run else []
    return {k: {"mean": float(np.mean([r[k] for r in per_run])), "std": float(np.std([r[k] for r in per_run]))}
            for k in keys}


def rank_scores(syn, protocol, model: str, full_hard: float, *, test, train, val=None, device="auto", seed: int = 0,
                progress: bool = False, model_args: dict | None = None, cache: str | Path | None = None) -> dict:
    """HLR, IOR, LRS and ARS of `syn` under `protocol` for network `model`, per evaluation run
    (run r of the set against run r of the random subset: the same seeds) and as mean +- std.
    `full_hard`: the accuracy (percent) of `model` trained on the full training split with hard
    labels (`datadistill baseline`). Evaluations: the set and a random subset (same size and class
    balance, `evaluate.random_real_subset`) under the protocol, with and without augmentation; the
    set with hard labels (the protocol with labels hard, cross-entropy, no mixing). Where two of
    these protocols are equal (a hard-label protocol with augmentation is its own hard and
    augmented variant) the evaluation runs once: evaluations are deterministic under the seed.
    `cache`: a folder where each evaluation's result is written when it ends and read back by a
    later call with the same images, protocol, network and seed, so that a computation of hours
    cut off part-way continues from the evaluations it finished."""
    from .evaluate import EvalResult, evaluate, random_real_subset
    from .fileio import write_json

    rand = random_real_subset(syn, train)
    kw = dict(model=model, test=test, val=val, device=device, seed=seed, progress=progress, model_args=model_args)
    on = protocol if protocol.aug != "none" or protocol.mix != "none" else replace(protocol, aug="dsa")
    off = replace(protocol, aug="none", mix="none")
    hard = replace(protocol, labels="hard", loss="ce", mix="none", teacher=None)
    done: list[tuple[str, object, object]] = []  # (which set, protocol, result): an equal protocol runs once

    def run(which: str, p):
        if p.labels == "auto" and (which == "random" or not syn.soft):
            p = replace(p, labels="hard")  # a hard-label set's own labels are its hard labels
        for w, q, res in done:
            if w == which and q == p:
                return res
        images = syn if which == "set" else rand
        file = _cache_file(cache, which, images, p, model, model_args, seed) if cache is not None else None
        if file is not None and file.is_file():
            res = EvalResult(**json.loads(file.read_text())["result"])
        else:
            res = evaluate(images, p, **kw)
            if file is not None:
                write_json(file, {"which": which, "protocol": asdict(p), "model": model, "seed": seed,
                                  "result": res.to_dict()})
        done.append((which, p, res))
        return res

    runs = {
        "set": run("set", protocol), "random": run("random", protocol), "set_hard": run("set", hard),
        "set_aug": run("set", on), "random_aug": run("random", on),
        "set_noaug": run("set", off), "random_noaug": run("random", off),
    }
    per_run = []
    for r in range(protocol.runs):
        acc = {k: v.accuracies[r] for k, v in runs.items()}
        h, i = hlr(full_hard, acc["set_hard"]), ior(acc["set"], acc["random"])
        ga, gn = acc["set_aug"] - acc["random_aug"], acc["set_noaug"] - acc["random_noaug"]
        per_run.append({"hlr": h, "ior": i, "lrs": lrs(i, h), "gain_aug": ga, "gain_noaug": gn, "ars": ars(ga, gn)})
    return {"model": model, "protocol": protocol.protocol, "full_hard_accuracy": full_hard,
            "accuracies": {k: v.accuracies for k, v in runs.items()}, "per_run": per_run, **summarize(per_run),
            "w": W, "fractions_in_exponent": True}


def _cache_file(cache, which: str, images, protocol, model: str, model_args, seed: int) -> Path:
    """rank_scores' file for one evaluation: named by what decides its result (the images, their
    labels, learned lr and ZCA, the protocol's settings, the network and the seed)."""
    h = hashlib.sha256()
    for t in (images.images, images.labels, *(images.zca or {}).values()):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([asdict(protocol), model, model_args or {}, seed, images.lr, str(images.spec)],
                        sort_keys=True, default=str).encode())
    return Path(cache) / f"{which}-{h.hexdigest()[:20]}.json"
