"""Subset-optimum cuts on the bound's LP (docs/bound.md, "Issue 12, eighth round"; not in `tetriopt bound`).

For a grid workload's largest component: solve the LP relaxation of the bound's model (TetriServe's,
`build_model(one_set=True)`), then for round intervals [a, b] take Q = the requests whose windows
meet [a, b] and compute kappa(Q), CP-SAT's proven bound on the most of Q that Q's own model meets
(the relaxation of Q alone). Every integer solution of the whole model restricted to Q solves Q's
model (the coupling rows have non-negative terms), so `sum_{i in Q} y_i <= kappa(Q)` holds for every
valid plan; rows the LP's optimum violates are added and the LP solved again, `--iters` times.
Candidates: intervals whose Q holds a request with a fractional y, smallest Q first, `--per-iter` of
them; kappa(Q) is first the floor of Q's own LP (no search when that already exceeds Q's LP sum by a
whole request), else CP-SAT's bound after `--sub-s` seconds (1 worker, seed 0, linearization level 2).

    python benchmarks/local_cuts.py --gpus 32 --pending 8 --seed 0 --sub-s 20 --widths 1,2,3,4,5,6 --iters 8 --per-iter 30
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import grid  # noqa: E402

from tetriopt import bound  # noqa: E402


def kappa(inst, ws, limit_s: float, lp_sum: float) -> tuple[int, str]:
    """A proven bound on the most of `ws` met by their own model: its LP's floor, or CP-SAT's bound."""
    from ortools.sat.python import cp_model

    m, ys = bound.build_model(inst, ws, one_set=True)
    lq = bound.lp_bound(m, 60)
    cap = int(lq + 1e-6) if lq is not None else len(ws)
    if cap >= lp_sum + 1 - 1e-6:
        return cap, "lp"
    m.add(sum(ys) <= cap)
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = limit_s
    s.parameters.num_workers = 1
    s.parameters.random_seed = 0
    s.parameters.linearization_level = 2
    code = s.solve(m)
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return min(cap, int(s.best_objective_bound + 1e-6)), s.status_name(code)
    return cap, "lp"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # (option, default): the grid point, CP-SAT's seconds per subset, interval widths, rounds of cuts
    for opt, default in (("--gpus", 32), ("--pending", 8), ("--seed", 0), ("--size", 0.15), ("--sub-s", 20.0),
                         ("--widths", "1,2,3,4,5,6"), ("--iters", 8), ("--per-iter", 30)):
        ap.add_argument(opt, type=type(default), default=default)
    a = ap.parse_args()
    near = grid.nearest(a.gpus, a.pending)
    inst = grid.workload(a.gpus, grid.RATES[near], a.seed, a.size)
    comp = max(bound.components(bound.feasible_alone(inst)), key=len)
    m, ys = bound.build_model(inst, comp, one_set=True)
    y_of = {w.request.id: y for w, y in zip(comp, ys)}
    lo, hi = min(w.first_round for w in comp), max(w.last_round for w in comp)
    known: dict[tuple[str, ...], int] = {}
    t0 = time.perf_counter()
    for it in range(a.iters + 1):
        x: list[float] = []
        lp = bound.lp_bound(m, 300, primal=x)
        print(f"iteration {it}: LP {lp:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if it == a.iters:
            break
        yv = {w.request.id: x[y.index] for w, y in zip(comp, ys)}
        cand = []
        for width in map(int, a.widths.split(",")):
            for lo_r in range(lo, hi - width + 2):
                q = tuple(sorted(w.request.id for w in comp if w.first_round <= lo_r + width - 1 and w.last_round >= lo_r))
                fractional = sum(1e-3 < yv[i] < 0.999 for i in q)
                if q in known:
                    if sum(yv[i] for i in q) > known[q] + 1e-6:
                        cand.append((0, 0, lo_r, width, q))
                elif fractional:
                    cand.append((1, len(q), lo_r, width, q))
        cand.sort()
        added, seen = 0, set()
        for _, _, lo_r, width, q in cand[: a.per_iter]:
            if q in seen:
                continue
            seen.add(q)
            s = sum(yv[i] for i in q)
            if q not in known:
                t1 = time.perf_counter()
                known[q], how = kappa(inst, [w for w in comp if w.request.id in q], a.sub_s, s)
                print(f"  rounds {lo_r}-{lo_r + width - 1}: {len(q)} requests, LP sum {s:.3f}, kappa {known[q]} "
                      f"({how}, {time.perf_counter() - t1:.1f} s)", flush=True)
            if s > known[q] + 1e-6:
                m.add(sum(y_of[i] for i in q) <= known[q])
                added += 1
        if not added:
            print("no violated cut among the candidates: the LP above is final")
            break


if __name__ == "__main__":
    main()
