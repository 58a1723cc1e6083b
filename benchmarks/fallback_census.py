"""Why cpsat's FALLBACK rounds fell back, on the paper's workloads (docs/evaluation.md, A-D).

A round counts as FALLBACK in `fallback_rounds` either when the rollout check ran TetriServe's plan
after CP-SAT had decided the round (`plan.rollout_choice`: the note starts with
`plan.ROLLOUT_CHOICE`; the summary's `rollout_rounds`), or when a heuristic answered because the
solver did not (time limit, no solution, an error). This runs a policy on each workload of the
given sweep exactly as `paper_eval.py` does (`bench.bench_policy`: TetriServe's model, no
batching, no immediate starts) and prints per workload the met count, the FALLBACK rounds, how
many are the rollout's, and every other one with its round, status and note; then the totals.

    python benchmarks/fallback_census.py --mix uniform,skewed --slo-scales 1.0,1.1,1.2,1.5 \
        --deterministic                                    # section A (B: --slo-scales 1.0
                                                           # --rates 6,9,12,15,18; D: --mix uniform
                                                           # --slo-scales 1.0 --round-ms 600,900,1800)
    python benchmarks/fallback_census.py --grid 32/32/0,32/64/0 --time-limit-ms 500 --deterministic
        # issue 12's grid points GPUs/pending/seed (grid.py's workloads at --size, its policy set-up)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import tetriopt
from tetriopt import bench as B
from tetriopt.plan import PlanStatus, rollout_choice
from tetriopt.simulate import simulate


def census(res) -> tuple[int, list]:
    """(rollout rounds, the other FALLBACK rounds as (round, status, note))."""
    fb = [r for r in res.rounds if r.status == PlanStatus.FALLBACK]
    other = [(r.round, str(r.status), r.note) for r in fb if not rollout_choice(r.status, r.note)]
    return len(fb) - len(other), other


def workloads(a):
    """(label, instance, policy) for each workload: the paper's sweep (`bench.points`, the policy as
    `paper_eval.py` builds it) or, with --grid, grid.py's workloads and policy set-up."""
    if a.grid:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import grid

        for spec in a.grid.split(","):
            g, p, s = (int(x) for x in spec.split("/"))
            pol = tetriopt.make_policy(a.policy, time_limit_ms=a.time_limit_ms, seed=a.solver_seed, workers=1,
                                       deterministic=a.deterministic)
            yield f"grid {spec}", grid.workload(g, grid.RATES[(g, p)], s, a.size), pol
        return
    extra = {"round_ms": tuple(float(x) for x in a.round_ms.split(","))} if a.round_ms else {}
    pts = B.points(models=(a.model,), gpus=a.gpus, islands=a.islands, mixes=tuple(a.mix.split(",")),
                   slo_scales=tuple(float(x) for x in a.slo_scales.split(",")),
                   rates=tuple(float(x) for x in a.rates.split(",")),
                   seeds=[int(s) for s in a.seeds.split(",")], n=a.n, **extra)
    for p in pts:
        inst = p.instance()
        yield p.label(), inst, B.bench_policy(a.policy, inst, a.time_limit_ms, a.deterministic)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="flux.1-dev-h100")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--islands", type=int, default=None)
    ap.add_argument("--mix", default="uniform,skewed")
    ap.add_argument("--slo-scales", default="1.0")
    ap.add_argument("--rates", default="12")
    ap.add_argument("--round-ms", default=None, help="round lengths in ms (default: the profile's)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--policy", default="cpsat")
    ap.add_argument("--time-limit-ms", type=float, default=200.0)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--grid", default=None, help="grid.py's points GPUs/pending/seed, comma-separated, instead")
    ap.add_argument("--size", type=float, default=0.15, help="with --grid: grid.py's --size")
    ap.add_argument("--solver-seed", type=int, default=0, help="with --grid: CP-SAT's seed")
    ap.add_argument("--json", default=None, help="append one JSON line per workload to this file")
    a = ap.parse_args()
    statuses: collections.Counter = collections.Counter()
    total_fb = total_roll = total_runs = 0
    for label, inst, pol in workloads(a):
        res = simulate(inst, pol)
        roll, other = census(res)
        statuses.update(str(r.status) for r in res.rounds if r.pending)
        s = res.summary
        total_fb += s["fallback_rounds"]
        total_roll += roll
        total_runs += 1
        print(f"{label}: met {s['met']}, fallback {s['fallback_rounds']}, rollout {roll}"
              + "".join(f"; round {rd} {st}: {note or '(no note)'}" for rd, st, note in other), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({"instance": label, "met": s["met"], "fallback_rounds": s["fallback_rounds"],
                                    "rollout_rounds": roll, "other": other}) + "\n")
    print(f"total: {total_runs} workloads, {total_fb} FALLBACK rounds, {total_roll} the rollout's, "
          f"{total_fb - total_roll} other; rounds with pending work by status {dict(statuses)}")


if __name__ == "__main__":
    main()
