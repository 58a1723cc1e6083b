"""Simulator speed on a 10,000-request workload on 8 GPUs (FLUX.1-dev on H100).

  .venv/bin/python benchmarks/simulator_speed.py [-n 10000] [--policies tetriserve,greedy,cpsat] [--profile]

Per policy: wall time, rounds, time per round, the policy's own share (sum of RoundPlan.solve_ms)
and the simulator's share (the rest: state building, plan checks, bookkeeping). --profile adds a
cProfile of the run (top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

from tetriopt.instance import parse_instance
from tetriopt.simulate import simulate
from tetriopt.workload import generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--mix", default="uniform")
    ap.add_argument("--policies", default="tetriserve,greedy,fixed-sp-2,rssp:256=1,512=1,1024=2,2048=8,cpsat")
    ap.add_argument("--time-limit-ms", type=float, default=200.0)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    t = time.perf_counter()
    inst = parse_instance(generate("flux.1-dev-h100", 8, a.n, a.rate, mix=a.mix, seed=0), name=f"speed{a.n}")
    print(f"workload: {a.n} requests, {a.rate}/min, {a.mix}, built in {time.perf_counter() - t:.2f} s")
    print(f"{'policy':<32s}{'wall s':>9s}{'rounds':>9s}{'us/round':>10s}{'policy s':>10s}{'policy %':>10s}"
          f"{'SLO %':>8s}{'fallbk':>8s}")
    pols = []  # "rssp:256=1,..." holds commas: split only before a letter
    for part in a.policies.split(","):
        if pols and pols[-1].startswith("rssp:") and part[:1].isdigit():
            pols[-1] += "," + part
        else:
            pols.append(part)
    for p in pols:
        opts = {"time_limit_ms": a.time_limit_ms} if p in ("cpsat", "pulp") else {}
        prof = cProfile.Profile() if a.profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        res = simulate(inst, p, **opts)
        if prof:
            prof.disable()
        wall = time.perf_counter() - t0
        solve = sum(r.solve_ms for r in res.rounds) / 1e3
        s = res.summary
        print(f"{p:<32s}{wall:9.2f}{s['rounds']:9d}{1e6 * wall / s['rounds']:10.0f}{solve:10.2f}"
              f"{100 * solve / wall:9.1f}%{100 * s['slo_attainment']:8.1f}{s['fallback_rounds']:8d}", flush=True)
        if prof:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
            print("\n".join(buf.getvalue().splitlines()[4:34]))


if __name__ == "__main__":
    main()
