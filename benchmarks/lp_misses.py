"""Why a policy misses requests of the bound's LP set: round-by-round histories of the misses.

On issue 12's grid workloads (benchmarks/grid.py's generator) the bound's LP relaxation meets
most requests whole (y >= 0.99); the workload cut down to those (benchmarks/bound_grid.py's
`lp_met`) has (almost) no admission problem, yet the policies miss some of it. This runs a policy
on a workload (the LP set by default, `--whole` for the full one), records every round's state and
plan (by wrapping the policy's `plan`), and prints for each missed request what happened from its
first boundary on: steps left, whether it could still make it alone (`alive`) and how many steps it
needed this round (`need`), whether the plan kept it, what it ran (degree x steps), and the plan's
source (CP-SAT status, fallback, rollout swap). A classification and the round of the decisive
event follow, then a per-class count.

    python benchmarks/lp_misses.py --gpus 32 --pending 64 --seed 0 [--policy cpsat] [--limit-ms 200]
    python benchmarks/lp_misses.py --gpus 64 --pending 64 --policy "cpsat[rollout=0]" --json out.json
    python benchmarks/lp_misses.py --gpus 64 --pending 64 --probe 7:limit=5000 --probe 7:pairs=100000

`--probe ROUND:VARIANT` has a copy of the policy (its memory of earlier rounds included) plan that
round again under the variant (a longer limit, uncapped candidate sets, a switch such as
`forecast=0`), to tell whether a drop comes from the search's limit, the caps or a rule
(docs/solver.md section 4 has what it found).

The LP set is cached in `--cache` (a JSON file per point) since GLOP takes seconds at 64 GPUs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(__file__))
import bound_grid  # noqa: E402  (lp_met)
import hindsight  # noqa: E402  (cut)
import grid  # noqa: E402  (the grid's generator and rates)

import tetriopt  # noqa: E402
from tetriopt.lookahead import outlook  # noqa: E402


def lp_set(gpus: int, pending: int, seed: int, size: float, cache: str, lp_s: float) -> tuple[object, set[str]]:
    """The grid workload and the ids its LP relaxation meets whole (cached per point)."""
    near = grid.nearest(gpus, pending)
    inst = grid.workload(gpus, grid.RATES[near], seed, size)
    path = os.path.join(cache, f"lp-{gpus}-{near[1]}-s{seed}-{size:g}.json")
    if os.path.exists(path):
        with open(path) as f:
            return inst, set(json.load(f))
    keep = bound_grid.lp_met(inst, lp_s)
    os.makedirs(cache, exist_ok=True)
    with open(path, "w") as f:
        json.dump(sorted(keep), f)
    return inst, keep


def record(policy, probes: dict[int, list[str]] | None = None) -> list[dict]:
    """Wrap `policy.plan` so that every round's state and plan are appended to the returned list;
    at the rounds of `probes`, a copy of the policy also plans the round with each variant given
    (`limit=MS`: another limit; `pairs=N`: another cap on (request, set) pairs; `SWITCH=0|1`), and
    the requests it keeps that the policy's own plan did not (or drops that it kept) are logged."""
    log: list[dict] = []
    inner = policy.plan

    def plan(state):
        for variant in (probes or {}).get(state.round_index, ()):
            log.append(dict(probe=state.round_index, variant=variant, **probe(policy, state, variant)))
        p = inner(state)
        runs: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {}
        for a in p.assignments:
            for i in (a.request, *a.batch):
                runs.setdefault(i, []).append((a.degree, a.steps, a.gpus))
        reqs = {}
        for r in state.requests:
            o = outlook(state, r)
            reqs[r.id] = dict(rem=r.remaining_steps, alive=o.alive, need=o.need_now, fastest=o.fastest,
                              px=r.width, deadline_us=r.deadline_us, placed=bool(r.location))
        busy = {g for a in p.assignments for g in a.gpus}
        log.append(dict(round=state.round_index, now_us=state.now_us, reqs=reqs, runs=runs,
                        kept=set(p.kept or ()), backend=p.backend, status=str(p.status), note=p.note,
                        idle=state.cluster.gpus - len(busy)))
        return p

    policy.plan = plan
    if hasattr(policy, "_rollout"):  # the plan before a rollout swap (MipPolicy)
        roll = policy._rollout

        def rollout(state, decisions, meta, *args, **kw):
            got = roll(state, decisions, meta, *args, **kw)
            if got[0] is not decisions:
                log.append(dict(swap=state.round_index, runs={d[0]: (len(d[1]), d[2]) for d in decisions
                                                               if isinstance(d[0], str)},
                                kept=set(meta.get("kept") or ())))
            return got

        policy._rollout = rollout
    return log


def probe(policy, state, variant: str) -> dict:
    """A copy of `policy` (its memory of earlier rounds included) planning `state` under `variant`."""
    from tetriopt.policies import mip
    other = copy.deepcopy(policy)
    for wrapped in ("plan", "_rollout"):  # record's wrappers call the original policy: drop them
        other.__dict__.pop(wrapped, None)
    saved = mip.MAX_PAIRS
    key, _, value = variant.partition("=")
    try:
        if key == "limit":
            other.limit_s = float(value) / 1e3
        elif key == "pairs":
            mip.MAX_PAIRS = int(value)
        else:
            setattr(other, key, value == "1")
        p = other.plan(state)
    finally:
        mip.MAX_PAIRS = saved
    runs: dict[str, list] = {}
    for a in p.assignments:
        runs.setdefault(a.request, []).append((a.degree, a.steps))
    return dict(kept=set(p.kept or ()), runs=runs, status=str(p.status), backend=p.backend, note=p.note)


def history(rid: str, log: list[dict]) -> list[dict]:
    """The rounds in which `rid` was pending, with what happened to it."""
    out = []
    swaps = {e["swap"]: e for e in log if "swap" in e}
    probes = [e for e in log if "probe" in e]
    for e in log:
        if "swap" in e or "probe" in e or rid not in e["reqs"]:
            continue
        s = e["reqs"][rid]
        big = [i for i, rs in e["runs"].items() if any(k >= 8 for k, _, _ in rs)]
        out.append(dict(round=e["round"], rem=s["rem"], alive=s["alive"], need=s["need"], kept=rid in e["kept"],
                        ran=[(k, n) for k, n, _ in e["runs"].get(rid, [])], backend=e["backend"],
                        status=e["status"], note=e["note"], idle=e["idle"], wide=len(big),
                        pending=len(e["reqs"]), kept_n=len(e["kept"])))
        if e["round"] in swaps:  # what the model's plan did for it before the rollout swapped it out
            w = swaps[e["round"]]
            out[-1]["before_swap"] = dict(kept=rid in w["kept"], ran=w["runs"].get(rid))
        out[-1]["probes"] = [(p["variant"], rid in p["kept"], p["runs"].get(rid), p["status"][:4])
                             for p in probes if p["probe"] == e["round"]]
    return out


def classify(h: list[dict]) -> tuple[str, int | None]:
    """What decided the miss, and in which round: the first round it was kept but got fewer steps
    than it needed while still alive (`short`), a drop after being kept (`dropped`), never kept
    while alive (`never kept`), or not alive at its first boundary (`dead on arrival`)."""
    if not h or not h[0]["alive"]:
        return "dead on arrival", h[0]["round"] if h else None
    ever = any(x["kept"] for x in h if x["alive"])
    for x in h:
        if not x["alive"]:
            return ("kept, ran short" if ever else "never kept"), x["round"]
        steps = sum(n for _, n in x["ran"])
        if x["kept"] and steps < x["need"]:
            return "kept, ran short", x["round"]
        if ever and not x["kept"]:
            return "dropped", x["round"]
    return "late in its last round", h[-1]["round"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=32)
    ap.add_argument("--pending", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=float, default=0.15)
    ap.add_argument("--policy", default="cpsat")
    ap.add_argument("--limit-ms", type=float, default=200.0)
    ap.add_argument("--cpsat-seed", type=int, default=0)
    ap.add_argument("--wall", action="store_true", help="wall-clock limits instead of CP-SAT's deterministic clock")
    ap.add_argument("--whole", action="store_true", help="the whole workload, not its LP set")
    ap.add_argument("--lp-s", type=float, default=30.0)
    ap.add_argument("--cache", default="/tmp/lp_misses")
    ap.add_argument("--quiet", action="store_true", help="only the per-class counts")
    ap.add_argument("--probe", action="append", default=[],
                    help="ROUND:VARIANT, e.g. 7:limit=5000, 7:pairs=100000, 7:forecast=0 (repeatable)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    probes: dict[int, list[str]] = {}
    for item in a.probe:
        rnd, _, variant = item.partition(":")
        probes.setdefault(int(rnd), []).append(variant)
    inst, keep = lp_set(a.gpus, a.pending, a.seed, a.size, a.cache, a.lp_s)
    if not a.whole:
        inst = hindsight.cut(inst, frozenset(keep))
    pol = tetriopt.make_policy(a.policy, time_limit_ms=a.limit_ms, seed=a.cpsat_seed, workers=1,
                               deterministic=not a.wall)
    log = record(pol, probes)
    res = tetriopt.solve(inst, pol)
    px = {r.id: r.width for r in inst.requests}
    missed = [o.id for o in res.requests if not o.met]
    print(f"{a.gpus} GPUs / {a.pending} pending / seed {a.seed}, {'whole' if a.whole else 'LP set'} "
          f"({len(inst.requests)} requests), {a.policy}: met {res.summary['met']}, missed {len(missed)} "
          f"({', '.join(f'{k} px: {v}' for k, v in sorted(Counter(px[i] for i in missed).items()))})")
    classes: Counter = Counter()
    out = []
    for rid in missed:
        h = history(rid, log)
        cls, rnd = classify(h)
        classes[cls] += 1
        out.append(dict(id=rid, px=px[rid], cls=cls, round=rnd, history=h))
        if a.quiet:
            continue
        print(f"\n{rid} ({px[rid]} px): {cls} at round {rnd}")
        for x in h:
            ran = " ".join(f"{k}x{n}" for k, n in x["ran"]) or "-"
            print(f"  r{x['round']:3d} rem {x['rem']:2d} {'alive' if x['alive'] else 'dead '} need {x['need']:2d} "
                  f"{'KEPT' if x['kept'] else '    '} ran {ran:8s} | {x['status'][:4]} {x['backend']:10s} "
                  f"kept {x['kept_n']:3d}/{x['pending']:3d} wide {x['wide']:2d} idle {x['idle']:2d} {x['note'][:60]}"
                  + (f" [model's plan: {'KEPT' if x['before_swap']['kept'] else 'not kept'}, ran "
                     f"{x['before_swap']['ran']}]" if "before_swap" in x else ""))
            for v, k, ran, st in x["probes"]:
                print(f"        probe {v}: {'KEPT' if k else 'not kept'}, ran {ran}, {st}")
    print("\n" + "; ".join(f"{k}: {v}" for k, v in classes.most_common()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(met=res.summary["met"], n=len(inst.requests), missed=out), f, indent=1, default=list)


if __name__ == "__main__":
    main()
