"""A cheap upper bound on the round model's objective, to skip the search when a warm start
already reaches it.

Most rounds of a lightly loaded cluster hold a few requests that do not compete: each can take
its best degree, steps and keep decision at once. The round model's optimum is then the sum of
what each request could get alone, and the TetriServe or greedy plan usually reaches it; CP-SAT
would spend a few ms finding and proving the same plan (most of the policy's CPU on such
workloads). The bound drops every constraint that couples requests (GPU busy time, the joint
test, the order of urgent requests on shared GPUs) and keeps each request's own ones, so it is a
valid upper bound; where a warm start's value equals it, that plan is optimal.
"""

from __future__ import annotations

from .formulation import RoundModel, keepable


def best_alone(rm: RoundModel) -> list[tuple[str, int, tuple[int, ...], int, bool]]:
    """Per modelled request: (id, best objective it could reach alone this round, its GPU set
    (() for none), steps, kept) at that best."""
    m, st = rm.model, rm.state
    obj = m.objective
    lefts = set(rm.left.values())
    row = {v: (c, m.ub[acc]) for acc, group, _ in rm.running for v, c in group.items()}  # var -> (coef, row cap)
    own_row = {}  # u var -> (GPU-ms a step, its row's capacity, owed decode GPU-ms, the decode's row's capacity)
    for u in lefts & row.keys():
        owed = rm.owed.get(u)
        own_row[u] = row[u] + (row[owed[0]] if owed and owed[0] in row else (0, None))
    out = []
    for r in st.requests:
        if r.id not in rm.keep:
            continue
        kp, dn, u = rm.keep[r.id], rm.done[r.id], rm.left[r.id]
        rem = r.remaining_steps
        can, slack = keepable(st, r, rm.looks[r.id])
        can = can and m.ub[kp] > 0
        budget = st.due_us(r) - st.now_us
        w_kp, w_u, w_dn = obj.get(kp, 0), obj.get(u, 0), obj.get(dn, 0)

        cost, cap, owed, owed_cap = own_row.get(u, (0, None, 0, None))

        def joint_ok(n: int) -> bool:
            """Its own terms of its joint rows fit: its steps by their due time, and they and its
            owed decode by its deadline (the other requests' terms only add to them)."""
            return n == rem or ((cap is None or cost * (rem - n) <= cap)
                                and (owed_cap is None or cost * (rem - n) + owed <= owed_cap))

        def value(n: int, t: int, bonus: int, w_s: int) -> tuple[int, bool]:
            """Best of keep / give up with n steps this round (n * t us), and whether it keeps."""
            best = w_s * n + bonus + (w_dn if n == rem else 0)  # given up: u = 0
            if can and joint_ok(n) and (n == rem and n * t <= budget if slack is None else rem - n <= slack):
                kept = best + w_kp + w_u * (rem - n)
                if kept > best:
                    return kept, True
            return best, False

        v0, k0 = value(0, 0, 0, 0)
        best = (v0, (), 0, k0)
        for gpus, t, x, s in rm.cand[r.id]:
            hi = m.ub[s]
            w_s, bonus = obj.get(s, 0), obj.get(x, 0)
            # the value is linear in n between the points where keep or done change
            points = {1, hi, rem, rem - 1} | ({rem - slack, rem - slack - 1} if slack is not None else set())
            for n in sorted(points):
                if 1 <= n <= hi:
                    v, k = value(n, t, bonus, w_s)
                    if v > best[0]:
                        best = (v, gpus, n, k)
        out.append((r.id, *best))
    return out


def separable_bound(rm: RoundModel) -> int:
    """Sum over modelled requests of the best objective each could reach alone this round."""
    return separable(rm)[0]


def separable(rm: RoundModel, alone: list | None = None
              ) -> tuple[int, list[tuple[str, tuple[int, ...], int]], tuple[str, ...]]:
    """(separable bound, decisions, kept) where the plan puts every request at its best alone.
    Where that plan fits together (no GPU over the round, joint and urgent tests hold:
    `formulation.complete` checks) it reaches the bound, so it is optimal, also where the warm
    starts chose differently (TetriServe spreads a lone request over idle GPUs where the model
    prefers the cheaper GPU-time: 27 of the 217 rounds CP-SAT solved on skewed-slo1.0 held a
    single request)."""
    best = best_alone(rm) if alone is None else alone
    return (sum(b[1] for b in best), [(i, g, n) for i, _, g, n, _ in best if g],
            tuple(i for i, _, _, _, k in best if k))


def split_objective(rm: RoundModel, hint: list[int] | None = None, alone: list | None = None) -> list[int] | None:
    """Rewrite the objective as one value variable per modelled request (the sum of its own
    objective terms), bounded above by what it could reach alone (`best_alone`, a valid bound on
    its share of any feasible plan; `alone`: its result where already computed). Without LP (the quick slice, presolve off) CP-SAT bounds the
    objective by summing its terms' bounds, as if every request ran on all its sets at once; with
    the value variables that bound starts at the separable bound. Returns the hint extended to
    the new variables (None without a hint)."""
    if rm.batches:
        return hint
    m = rm.model
    obj = dict(m.objective)
    added = []
    for rid, best, *_ in (best_alone(rm) if alone is None else alone):
        own = [v for _, _, x, s in rm.cand.get(rid, ()) for v in (x, s, *(rm.fin[s][:1] if s in rm.fin else ()))]
        terms = {v: obj.pop(v) for v in (*own, rm.keep[rid], rm.done[rid], rm.left[rid]) if v in obj}
        lo = sum(min(c * m.lb[v], c * m.ub[v]) for v, c in terms.items())
        val = m.var(f"value[{rid}]", lo, max(lo, best))
        m.add({**terms, val: -1}, lb=0, ub=0)
        obj[val] = 1
        added.append(terms)
    m.objective = obj
    if hint is None:
        return None
    return list(hint) + [sum(c * hint[v] for v, c in t.items()) for t in added]
