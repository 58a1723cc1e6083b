"""cpsat with and without the forecast admission of wide requests (policies/horizon.py), side by
side on the same workloads, on CP-SAT's deterministic clock (met counts independent of load).

    python benchmarks/horizon_ab.py instances/flux-h100-*.json [--time-limit-ms 500] [--jobs 2]
    python benchmarks/horizon_ab.py --grid 8:309.5,16:399.5 --size 0.3 [--seeds 0,1]

`--grid G:RATE` uses benchmarks/grid.py's workloads (FLUX on H100, uniform, SLO 1.0).
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool

import tetriopt

sys.path.insert(0, os.path.dirname(__file__))
from grid import workload  # noqa: E402


def run(args) -> tuple[str, bool, int, float, int]:
    inst, on, limit = args
    pol = tetriopt.make_policy("cpsat", time_limit_ms=limit, seed=0, workers=1, deterministic=True, forecast=on)
    s = tetriopt.solve(inst, pol).summary
    return inst.name, on, s["met"], s["gpu_hours"], len(inst.requests)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instances", nargs="*")
    ap.add_argument("--grid", default="")
    ap.add_argument("--size", type=float, default=0.3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--time-limit-ms", type=float, default=500.0)
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args()
    insts = [tetriopt.load_instance(p) for p in a.instances]
    for point in filter(None, a.grid.split(",")):
        g, rate = point.split(":")
        insts += [workload(int(g), float(rate), int(s), a.size) for s in a.seeds.split(",")]
    print(f"cpsat, {a.time_limit_ms:g} ms deterministic, 1 worker: met (GPU-h per met, milli) with / without the forecast")
    print("| workload | n | with forecast | without |")
    print("|---|---|---|---|", flush=True)
    with Pool(a.jobs) as pool:
        for i in insts:  # one row at a time, both variants in parallel
            (_, _, m1, g1, n), (_, _, m0, g0, _) = pool.map(run, [(i, True, a.time_limit_ms), (i, False, a.time_limit_ms)])
            print(f"| {i.name} | {n} | {m1} ({1e3 * g1 / max(1, m1):.3f}) | {m0} ({1e3 * g0 / max(1, m0):.3f}) |", flush=True)


if __name__ == "__main__":
    main()
