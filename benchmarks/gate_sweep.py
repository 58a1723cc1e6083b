"""Search the admission gate of `policies/gate.py` on many workloads outside the grid.

Every candidate (a `gate=` spec, e.g. `h4/t1/s2`) runs as `POLICY[gate=SPEC]` on each workload of
the grid's (GPUs, pending) points at every seed given (issue 12's grid uses seeds 0-2: never
here), side by side with POLICY alone. Printed per candidate: the met sum's change, the number of
workloads up and down, and the same by GPU count. Results are cached in a JSON file (by policy
name and workload), so a held-out check or a second pass reruns nothing.

    python benchmarks/gate_sweep.py --seeds 3-40 --candidates "h4/t1,h4/t1/s1,h6/t0.8/w0.5" --jobs 2
    python benchmarks/gate_sweep.py --seeds 41-50 --candidates "h4/t1/s1"   # held out
    python benchmarks/gate_sweep.py --policy cpsat --time-limit-ms 500 --deterministic --seeds 41-42 --candidates "h4/t1/s1"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(__file__))
import bound_grid  # noqa: E402  (the grid's workloads by point)
import grid  # noqa: E402

_LOADS: list = []


def seeds(text: str) -> list[int]:
    """`3-40,45` -> [3, ..., 40, 45]."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def name(policy: str, spec: str) -> str:
    if not spec:
        return policy
    return f"{policy[:-1]};gate={spec}]" if policy.endswith("]") else f"{policy}[gate={spec}]"


def _init(a: argparse.Namespace) -> None:
    global _LOADS
    _LOADS = [(k, inst) for k, inst, _ in bound_grid.points(a)]


def _run(job: tuple[str, int, float, bool]) -> tuple[str, str, int]:
    pol, i, limit, det = job
    k, inst = _LOADS[i]
    return pol, k, grid.run_policy(inst, pol, limit, det)["met"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", required=True, help="gate specs, comma-separated")
    ap.add_argument("--seeds", default="3-40", help="at every GPU count (the grid uses 0-2: refused)")
    for flag, default in (("--policy", "tetriserve"), ("--gpus", "16,32,64"), ("--pending", "8,32,64,128")):
        ap.add_argument(flag, default=default)  # the grid's points, 16-64 GPUs
    ap.add_argument("--size", type=float, default=0.15)
    ap.add_argument("--time-limit-ms", type=float, default=500.0)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--cache", default="gate_sweep.json")
    a = ap.parse_args()
    s = seeds(a.seeds)
    if set(s) & {0, 1, 2}:
        ap.error("seeds 0-2 are the grid's: tune elsewhere")
    pa = argparse.Namespace(gpus=a.gpus, pending=a.pending, seeds=",".join(map(str, s)), seed_gpus=a.gpus,
                            size=a.size, instances=None)
    _init(pa)
    keys = [k for k, _ in _LOADS]
    cache: dict[str, dict[str, int]] = json.load(open(a.cache)) if os.path.exists(a.cache) else {}
    tag = f"@{a.time_limit_ms:g}{'d' if a.deterministic else ''}" if not a.policy.startswith("tetriserve") else ""
    specs = [""] + [c.strip() for c in a.candidates.split(",") if c.strip()]
    names = [name(a.policy, c) for c in specs]
    todo = [(n, i, a.time_limit_ms, a.deterministic) for i, k in enumerate(keys) for n in names
            if k not in cache.get(n + tag, {})]  # workload by workload: a stopped run leaves pairs
    if todo:
        with Pool(a.jobs, _init, (pa,)) as pool:
            for n, k, met in pool.imap_unordered(_run, todo, chunksize=1 if a.jobs == 1 else 4):
                cache.setdefault(n + tag, {})[k] = met
                if a.policy != "tetriserve":  # slow runs: kept as they come
                    print(f"  {n} {k}: {met}", flush=True)
                    json.dump(cache, open(a.cache, "w"), indent=0, sort_keys=True)
        json.dump(cache, open(a.cache, "w"), indent=0, sort_keys=True)
    base = [cache[names[0] + tag][k] for k in keys]
    print(f"{len(keys)} workloads ({a.gpus} GPUs x {a.pending} pending x seeds {a.seeds}); {names[0]}: {sum(base)}")
    gpus = sorted({k.split("/")[0] for k in keys}, key=int)
    for n in names[1:]:
        m = [cache[n + tag][k] for k in keys]
        d = [x - y for x, y in zip(m, base)]
        by = " ".join(f"{g}: {sum(x for x, k in zip(d, keys) if k.split('/')[0] == g):+d} "
                      f"({sum(x > 0 for x, k in zip(d, keys) if k.split('/')[0] == g)}/"
                      f"{sum(x < 0 for x, k in zip(d, keys) if k.split('/')[0] == g)})" for g in gpus)
        print(f"{n}: {sum(m)} {sum(d):+d}  up {sum(x > 0 for x in d)} down {sum(x < 0 for x in d)}  | {by}", flush=True)


if __name__ == "__main__":
    main()
