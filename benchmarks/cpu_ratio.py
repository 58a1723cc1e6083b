"""Whole-simulation CPU of cpsat against tetriserve, side by side in one process, with met counts.

For each instance, each policy runs the whole simulation once (`tetriopt.solve`), timed with
`time.process_time` (this process's CPU, so other jobs on a shared machine weigh less than on
wall time; imports, CP-SAT's too, are paid once, before any timing). Printed per instance: met deadlines, CPU
seconds, cpsat's CPU over tetriserve's, the share of busy rounds CP-SAT decided, cpsat's decision
time (wall, from the round's snapshot to its plan) and how its rounds ended (early stops by rule,
proofs, limits, fallbacks).

    python benchmarks/cpu_ratio.py instances/flux-h100-skewed-slo1.0.json [...] [--time-limit-ms 500]

With `--repeat N` every policy runs N times per instance, the policies taking turns, and the CPU
columns are medians with the range (one run's CPU moves by 10% or more on a shared machine);
a met count that differs between runs (wall-clock limits) shows each, in order.

A policy may carry MipPolicy switches (`make_policy`'s `cpsat[rollout=0]`), to compare a speed-up against the same code without it in
one run: `--policies "cpsat,cpsat[symmetry=0;split=0],tetriserve"`.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time

import tetriopt


def run(inst, spec: str, limit_ms: float, deterministic: bool) -> tuple[dict, float, collections.Counter, list[float]]:
    pol = tetriopt.make_policy(spec, time_limit_ms=limit_ms, seed=0, workers=1, deterministic=deterministic)
    c0 = time.process_time()
    res = tetriopt.solve(inst, pol)
    cpu = time.process_time() - c0
    ends = collections.Counter(f"{r.status}" + (f" ({r.note})" if getattr(r, "note", "") else "")
                               for r in res.rounds if r.pending)
    return res.summary, cpu, ends, sorted(r.solve_ms for r in res.rounds if r.pending) or [0.0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instances", nargs="+")
    ap.add_argument("--time-limit-ms", type=float, default=500.0)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--policies", default="cpsat,tetriserve")
    ap.add_argument("--repeat", type=int, default=1, help="runs per policy, taking turns; CPU as median (min-max)")
    a = ap.parse_args()
    # CP-SAT's module is imported on the first search (about 0.25 s of CPU): paid here, not by the
    # first instance's cpsat run (a lone instance's ratio included it: skewed-slo1.2 1.12 vs 0.87 s)
    from ortools.sat.python import cp_model  # noqa: F401
    pols = a.policies.split(",")
    print(f"limit {a.time_limit_ms:g} ms, 1 worker, deterministic={a.deterministic}, load average {os.getloadavg()[0]:.2f}")
    print("| instance | " + " | ".join(f"met {p}" for p in pols) + " | " + " | ".join(f"CPU s {p}" for p in pols)
          + f" | CPU {pols[0]} / {pols[-1]} | {pols[0]} decided |")
    print("|---" * (2 * len(pols) + 3) + "|")
    for path in a.instances:
        inst = tetriopt.load_instance(path)
        runs: dict[str, list] = {p: [] for p in pols}
        for _ in range(max(1, a.repeat)):
            for p in pols:
                runs[p].append(run(inst, p, a.time_limit_ms, a.deterministic))
        out = {p: runs[p][0] for p in pols}
        cpu = {p: statistics.median(r[1] for r in runs[p]) for p in pols}

        def shown(p: str) -> str:
            c = sorted(r[1] for r in runs[p])
            return f"{cpu[p]:.2f}" + (f" ({c[0]:.2f}-{c[-1]:.2f})" if len(c) > 1 else "")
        first = out[pols[0]][2]
        busy = sum(first.values())
        decided = sum(v for k, v in first.items() if k.startswith(("OPTIMAL", "FEASIBLE")))
        print(f"| {inst.name} | " + " | ".join("/".join(dict.fromkeys(str(r[0]["met"]) for r in runs[p])) for p in pols) + " | "
              + " | ".join(shown(p) for p in pols)
              + f" | {cpu[pols[0]] / max(1e-3, cpu[pols[-1]]):.1f}x | {100 * decided / max(1, busy):.0f}% |", flush=True)
        ms = out[pols[0]][3]
        print(f"#   {pols[0]} decision ms p50/p99/max {ms[len(ms) // 2]:.1f}/{ms[min(len(ms) - 1, int(0.99 * len(ms)))]:.1f}/"
              f"{ms[-1]:.1f}")
        for k, v in first.most_common(8):
            print(f"#   {pols[0]} rounds {k}: {v}")
    print(f"# load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
