"""Hindsight plans: a local search over which requests to serve, knowing every arrival in advance.

A plan of the workload cut down to a subset S of its requests is a plan of the whole workload
(the others never run in it; appended after its end they change no finish time of S), so the
most any policy meets on any subset is a lower bound on the best plan, the quantity the bound
(`tetriopt bound`) is an upper bound on. docs/bound.md ("Issue 12, fifth round") uses it to say
how much of the gap between the policies and the bound is the bound's looseness.

The search: S starts at the requests the bound's LP relaxation meets whole (y >= 0.99, as
`bound_grid.py --witness`), or at every request feasible alone; a fast policy (tetriserve, ...)
serves S in the simulator and its met set is the plan's. Moves: drop what S's plan misses, add
one request left out (LP value first), and kicks (drop one or two met requests, add up to three
left out), and deadlines shown to the policy earlier (per resolution, per request: the plan stays
a plan of the workload, met is judged on the true deadline), accepted when the met count does not
fall. Then the same search with cpsat (deterministic, 200 ms) serving, from the LP set and the
best set so far (`--cpsat-s`). The best plan found is checked by `validate.py` on its cut-down workload and its met
count printed.

    python benchmarks/hindsight.py --gpus 64 --pending 64 --seed 0 [--size 0.15] [--budget-s 120]
    python benchmarks/hindsight.py --instance w.json --budget-s 60 [--json plan.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import grid  # noqa: E402  (the grid's generator and rates)

import tetriopt  # noqa: E402
from tetriopt import bound  # noqa: E402
from tetriopt.instance import Instance  # noqa: E402
from tetriopt.result import SolveResult  # noqa: E402
from tetriopt.validate import validate_result  # noqa: E402

FAST = ("tetriserve", "tetriserve-stepgain")


Tight = frozenset  # of (request id, us): the policy is shown that request's deadline this much earlier


def cut(inst: Instance, keep: frozenset[str], tight: Tight = frozenset()) -> Instance:
    """The workload cut down to `keep`, deadlines moved earlier by `tight` (a plan of it is a plan
    of the whole workload: arrivals, steps and GPUs are the same; met is judged on the true deadline)."""
    dt = dict(tight)
    return dataclasses.replace(inst, requests=tuple(
        dataclasses.replace(r, deadline_us=r.deadline_us - dt.get(r.id, 0)) for r in inst.requests if r.id in keep))


def serve(inst: Instance, keep: frozenset[str], policy: str, tight: Tight = frozenset()) -> SolveResult:
    """`policy` on the cut-down workload (cpsat: deterministic 200 ms, 1 worker, seed 0), its
    outcomes judged on the true deadlines."""
    kw = dict(time_limit_ms=200, deterministic=True, seed=0, workers=1) if policy == "cpsat" else {}
    res = tetriopt.solve(cut(inst, keep, tight), policy, **kw)
    by = inst.by_id
    return dataclasses.replace(res, instance=cut(inst, keep), requests=tuple(
        dataclasses.replace(o, met=o.finish_us <= by[o.id].deadline_us) for o in res.requests))


def met_of(res: SolveResult) -> frozenset[str]:
    return frozenset(o.id for o in res.requests if o.met)


@dataclasses.dataclass
class Search:
    """Local search state: the best plan so far and a cache of evaluated subsets."""

    inst: Instance
    policies: tuple[str, ...] = FAST
    best: frozenset[str] = frozenset()
    best_res: SolveResult | None = None
    best_tight: Tight = frozenset()
    evals: int = 0
    seen: dict[tuple[frozenset[str], Tight], frozenset[str]] = dataclasses.field(default_factory=dict)

    def evaluate(self, keep: frozenset[str], tight: Tight = frozenset()) -> frozenset[str]:
        """The largest met set of the fast policies on `keep` (recorded if the best so far)."""
        tight = frozenset((r, d) for r, d in tight if r in keep and d)
        if (keep, tight) in self.seen:
            return self.seen[keep, tight]
        out: frozenset[str] = frozenset()
        for p in self.policies:
            res = serve(self.inst, keep, p, tight)
            self.evals += 1
            m = met_of(res)
            if len(m) > len(out):
                out = m
            if len(m) > len(self.best):
                self.best, self.best_res, self.best_tight = m, res, tight
        self.seen[keep, tight] = out
        return out


def lp_values(inst: Instance, limit_s: float) -> dict[str, float]:
    """Each request's y in the LP optimum of its component (TetriServe's model); 1 for singletons."""
    val: dict[str, float] = {}
    for comp in bound.components(bound.feasible_alone(inst)):
        if len(comp) == 1:
            val[comp[0].request.id] = 1.0
            continue
        m, ys = bound.build_model(inst, comp, one_set=True)
        x: list[float] = []
        if bound.lp_bound(m, limit_s, primal=x) is not None:
            val |= {w.request.id: x[y.index] for w, y in zip(comp, ys)}
        else:
            val |= {w.request.id: 0.5 for w in comp}
    return val


def local_search(s: Search, start: frozenset[str], pool: list[str], budget_s: float, seed: int,
                 log=print, per_size: bool = True, tight: dict[str, int] | None = None) -> None:
    """Drop the missed, add the left-out one at a time (in `pool`'s order, as is or shown half a
    round early), then kicks (drop / add / show deadlines earlier), until the budget is spent; the
    best plan is in `s.best` / `s.best_res`."""
    rng = random.Random(seed)
    R = s.inst.round_us
    t_end = time.perf_counter() + budget_s
    tight = dict(tight or {})
    cur = s.evaluate(start, frozenset(tight.items()))
    log(f"start: {len(start)} served, {len(cur)} met")
    by = s.inst.by_id

    def tt(d: dict[str, int]) -> Tight:
        return frozenset(d.items())

    sizes = sorted({by[r].width for r in pool})
    steps = (R // 8, R // 4, R // 2)
    for _ in range(2 if per_size else 0):  # per resolution, one offset for all its requests (coordinate descent)
        for w in sizes:
            for d in steps:
                t2 = {**tight, **{r: d for r in cur if by[r].width == w}}
                m = s.evaluate(cur, tt(t2))
                if len(m) > len(cur):
                    cur, tight = m, t2
                    log(f"  {w} px shown {d // 1000} ms early: {len(cur)} met ({s.evals} evals)")
    while time.perf_counter() < t_end:
        improved = False
        for r in pool:  # add one left out
            if r in cur:
                continue
            for d in (0, R // 2):
                if time.perf_counter() >= t_end:
                    break
                t2 = {**tight, r: d}
                m = s.evaluate(cur | {r}, tt(t2))
                if len(m) > len(cur):
                    cur, tight, improved = m, t2, True
                    log(f"  add {r} ({by[r].width} px, {d // 1000} ms early): {len(cur)} met ({s.evals} evals)")
                    break
        if improved:
            continue
        for _ in range(300):  # a kick, accepted if no worse
            if time.perf_counter() >= t_end:
                break
            out = [r for r in pool if r not in cur]
            drop: set[str] = set()
            t2 = dict(tight)
            kind = rng.random()
            add = set()
            if kind < 0.4:
                drop = set(rng.sample(sorted(cur), rng.choice((1, 1, 2))))
                add = set(rng.sample(out, min(len(out), rng.choice((1, 2, 3)))))
            elif kind < 0.8:
                add = set(rng.sample(out, min(len(out), rng.choice((0, 1, 2)))))
                for r in rng.sample(sorted(cur | add), rng.choice((1, 2, 3))):
                    t2[r] = rng.choice((0, R // 8, R // 4, R // 2, R))
            else:  # one offset for a resolution's requests in a window of rounds
                w, d = rng.choice(sizes), rng.choice((0, *steps))
                lo = rng.randrange(0, max(1, max(by[r].arrival_us for r in cur) // R))
                for r in cur:
                    if by[r].width == w and lo <= by[r].arrival_us // R < lo + 4:
                        t2[r] = d
            m = s.evaluate((cur - drop) | add, tt(t2))
            if len(m) >= len(cur) and m != cur:
                if len(m) > len(cur):
                    log(f"  kick -{sorted(drop)} +{sorted(add)}: {len(m)} met ({s.evals} evals)")
                cur, tight = m, t2
                break


def hindsight(inst: Instance, budget_s: float, cpsat_s: float, seed: int = 0, lp_s: float = 60.0, log=print
              ) -> Search:
    """The best plan found (`.best`, `.best_res`, `.best_tight`): the fast policies on the whole
    workload, then the local search from the LP set with them, then with cpsat (`cpsat_s` > 0)
    from the LP set and from the best set so far."""
    t0 = time.perf_counter()
    lp = lp_values(inst, lp_s)
    start = frozenset(r for r, v in lp.items() if v >= 0.99)
    pool = sorted(lp, key=lambda r: (-lp[r], r))  # feasible alone, LP value first
    log(f"{inst.name}: {len(inst.requests)} requests, {len(lp)} feasible alone, LP met {sum(lp.values()):.2f}, "
        f"{len(start)} whole ({time.perf_counter() - t0:.1f} s)")
    s = Search(inst)
    log(f"whole workload: {len(s.evaluate(frozenset(inst.by_id)))} met")
    local_search(s, start, pool, budget_s, seed, log)
    log(f"local search: {len(s.best)} met by {s.best_res.policy} ({s.evals} evals, {time.perf_counter() - t0:.0f} s)")
    if cpsat_s > 0:  # cpsat (slower, packs better) from the LP set and from the best plan so far
        c = Search(inst, ("cpsat",))
        for keep, tg in ((start, frozenset()), (s.best, s.best_tight), (s.best, frozenset())):
            log(f"cpsat on {len(keep)} ({len(tg)} deadlines shown early): {len(c.evaluate(keep, tg))} met")
        local_search(c, c.best, pool, cpsat_s, seed, log, per_size=False, tight=dict(c.best_tight))
        log(f"cpsat local search: {len(c.best)} met ({c.evals} evals, {time.perf_counter() - t0:.0f} s)")
        if len(c.best) > len(s.best):
            s.best, s.best_res, s.best_tight = c.best, c.best_res, c.best_tight
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--pending", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=float, default=0.15)
    ap.add_argument("--instance", default=None, help="an instance file instead of a grid point")
    ap.add_argument("--budget-s", type=float, default=120.0,
                    help="local search time with the fast policies (cpsat's search comes on top)")
    ap.add_argument("--lp-s", type=float, default=60.0)
    ap.add_argument("--search-seed", type=int, default=0)
    ap.add_argument("--cpsat-s", type=float, default=60.0,
                    help="then a local search with cpsat serving (0: none; starts anyway once each set is served)")
    ap.add_argument("--json", default=None, help="write the best plan (its cut-down workload's result) here")
    a = ap.parse_args()
    if a.instance:
        inst = tetriopt.load_instance(a.instance)
    else:
        near = grid.nearest(a.gpus, a.pending)
        inst = grid.workload(a.gpus, grid.RATES[near], a.seed, a.size)
    t0 = time.perf_counter()
    s = hindsight(inst, a.budget_s, a.cpsat_s, a.search_seed, a.lp_s)
    res = s.best_res
    errs = validate_result(res.instance, res.to_json())
    print(f"best hindsight plan: {len(s.best)} met ({res.policy}), validate.py: "
          f"{'valid' if not errs else f'{len(errs)} errors, first: {errs[0]}'} ({time.perf_counter() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"met": len(s.best), "policy": res.policy, "served": sorted(r.id for r in res.instance.requests),
                       "shown_early_us": dict(sorted(s.best_tight)),
                       "errors": errs, "result": res.to_json()}, f, indent=1)


if __name__ == "__main__":
    main()
