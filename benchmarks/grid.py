"""The scheduling grid of issue 12, every policy side by side on the very same workloads.

For each cluster size G and pending-backlog target P, `tetriopt workload --gpus G -n N --rate R
--seed S` (FLUX.1-dev on H100, uniform mix, SLO scale 1.0) with the rate R at which the median
number of pending requests under `tetriserve` is about P (table RATES, from `--calibrate`), and
N = 2.25 R (2.25 minutes of arrivals, as in the issue). `--load L` instead sets R to L times the
cluster's capacity (the rate whose GPU-time at each request's cheapest degree fills every GPU).

Printed per configuration: met deadlines of each policy and the bound (`tetriopt bound`), GPU-hours
per met request, cpsat's decision ms p50/p99 (from the round's snapshot to its plan), the share
of rounds CP-SAT decided (OPTIMAL/FEASIBLE, not a fallback), and cpsat's whole-simulation CPU
time over tetriserve's. Then, over the grid: where cpsat is below the strongest tetriserve, and the
mean share of the gap between the strongest tetriserve and the bound that cpsat closes.

    python benchmarks/grid.py [--gpus 8,16,32,64] [--pending 8,32,64,128] [--seeds 0] [--size 1.0]
                              [--time-limit-ms 500] [--bound-s 60] [--jobs 1] [--json FILE]
    python benchmarks/grid.py --seeds 0,1,2 --seed-gpus 8,64 --deterministic --size 0.2   # issue 12's grid
    python benchmarks/grid.py --load 3,5 --time-limit-ms 180 --gpus 8
    python benchmarks/grid.py --calibrate --gpus 16 --pending 32   # print the rate for a target

`--size` scales N (0.25: a quick look; the issue's figures are at 1.0). Wall-clock figures depend on
the machine and on what else runs: compare policies within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from multiprocessing import Pool

import tetriopt
from tetriopt.bound import upper_bound
from tetriopt.workload import TARGETS_MS, generate

MODEL = "flux.1-dev-h100"
POLICIES = ("cpsat", "tetriserve", "tetriserve-stepgain")
# (GPUs, pending target) -> requests per minute; the first six are the issue's, the rest from
# --calibrate (tetriserve's median pending on seed 0 at N = 2.25 R)
RATES = {(8, 10): 82.2, (8, 33): 142.2, (8, 109): 309.5, (16, 104): 399.5, (32, 28): 314.6, (64, 54): 642.2,
         (8, 8): 64.2, (8, 32): 133.9, (8, 64): 208.9, (8, 128): 297.1,
         (16, 8): 136.0, (16, 32): 206.4, (16, 64): 256.4, (16, 128): 389.0,
         (32, 8): 213.9, (32, 32): 295.9, (32, 64): 367.4, (32, 128): 499.3,
         (64, 8): 279.4, (64, 32): 529.7, (64, 64): 630.7, (64, 128): 765.7}


def capacity_rate(gpus: int, steps: int = 20) -> float:
    """Requests per minute whose GPU-time at each size's cheapest useful degree fills the cluster."""
    prof = tetriopt.load_profile(MODEL)
    sizes = list(TARGETS_MS["flux.1-dev"])
    per = [min(k * prof.step_us(s, s, k) for k in prof.degrees if k <= gpus) * steps for s in sizes]
    return gpus * 60e6 / statistics.mean(per)


def nearest(gpus: int, pending: float) -> tuple[int, int] | None:
    """The calibrated (GPUs, pending) point of RATES nearest to `pending` on `gpus` (None: none)."""
    return min((k for k in RATES if k[0] == gpus), key=lambda k: abs(k[1] - pending), default=None)


def workload(gpus: int, rate: float, seed: int, size: float):
    n = max(40, round(2.25 * rate * size))
    return tetriopt.parse_instance(generate(MODEL, gpus, n, rate, seed=seed), name=f"g{gpus}-r{rate:g}-s{seed}")


def run_policy(inst, policy: str, limit_ms: float, deterministic: bool = False, solver_seed: int = 0) -> dict:
    """One policy's whole simulation; `policy` may carry MipPolicy switches (policies.base.switches)
    (`cpsat[rollout=0]`: an ablation side by side with the default); `solver_seed`: CP-SAT's."""
    pol = tetriopt.make_policy(policy, time_limit_ms=limit_ms, seed=solver_seed, workers=1, deterministic=deterministic)
    c0 = time.process_time()
    res = tetriopt.solve(inst, pol)
    cpu = time.process_time() - c0
    s = res.summary
    busy = [r for r in res.rounds if r.pending]
    decided = sum(r.status in ("OPTIMAL", "FEASIBLE") for r in busy)
    ms = sorted(r.solve_ms for r in busy) or [0.0]
    return {"policy": policy, "met": s["met"], "gpu_hours": s["gpu_hours"], "cpu_s": round(cpu, 3),
            "decision_ms_p50": round(statistics.median(ms), 2),
            "decision_ms_p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            "decision_ms_max": round(ms[-1], 2),
            "solver_decided": round(decided / len(busy), 4) if busy else 1.0,
            "pending_p50": statistics.median([r.pending for r in res.rounds]) if res.rounds else 0}


def _job(args):
    kind, inst, arg, limit, det, solver_seed = args
    if kind == "bound":
        b = upper_bound(inst, time_limit_s=arg)
        return {"policy": "bound", "met": b.met_bound, "status": b.status, "methods": b.methods}
    return run_policy(inst, arg, limit, det, solver_seed)


def calibrate(gpus: int, target: float, seed: int = 0, size: float = 1.0) -> float:
    """Bisection on the rate for tetriserve's median pending (monotone enough in practice)."""
    lo, hi = 1.0, 40.0 * gpus * 8
    for _ in range(14):
        mid = (lo * hi) ** 0.5
        pend = run_policy(workload(gpus, mid, seed, size), "tetriserve", 0)["pending_p50"]
        lo, hi = (mid, hi) if pend < target else (lo, mid)
        if hi / lo < 1.03:
            break
    return round((lo * hi) ** 0.5, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", default="8,16,32,64")
    ap.add_argument("--pending", default="8,32,64,128")
    ap.add_argument("--load", default=None, help="capacity multiples instead of pending targets, e.g. 3,5")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--seed-gpus", default=None,
                    help="run seeds after the first only at these GPU counts (issue 12: 8,64)")
    ap.add_argument("--size", type=float, default=1.0)
    ap.add_argument("--time-limit-ms", type=float, default=500.0)
    ap.add_argument("--deterministic", action="store_true",
                    help="CP-SAT on its deterministic clock: met counts independent of the machine's load")
    ap.add_argument("--bound-s", type=float, default=60.0, help="0: no bound")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--solver-seed", type=int, default=0, help="CP-SAT's random seed (how much a changed search moves a point)")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    gpus = [int(g) for g in a.gpus.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.calibrate:
        for g in gpus:
            for p in map(float, a.pending.split(",")):
                print(f"({g}, {p:g}): {calibrate(g, p, seeds[0], a.size)},", flush=True)
        return
    configs = []
    for g in gpus:
        if a.load:
            configs += [(g, f"{x:g}x", capacity_rate(g) * x) for x in map(float, a.load.split(","))]
        else:
            for p in map(int, a.pending.split(",")):
                near = nearest(g, p)
                if near is None or abs(near[1] - p) > max(4, p // 4):
                    print(f"# no calibrated rate for {g} GPUs at {p} pending: run --calibrate; skipped")
                    continue
                configs.append((g, str(near[1]), RATES[near]))
    policies = a.policies.split(",")
    jobs, keys = [], []
    for g, label, rate in configs:
        for seed in seeds:
            if seed != seeds[0] and a.seed_gpus and g not in map(int, a.seed_gpus.split(",")):
                continue
            inst = workload(g, rate, seed, a.size)
            for p in policies:
                jobs.append(("policy", inst, p, a.time_limit_ms, a.deterministic, a.solver_seed))
                keys.append((g, label, rate, seed, len(inst.requests)))
            if a.bound_s > 0:
                jobs.append(("bound", inst, a.bound_s, 0, False, 0))
                keys.append((g, label, rate, seed, len(inst.requests)))
    with Pool(a.jobs) if a.jobs > 1 else _Serial() as pool:
        outs = []
        for k, o in zip(keys, pool.imap(_job, jobs)):  # progress on stderr, in case a long run is cut short
            outs.append(o)
            print(json.dumps({"gpus": k[0], "config": k[1], "seed": k[3], "n": k[4], **o}), file=sys.stderr, flush=True)
    rows: dict[tuple, dict] = {}
    for k, o in zip(keys, outs):
        rows.setdefault(k, {})[o["policy"]] = o
    print(f"FLUX.1-dev on H100, uniform mix, SLO 1.0, limit {a.time_limit_ms:g} ms"
          f"{' (deterministic)' if a.deterministic else ''}, 1 worker, size {a.size:g}")
    ts_names = [p for p in policies if p.startswith("tetriserve")]
    head = ["GPUs", "load" if a.load else "pending", "seed", "n", "rate", "p50 pend", *[f"met {p}" for p in policies],
            "bound", "GPU-h/met cpsat", "GPU-h/met ts", "cpsat ms p50/p99/max", "CP-SAT decided", "CPU x ts"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    closed, below = [], []
    for (g, label, rate, seed, n), r in rows.items():
        c, ts = r.get("cpsat"), r.get("tetriserve")
        best_ts = max((r[p]["met"] for p in ts_names if p in r), default=None)
        bound = r.get("bound", {}).get("met")
        if c and best_ts is not None:
            if c["met"] < best_ts:
                below.append(f"{g} GPUs / {label}: {c['met']} vs {best_ts}")
            if bound is not None and bound > best_ts:
                closed.append((c["met"] - best_ts) / (bound - best_ts))
        per = lambda x: f"{x['gpu_hours'] / max(1, x['met']) * 1e3:.3f}" if x else "-"  # noqa: E731
        cells = [g, label, seed, n, f"{rate:.1f}", (ts or c or {}).get("pending_p50", "-"),
                 *[r[p]["met"] if p in r else "-" for p in policies], bound if bound is not None else "-",
                 per(c), per(ts),
                 f"{c['decision_ms_p50']:.0f}/{c['decision_ms_p99']:.0f}/{c['decision_ms_max']:.0f}" if c else "-",
                 f"{100 * c['solver_decided']:.0f}%" if c else "-",
                 f"{c['cpu_s'] / max(1e-3, ts['cpu_s']):.1f}" if c and ts else "-"]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    print("GPU-h/met in milli-GPU-hours per met request.")
    if closed:
        print(f"gap between the strongest tetriserve and the bound closed by cpsat: mean {100 * statistics.mean(closed):.0f}% "
              f"over {len(closed)} configurations")
    print("cpsat below the strongest tetriserve: " + ("; ".join(below) if below else "nowhere"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"gpus": k[0], "config": k[1], "rate": k[2], "seed": k[3], "n": k[4], **v}
                       for k, r in rows.items() for v in r.values()], f, indent=1)


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, xs):
        return (fn(x) for x in xs)


if __name__ == "__main__":
    main()
