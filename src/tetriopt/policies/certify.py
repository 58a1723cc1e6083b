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

import bisect

from .formulation import RoundModel, keepable


class _Own:
    """One modelled request's own part of the round model: its objective terms as a function of
    the candidate it runs on and its steps, with every constraint that couples it to other
    requests dropped (GPU busy time, the joint test's other terms, the urgent order)."""

    def __init__(self, rm: RoundModel, r, own_row: dict):
        m, st = rm.model, rm.state
        obj = m.objective
        self.rid = r.id
        self.kp, self.dn, self.u = rm.keep[r.id], rm.done[r.id], rm.left[r.id]
        self.rem = r.remaining_steps
        can, self.slack = keepable(st, r, rm.looks[r.id])
        self.can = can and m.ub[self.kp] > 0
        self.budget = st.due_us(r) - st.now_us
        self.w_kp, self.w_u, self.w_dn = obj.get(self.kp, 0), obj.get(self.u, 0), obj.get(self.dn, 0)
        self.cost, self.cap, self.owed, self.owed_cap = own_row.get(self.u, (0, None, 0, None))

    def joint_ok(self, n: int) -> bool:
        """Its own terms of its joint rows fit: its steps by their due time, and they and its
        owed decode by its deadline (the other requests' terms only add to them)."""
        left = self.cost * (self.rem - n)
        return n == self.rem or ((self.cap is None or left <= self.cap)
                                 and (self.owed_cap is None or left + self.owed <= self.owed_cap))

    def value(self, n: int, t: int, bonus: int, w_s: int) -> tuple[int, bool]:
        """Best of keep / give up with n steps this round (n * t us), and whether it keeps."""
        rem, slack = self.rem, self.slack
        best = w_s * n + bonus + (self.w_dn if n == rem else 0)  # given up: u = 0
        if self.can and self.joint_ok(n) and (n == rem and n * t <= self.budget if slack is None
                                              else rem - n <= slack):
            kept = best + self.w_kp + self.w_u * (rem - n)
            if kept > best:
                return kept, True
        return best, False


def _owns(rm: RoundModel) -> list[_Own]:
    """_Own of every modelled request, in the state's order."""
    m = rm.model
    lefts = set(rm.left.values())
    row = {v: (c, m.ub[acc]) for acc, group, _ in rm.running for v, c in group.items()}  # var -> (coef, row cap)
    own_row = {}  # u var -> (GPU-ms a step, its row's capacity, owed decode GPU-ms, the decode's row's capacity)
    for u in lefts & row.keys():
        owed = rm.owed.get(u)
        own_row[u] = row[u] + (row[owed[0]] if owed and owed[0] in row else (0, None))
    return [_Own(rm, r, own_row) for r in rm.state.requests if r.id in rm.keep]


def best_alone(rm: RoundModel) -> list[tuple[str, int, tuple[int, ...], int, bool]]:
    """Per modelled request: (id, best objective it could reach alone this round, its GPU set
    (() for none), steps, kept) at that best."""
    m, obj = rm.model, rm.model.objective
    out = []
    for own in _owns(rm):
        rem, slack = own.rem, own.slack
        v0, k0 = own.value(0, 0, 0, 0)
        best = (v0, (), 0, k0)
        for gpus, t, x, s in rm.cand[own.rid]:
            hi = m.ub[s]
            w_s, bonus = obj.get(s, 0), obj.get(x, 0)
            # the value is linear in n between the points where keep or done change
            points = {1, hi, rem, rem - 1} | ({rem - slack, rem - slack - 1} if slack is not None else set())
            for n in sorted(points):
                if 1 <= n <= hi:
                    v, k = own.value(n, t, bonus, w_s)
                    if v > best[0]:
                        best = (v, gpus, n, k)
        out.append((own.rid, *best))
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


PAIRED_MAX = 4  # modelled requests up to which `paired` is tried (its cost grows with the pairs)


def _classes(rm: RoundModel, own: _Own) -> list[tuple[list[tuple[int, bool]], list[int], list[int], list]]:
    """own's candidate sets grouped by what they do for it (same steps' objective, stay bonus,
    steps cap and busy-time terms): per class (value and kept for n = 0..hi steps (n = 0 unused),
    busy time of one of its GPUs for n steps, the best value up to n as (value, n), its sets)."""
    m, obj = rm.model, rm.model.objective
    out: dict[tuple, tuple] = {}
    for gpus, t, x, s in rm.cand[own.rid]:
        row = rm.busy.get(gpus[0], {})
        f, cap = rm.fin.get(s, (None, None))
        key = (t, obj.get(s, 0), obj.get(x, 0), m.ub[s], row.get(s, 0), row.get(x, 0),
               row.get(f, 0) if f is not None else 0, cap)
        if key in out:
            out[key][3].append(gpus)
            continue
        t, w_s, bonus, hi, b_s, b_x, b_f, cap = key
        vals = [(0, False)] + [own.value(n, t, bonus, w_s) for n in range(1, hi + 1)]
        busy = [0] + [b_s * n + b_x + (b_f if cap is not None and n >= cap else 0) for n in range(1, hi + 1)]
        upto = [(vals[1][0], 1)] if hi >= 1 else []
        for n in range(2, hi + 1):
            upto.append(max(upto[-1], (vals[n][0], n)))
        out[key] = (vals, busy, [(-1, 0)] + upto, [gpus])
    return [v for v in out.values() if len(v[0]) > 1]


def _mask(gpus: tuple[int, ...]) -> int:
    return sum(1 << g for g in gpus)


def _pair(rm: RoundModel, a: _Own, b: _Own) -> tuple[int, list]:
    """The best two requests can reach together when only one shared GPU's busy time couples
    them (a relaxation: it drops the joint test's other terms, the urgent order and every other
    GPU), with a plan reaching it: (value, [(id, gpus, steps, kept)])."""
    R = rm.state.round_us
    va0, ka0 = a.value(0, 0, 0, 0)
    vb0, kb0 = b.value(0, 0, 0, 0)
    ca, cb = _classes(rm, a), _classes(rm, b)
    best = (va0 + vb0, [(a.rid, (), 0, ka0), (b.rid, (), 0, kb0)])
    for vals, _, upto, sets in ca:
        v, n = upto[-1]
        if v + vb0 > best[0]:
            best = (v + vb0, [(a.rid, sets[0], n, vals[n][1]), (b.rid, (), 0, kb0)])
    for vals, _, upto, sets in cb:
        v, n = upto[-1]
        if va0 + v > best[0]:
            best = (va0 + v, [(a.rid, (), 0, ka0), (b.rid, sets[0], n, vals[n][1])])
    for vals_a, busy_a, upto_a, sets_a in ca:
        masks_a = [(g, _mask(g)) for g in sets_a]
        for vals_b, busy_b, upto_b, sets_b in cb:
            apart = together = None  # a disjoint and an overlapping pair of sets, where one exists
            for gb in sets_b:
                mb = _mask(gb)
                for ga, ma in masks_a:
                    if ma & mb:
                        together = together or (ga, gb)
                    else:
                        apart = apart or (ga, gb)
                    if apart and together:
                        break
                if apart and together:
                    break
            if apart:
                (v_a, n_a), (v_b, n_b) = upto_a[-1], upto_b[-1]
                if v_a + v_b > best[0]:
                    best = (v_a + v_b, [(a.rid, apart[0], n_a, vals_a[n_a][1]), (b.rid, apart[1], n_b, vals_b[n_b][1])])
            if together:
                for n_a in range(1, len(vals_a)):
                    n_b = bisect.bisect_right(busy_b, R - busy_a[n_a]) - 1  # busy_b grows with n
                    if n_b < 1:
                        break
                    v = vals_a[n_a][0] + upto_b[n_b][0]
                    if v > best[0]:
                        m_b = upto_b[n_b][1]
                        best = (v, [(a.rid, together[0], n_a, vals_a[n_a][1]), (b.rid, together[1], m_b, vals_b[m_b][1])])
    return best


def paired(rm: RoundModel, alone: list | None = None) -> tuple[int, list[tuple[str, tuple[int, ...], int]], tuple[str, ...]] | None:
    """A tighter bound than `separable` for rounds of 2..PAIRED_MAX requests, with a plan that may
    reach it: (bound, decisions, kept), or None for other rounds.

    The requests are split into pairs and singles; a pair's term is the best the two reach when
    only one GPU they would share couples them (`_pair`), a single's its best alone. Every
    partition gives a valid bound (each term drops constraints); the least is taken. Where the
    separable plan does not fit, it is mostly because a large request's best alone is the whole
    cluster while another wants part of it (1,024-2,048 px images, skewed mix): 130 of the 221
    rounds CP-SAT was called on skewed-slo1.5 held two requests. The partition's plan, where it
    fits (`formulation.complete` checks every constraint), reaches the bound: it is optimal."""
    owns = _owns(rm)
    if not 2 <= len(owns) <= PAIRED_MAX:
        return None
    alone = best_alone(rm) if alone is None else alone
    single = {i: (v, [(i, g, n, k)]) for i, v, g, n, k in alone}
    pairs: dict[tuple[int, int], tuple[int, list]] = {}
    for x in range(len(owns)):
        for y in range(x + 1, len(owns)):
            (va, pa), (vb, pb) = single[owns[x].rid], single[owns[y].rid]
            if pa[0][1] and pb[0][1] and _mask(pa[0][1]) & _mask(pb[0][1]):  # their best alone collide
                pairs[x, y] = _pair(rm, owns[x], owns[y])

    def split(rest: tuple[int, ...]) -> tuple[int, list]:
        """The least bound over the partitions of `rest` into pairs and singles."""
        if not rest:
            return 0, []
        x, tail = rest[0], rest[1:]
        v, p = split(tail)
        best = (single[owns[x].rid][0] + v, single[owns[x].rid][1] + p)
        for y in tail:
            if (x, y) in pairs:
                v, p = split(tuple(z for z in tail if z != y))
                if pairs[x, y][0] + v < best[0]:
                    best = (pairs[x, y][0] + v, pairs[x, y][1] + p)
        return best

    ub, plan = split(tuple(range(len(owns))))
    return ub, [(i, g, n) for i, g, n, _ in plan if g and n], tuple(i for i, _, _, k in plan if k)


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
