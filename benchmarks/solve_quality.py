"""Does the round solve leave met requests on the table? Per round of one cpsat simulation, what
CP-SAT was handed and what it returned, and (with --check-s) the same round model solved again
with more deterministic time, from the same hint: how much objective, in keep weights (one kept
request), the round's own limit left behind.

    python benchmarks/solve_quality.py --gpus 64 --pending 32 --seed 3 --size 0.15 \
        --time-limit-ms 500 --check-s 2.0 [--policy "cpsat[switch=1]"] [--json F]

Printed: rounds by outcome (certified / proved by CP-SAT / FEASIBLE at the limit / fallback), the
CP-SAT calls (variables, deterministic time used, gain over the hint), and with --check-s the
rounds where the longer solve found a plan better by at least half a keep weight (one more
request kept), with the final met count. Deterministic (CP-SAT's deterministic clock, 1 worker).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tetriopt  # noqa: E402
from tetriopt.policies import backends  # noqa: E402
from grid import RATES, nearest, workload  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    for flag, default in (("--gpus", 64), ("--pending", 32), ("--seed", 3), ("--size", 0.15), ("--time-limit-ms", 500.0)):
        ap.add_argument(flag, type=type(default), default=default)
    ap.add_argument("--policy", default="cpsat")
    ap.add_argument("--check-s", type=float, default=0.0, help="re-solve each unproved CP-SAT round with this much deterministic time")
    ap.add_argument("--json", default=None)
    ap.add_argument("--dump", default=None, help="pickle FEASIBLE round models with a proven gap of half a keep or more to DUMP-i.pkl")
    a = ap.parse_args()
    inst = workload(a.gpus, RATES[nearest(a.gpus, a.pending)], a.seed, a.size)
    orig = backends.BACKENDS["cpsat"]
    calls: list[dict] = []

    def wrapped(m, time_limit_s, **kw):
        t = time.perf_counter()
        out = orig(m, time_limit_s, **kw)
        wall = time.perf_counter() - t
        keep = 2 * kw.get("min_gain", 0.5)
        hint = kw.get("hint")
        rec = dict(vars=len(m.names), cons=len(m.cons), status=out.status, wall_s=round(wall, 4),
                   det_limit=kw.get("max_deterministic_time"), keep=keep,
                   hint=m.value(hint) if hint is not None else None, obj=out.objective, bound=out.bound,
                   presolve=kw.get("cp_model_presolve", True))
        if a.check_s > 0 and out.status != "OPTIMAL" and hint is not None:
            kw2 = dict(kw, max_deterministic_time=a.check_s)
            kw2.pop("quick_s", None)
            t = time.perf_counter()
            long = orig(m, 60.0 + 20 * a.check_s, **kw2)
            rec.update(long_obj=long.objective, long_status=long.status, long_bound=long.bound,
                       long_wall_s=round(time.perf_counter() - t, 3))
        if a.dump and out.status == "FEASIBLE" and out.bound is not None and out.bound - out.objective >= keep / 2:
            import pickle
            with open(f"{a.dump}-{len(calls)}.pkl", "wb") as f:  # the round model, its hint and its keep weight
                pickle.dump(dict(model=m, hint=out.solution, keep=keep, obj=out.objective, bound=out.bound), f)
        calls.append(rec)
        return out

    backends.BACKENDS["cpsat"] = wrapped
    pol = tetriopt.make_policy(a.policy, time_limit_ms=a.time_limit_ms, seed=0, workers=1, deterministic=True)
    res = tetriopt.solve(inst, pol)
    busy = [r for r in res.rounds if r.pending]
    by = dict(Counter(str(r.status) for r in busy))
    notes = dict(Counter((r.note or "").split(":")[0][:60] for r in busy))
    print(f"{a.gpus} GPUs / {a.pending} / seed {a.seed}, n {len(inst.requests)}, {a.policy} at {a.time_limit_ms:g} ms "
          f"(deterministic): met {res.summary['met']}, {len(busy)} busy rounds, statuses {by}")
    print("notes:", json.dumps(notes))
    if calls:
        gain = [(c["obj"] - c["hint"]) / c["keep"] for c in calls if c["obj"] is not None and c["hint"] is not None]
        print(f"CP-SAT calls {len(calls)}: statuses {dict(Counter(c['status'] for c in calls))}; "
              f"variables p50 {statistics.median(c['vars'] for c in calls):.0f} max {max(c['vars'] for c in calls)}; "
              f"gain over hint >= 0.5 keep in {sum(g >= 0.5 for g in gain)}, any gain in {sum(g > 1e-9 for g in gain)}")
        gaps = [(c["bound"] - c["obj"]) / c["keep"] for c in calls if c["status"] == "FEASIBLE" and c["bound"] is not None]
        if gaps:
            print(f"FEASIBLE rounds: proven gap in keep weights p50 {statistics.median(gaps):.2f} max {max(gaps):.2f}; "
                  f">= 0.5 keep in {sum(g >= 0.5 for g in gaps)}")
        chk = [c for c in calls if "long_obj" in c]
        if chk:
            lost = [((c["long_obj"] or 0) - (c["obj"] or c["hint"])) / c["keep"] for c in chk]
            print(f"re-solved with {a.check_s:g} det s: {len(chk)} rounds; better by >= 0.5 keep in "
                  f"{sum(x >= 0.5 for x in lost)} (sum {sum(x for x in lost if x >= 0.5):.2f} keeps), any better in "
                  f"{sum(x > 1e-6 for x in lost)}; long OPTIMAL in {sum(c['long_status'] == 'OPTIMAL' for c in chk)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(met=res.summary["met"], calls=calls,
                           rounds=[dict(i=i, pending=r.pending, status=str(r.status), backend=r.backend, note=r.note,
                                        objective=r.objective, bound=r.bound, solve_ms=r.solve_ms)
                                   for i, r in enumerate(res.rounds)]), f, indent=0)


if __name__ == "__main__":
    main()
