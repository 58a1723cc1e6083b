"""Does a per-round configuration LP tighten the bound's LP? (docs/bound.md, "Issue 12, sixth round")

The bound's LP (`tetriopt.bound`, TetriServe's model) charges a round's work to the cluster's GPU-time
(rows (3), (5), cut (12)). A configuration says what one GPU (`--kind gpu`) or one aligned block of
GPUs (`--kind block`: the widest level of `bound.block_levels`; every aligned set lies in one) runs in
one round: items (request i, degree k, n >= 1 steps, its encode f, its decode l) of distinct requests,
each taking n T_i(k) + f enc + l dec_i (within the request's cap and room of that round), per GPU
at most R in all (an item of degree k on an aligned k-set inside the block, or, per GPU, on each of
its k GPUs). The master LP adds, per round j, variables lam[j, c] >= 0 with sum_c lam[j, c] <= U
(U = N / block size, or N GPUs) and, per (i, j, k): m z[i,j,k] <= sum_c lam[j,c] [i at k in c],
m n[i,j,k] <= sum_c lam[j,c] n_c, m first <= sum_c lam f_c, m last <= sum_c lam l_c (m = 1 for
blocks, k for GPUs). Any valid plan's round, cut into its blocks (or GPUs), is such a mix (integer
lam), so the master over all configurations is a relaxation of the plan space.

Solved by column generation from the bound's LP optimum (first-fit packings of its items), HiGHS for
the master (warm re-solves; `pip install highspy`). Two numbers per iteration: `master`, the LP over
the columns so far (a lower bound on the configuration LP: it only tells how much the LP can still
move), and `L`, the Lagrangian bound weak_dual(rows, pi) + sum_j U max(0, price_j(pi)) for the
master's duals pi (and a smoothed mix with the best so far), price_j an upper bound on the best
configuration's reduced cost in round j: an upper bound on the relaxation's optimum, valid whatever
the columns are. Pricing for `gpu` is exact (a group knapsack DP over time in 1 ms units, each
item's time rounded down: a relaxation); for `block` CP-SAT (`--price-s` a round; its proven
bound counts, so an unproven round gives a loose L).

    pip install highspy
    python benchmarks/config_lp.py --point 64/64/0 --kind gpu --time-s 600
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import grid  # noqa: E402  (the grid's generator and rates)

from tetriopt import bound  # noqa: E402

UNIT = 1000  # the per-GPU pricing DP's time unit (us); item times rounded down


def items_of(w: bound.Window, j: int, k: int, has: dict) -> list[tuple[int, int, int, int]]:
    """(n, f, l, busy time) of every item request w can run at degree k in round j."""
    T, out = w.step[k], []
    for f in (0, 1) if "first" in has else (0,):
        for l in (0, 1) if "last" in has else (0,):
            for n in range(1, min(w.caps[j] // T, w.request.steps) + 1):
                t = n * T + f * w.encode_us + l * w.decode_us
                if n * T + f * w.encode_us <= w.caps[j] and t <= w.room[j]:
                    out.append((n, f, l, t))
    return out


def price_gpu(groups: dict, R: int) -> tuple[float, dict]:
    """Best (value, column) of one GPU: one item per request (groups: rid -> [(key, value, time, nfl)])."""
    import numpy as np

    C = R // UNIT
    best, trace = np.zeros(C + 1), []
    for rid, opts in groups.items():
        top: dict[int, int] = {}
        for x, (_, v, t, _) in enumerate(opts):
            u = t // UNIT
            if v > 1e-12 and u <= C and (u not in top or v > opts[top[u]][1]):
                top[u] = x
        if not top:
            continue
        new, ch = best.copy(), np.full(C + 1, -1)
        for u, x in top.items():
            cand = best[:C + 1 - u] + opts[x][1]
            up = cand > new[u:]
            new[u:] = np.where(up, cand, new[u:])
            ch[u:][up] = x
        trace.append((opts, ch))
        best = new
    t = int(np.argmax(best))
    val, col = float(best[t]), {}
    for opts, ch in reversed(trace):
        if ch[t] >= 0:
            key, _, tt, nfl = opts[ch[t]]
            col[key] = nfl
            t -= tt // UNIT
    return val, col


def price_block(items: list, R: int, sets: dict[int, list[tuple[int, ...]]], limit_s: float) -> tuple[float, list]:
    """(upper bound, columns found) of one block: CP-SAT over the items' aligned sets in the block.
    items: [(key (rid, k), multipliers {z, n, first, last}, window, round)]; an item's value is
    linear in its n, f, l."""
    from ortools.sat.python import cp_model

    items = [it for it in items if it[1]["z"] + it[1].get("n", 0) * it[2].request.steps + it[1].get("first", 0)
             + it[1].get("last", 0) > 1e-12]
    if not items:
        return 0.0, []
    S = 1e11 / max(max(p.values()) * (1 + w.request.steps) for _, p, w, _ in items)
    m = cp_model.CpModel()
    per_gpu, per_req, obj, place = collections.defaultdict(list), collections.defaultdict(list), [], []
    for (rid, k), p, w, j in items:
        T, top = w.step[k], min(w.caps[j] // w.step[k], w.request.steps)
        for s in sets[k]:
            x, n = m.new_bool_var(""), m.new_int_var(0, top, "")
            f = m.new_bool_var("") if "first" in p else 0
            l = m.new_bool_var("") if "last" in p else 0
            m.add(n >= x)
            m.add(n <= top * x)
            for v in (f, l):
                if not isinstance(v, int):
                    m.add(v <= x)
            m.add(T * n + w.encode_us * f <= w.caps[j])
            m.add(T * n + w.encode_us * f + w.decode_us * l <= w.room[j])
            for g in s:
                per_gpu[g].append(T * n + w.encode_us * f + w.decode_us * l)
            per_req[rid].append(x)
            # coefficients rounded up: the proven bound stays an upper bound
            obj.append(math.ceil(p["z"] * S) * x + math.ceil(p.get("n", 0) * S) * n
                       + math.ceil(p.get("first", 0) * S) * f + math.ceil(p.get("last", 0) * S) * l)
            place.append(((rid, k), x, n, f, l))
    for ts in per_gpu.values():
        m.add(sum(ts) <= R)
    for xs in per_req.values():
        m.add_at_most_one(xs)
    m.maximize(sum(obj))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = limit_s
    solver.parameters.num_workers = 1
    cols: list[dict] = []

    class Keep(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            val = lambda v: v if isinstance(v, int) else self.value(v)  # noqa: E731
            cols.append({key: (self.value(n), val(f), val(l)) for key, x, n, f, l in place if self.value(x)})

    code = solver.solve(m, Keep())
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return math.inf, []
    return solver.best_objective_bound / S, cols[-8:]


def run(inst, ws, kind: str, time_s: float, price_s: float, log=print) -> dict:
    import highspy
    import numpy as np

    t0 = time.perf_counter()
    N, R = inst.cluster.gpus, inst.round_us
    size = max(bound.block_levels(inst)) if kind == "block" else 1
    blk = inst.cluster.sets(size)[0] if kind == "block" else ()
    sets = {k: [s for s in inst.cluster.sets(k) if set(s) <= set(blk)] for k in inst.degrees}
    if kind == "block":
        assert all(any(set(s) <= set(b) for b in inst.cluster.sets(size)) for k in inst.degrees
                   for s in inst.cluster.sets(k)), "an aligned set spans blocks"
    U = N // size
    model, _ = bound.build_model(inst, ws, True, one_set=True)
    box, c, const, rows = bound.lp_rows(model)
    x0: list[float] = []
    plain = bound.lp_bound(model, 600, primal=x0)
    idx = {v.name: i for i, v in enumerate(model.proto.variables)}
    W = {w.request.id: w for w in ws}
    link: dict[tuple[str, int, int], dict[str, int]] = {}
    for name, i in idx.items():
        mt = re.match(r"z\[(.*),(\d+),(\d+)\]$", name)
        if not mt:
            continue
        rid, j, k = mt.group(1), int(mt.group(2)), int(mt.group(3))
        has = {}
        for nm in ("z", "n", "first", "last"):
            if f"{nm}[{rid},{j},{k}]" in idx:
                rows.append((None, 0, [idx[f"{nm}[{rid},{j},{k}]"]], [float(k if kind == "gpu" else 1)]))
                has[nm] = len(rows) - 1
        link[rid, j, k] = has
    rounds = sorted({j for _, j, _ in link})
    opts = {key: items_of(W[key[0]], key[1], key[2], has) for key, has in link.items()} if kind == "gpu" else {}
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    inf = highspy.kHighsInf
    h.addCols(len(box), np.array([-x for x in c]), np.array([float(lo) for lo, _ in box]),
              np.array([float(hi) for _, hi in box]), 0, np.array([], dtype=np.int32), np.array([], dtype=np.int32),
              np.array([]))
    starts, inds, vals = [], [], []
    for _, _, vs, cs in rows:
        starts.append(len(inds))
        inds += vs
        vals += [float(a) for a in cs]
    h.addRows(len(rows), np.array([-inf if lo is None else float(lo) for lo, *_ in rows]),
              np.array([inf if hi is None else float(hi) for _, hi, *_ in rows]), len(inds),
              np.array(starts, dtype=np.int32), np.array(inds, dtype=np.int32), np.array(vals))
    conv = {}
    for j in rounds:
        h.addRow(0.0, float(U), 0, np.array([], dtype=np.int32), np.array([]))
        conv[j] = h.getNumRow() - 1
    ncols = 0

    def add(j: int, col: dict) -> None:
        nonlocal ncols
        ri, rv = [conv[j]], [1.0]
        for (rid, k), (n, f, l) in col.items():
            for nm, v in (("z", 1), ("n", n), ("first", f), ("last", l)):
                if v:
                    ri.append(link[rid, j, k][nm])
                    rv.append(-float(v))
        h.addCol(0.0, 0.0, float(U), len(ri), np.array(ri, dtype=np.int32), np.array(rv))
        ncols += 1

    for j in rounds:  # first columns: first-fit packings of the bound's LP optimum's items
        its = []
        for (rid, jj, k), has in link.items():
            zv = x0[idx[f"z[{rid},{jj},{k}]"]] if jj == j else 0
            if zv < 1e-6:
                continue
            w = W[rid]
            n = max(1, min(math.ceil(x0[idx[f"n[{rid},{j},{k}]"]] / zv - 1e-6), w.caps[j] // w.step[k]))
            f = int("first" in has and x0[idx[f"first[{rid},{j},{k}]"]] > 1e-6)
            l = int("last" in has and x0[idx[f"last[{rid},{j},{k}]"]] > 1e-6)
            while n > 1 and n * w.step[k] + f * w.encode_us + l * w.decode_us > w.room[j]:
                n -= 1
            its.append((n * w.step[k] + f * w.encode_us + l * w.decode_us, (rid, k), (n, f, l)))
        its.sort(reverse=True)
        bins: list[list] = []  # [per-GPU load, column]
        for t, key, nfl in its:
            for _ in range(key[1] if kind == "gpu" else 1):
                for b in bins:
                    if any(r == key[0] for r, _ in b[1]):
                        continue
                    s = next((s for s in sets[key[1]] if all(b[0][g] + t <= R for g in s)), None) \
                        if kind == "block" else ((0,) if b[0][0] + t <= R else None)
                    if s is not None:
                        for g in s:
                            b[0][g] += t
                        b[1][key] = nfl
                        break
                else:
                    load = collections.defaultdict(int)
                    for g in (sets[key[1]][0] if kind == "block" else (0,)):
                        load[g] += t
                    bins.append([load, {key: nfl}])
        for b in bins:
            add(j, b[1])
    log(f"{len(ws)} requests, {len(rows)} rows, {len(rounds)} rounds, {U} {kind}s of {size} GPU(s); "
        f"the bound's LP {plain:.3f}; {ncols} first columns")
    best, best_pi, sign, it, master = math.inf, None, None, 0, 0.0
    while time.perf_counter() - t0 < time_s:
        h.run()
        master = -h.getInfo().objective_function_value
        rd = list(h.getSolution().row_dual)[:len(rows)]
        if sign is None:  # HiGHS's sign convention for the maximisation, once
            sign = min((1.0, -1.0), key=lambda sg: bound.weak_dual(box, c, const, rows, [sg * v for v in rd]))
        cur = [sign * v for v in rd]
        tries = [cur] if best_pi is None else [cur, [(a + b) / 2 for a, b in zip(best_pi, cur)]]
        added = 0
        for pi in tries:
            L = bound.weak_dual(box, c, const, rows, pi)
            for j in rounds:
                groups, items = collections.defaultdict(list), []
                for (rid, jj, k), has in link.items():
                    if jj != j:
                        continue
                    p = {nm: max(0.0, pi[r]) for nm, r in has.items()}  # a <= row: pi < 0 counts as 0
                    items.append(((rid, k), p, W[rid], j))
                    for n, f, l, t in opts[rid, j, k] if kind == "gpu" else ():
                        v = p["z"] + p.get("n", 0) * n + p.get("first", 0) * f + p.get("last", 0) * l
                        groups[rid].append(((rid, k), v, t, (n, f, l)))
                if kind == "gpu":
                    val, col = price_gpu(groups, R)
                    cols = [col] if col and val > 1e-7 else []
                else:
                    val, cols = price_block(items, R, sets, price_s)
                L += U * max(0.0, val)
                for col in cols:
                    add(j, col)
                    added += 1
            if L < best:
                best, best_pi = L, pi
        log(f"it {it}: master {master:.3f} L {best:.3f} columns {ncols} (+{added}) {time.perf_counter() - t0:.0f} s",
            flush=True)
        it += 1
        if added == 0 or best - master < 1e-3:
            break
    return {"requests": len(ws), "lp": plain, "master": master, "lagrangian": best, "iterations": it,
            "columns": ncols, "s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--point", default="64/64/0", help="GPUs/pending/seed of the grid (size 0.15)")
    ap.add_argument("--kind", choices=("gpu", "block"), default="gpu")
    ap.add_argument("--time-s", type=float, default=600.0)
    ap.add_argument("--price-s", type=float, default=0.3, help="CP-SAT's limit per block pricing")
    a = ap.parse_args()
    gpus, pending, seed = map(int, a.point.split("/"))
    inst = grid.workload(gpus, grid.RATES[grid.nearest(gpus, pending)], seed, 0.15)
    comp = max(bound.components(bound.feasible_alone(inst)), key=len)
    print(run(inst, comp, a.kind, a.time_s, a.price_s))


if __name__ == "__main__":
    main()
