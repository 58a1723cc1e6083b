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
import copy
import itertools

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
        c, *_, env = rm.convex.get(r.id, (None, None))  # (build(convex=True): its least future GPU-ms, in u)
        self.future = [obj.get(c, 0) * v for v in env] if c is not None else None
        self._runs: dict[tuple, list[tuple[int, bool]]] = {}  # (runs' memo)

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
            kept = best + self.w_kp + self.w_u * (rem - n) + (self.future[rem - n] if self.future else 0)
            if kept > best:
                return kept, True
        return best, False

    def runs(self, t: int, bonus: int, w_s: int, hi: int) -> list[tuple[int, bool]]:
        """value(n, t, bonus, w_s) for n = 0..hi (n = 0: as 0 steps on the set, (0, False)), once per
        option class (best_alone and every `_search` of the round ask for the same ones)."""
        key = (t, bonus, w_s, hi, self.can)  # (`proved` searches copies with `can` changed)
        got = self._runs.get(key)
        if got is None:
            got = self._runs[key] = [(0, False)] + [self.value(n, t, bonus, w_s) for n in range(1, hi + 1)]
        return got


def request_options(rm: RoundModel) -> list[_Own]:
    """_Own of every modelled request, in the state's order. best_alone, beyond and proved take
    them as `owns` (MipPolicy computes them once a round: they memoise their option values), valid
    while the model's objective, keep bounds and joint rows stay as they were (rows may be added)."""
    m = rm.model
    lefts = set(rm.left.values())
    row = {v: (c, m.ub[acc]) for acc, group, _ in rm.running for v, c in group.items()}  # var -> (coef, row cap)
    own_row = {}  # u var -> (GPU-ms a step, its row's capacity, owed decode GPU-ms, the decode's row's capacity)
    for u in lefts & row.keys():
        owed = rm.owed.get(u)
        own_row[u] = row[u] + (row[owed[0]] if owed and owed[0] in row else (0, None))
    return [_Own(rm, r, own_row) for r in rm.state.requests if r.id in rm.keep]


def best_alone(rm: RoundModel, owns: list[_Own] | None = None) -> list[tuple[str, int, tuple[int, ...], int, bool]]:
    """Per modelled request: (id, best objective it could reach alone this round, its GPU set
    (() for none), steps, kept) at that best."""
    m, obj = rm.model, rm.model.objective
    out = []
    for own in request_options(rm) if owns is None else owns:
        rem, slack = own.rem, own.slack
        v0, k0 = own.value(0, 0, 0, 0)
        best = (v0, (), 0, k0)
        seen = set()  # (step, weights, cap) already tried: a later set of the same cannot beat it (strict >)
        for gpus, t, x, s in rm.cand[own.rid]:
            hi = m.ub[s]
            w_s, bonus = obj.get(s, 0), obj.get(x, 0)
            if (t, w_s, bonus, hi) in seen:
                continue
            seen.add((t, w_s, bonus, hi))
            # the value is linear in n between the points where keep or done change
            points = {1, hi, rem, rem - 1} | ({rem - slack, rem - slack - 1} if slack is not None else set())
            if own.future:  # its least future GPU-time is convex in what it leaves, not linear: every n
                vals = own.runs(t, bonus, w_s, hi)
                for n in range(1, hi + 1):
                    if vals[n][0] > best[0]:
                        best = (vals[n][0], gpus, n, vals[n][1])
                continue
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


FEW_MAX = 3  # modelled requests up to which `beyond` searches (4: no net gain, docs/solver.md 2, item 17)


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
        vals = list(own.runs(t, bonus, w_s, hi))  # (its own list: `_search` tells classes apart by it)
        busy = [0] + [b_s * n + b_x + (b_f if cap is not None and n >= cap else 0) for n in range(1, hi + 1)]
        upto = [(vals[1][0], 1)] if hi >= 1 else []
        for n in range(2, hi + 1):
            upto.append(max(upto[-1], (vals[n][0], n)))
        out[key] = (vals, busy, [(-1, 0)] + upto, [gpus])
    return [v for v in out.values() if len(v[0]) > 1]


def _unmatched(inside: tuple[int, ...], chosen: list) -> bool:
    """Some block a of `inside` holds no set of the requests placed so far (`_search`'s symmetry cut)."""
    for a in inside:
        for c in chosen:
            cm = c[1]
            if cm and cm & a == cm:
                break
        else:
            return True
    return False


def _mask(gpus: tuple[int, ...]) -> int:
    return sum(1 << g for g in gpus)


class _OutOfNodes(Exception):
    """`beyond` ran out of its budget."""


def _joint_binds(rm: RoundModel, owns: list[_Own]) -> bool:
    """The joint test cannot keep every request that could be kept alone, even with the round's
    GPU-time shared out earliest deadline first at each one's joint-test cost (a guess, not a
    bound: it only decides whether `beyond` is tried). The relaxation `beyond` searches keeps
    them all (it drops that coupling), so its bound would be loose and the search wasted (three
    2,048 px images on 8 GPUs: about 5 ms before CP-SAT, in most rounds it could not certify on
    skewed-slo1.5)."""
    m, st = rm.model, rm.state
    room = st.cluster.gpus * st.round_us
    least = {}  # u / owes-decode var -> its value with the request kept, steps shared out
    for o in sorted((o for o in owns if o.can), key=lambda o: st.due_us(next(r for r in st.requests if r.id == o.rid))):
        per = max(1, rm.joint_us(o.rid))
        n = min(o.rem, max((m.ub[s] for *_, s in rm.cand[o.rid]), default=0), room // per)
        room -= n * per
        least[o.u] = o.rem - n
        if o.u in rm.owed:
            least[rm.owed[o.u][0]] = int(o.rem > n)
    work = 0
    for acc, group, _ in rm.running:
        work += sum(c * least.get(v, 0) for v, c in group.items())
        if work > m.ub[acc]:
            return True
    return False


def beyond(rm: RoundModel, floor: int, blocks: list[tuple[tuple[int, ...], tuple[int, ...]]] = (),
           budget: int = 3000, owns: list[_Own] | None = None) -> tuple[int, list | None] | None:
    """The relaxation that keeps every GPU's busy-time row and each request's own constraints but
    drops the joint test's coupling and the urgent order (a valid upper bound on the model), for
    rounds of 2..FEW_MAX requests, searched for plans worth more than `floor` (a plan's value
    already found): (floor, None) when there is none, so that plan is optimal; (value, [(id,
    gpus, steps, kept)]) of the relaxation's best where it beats `floor`; None when `budget`
    search nodes were not enough (or another round size).

    A branch and bound over each request's set (or none), best first, cut where the best each
    could reach on its set plus the best of the others is no more than the best found; for a
    placement, the requests whose sets contain a common GPU share that GPU's round
    (`_fill`). Where the separable plan does not fit, it is mostly because a large request's best
    alone is the whole cluster while others want part of it, or two take the halves of 8 GPUs
    and a third wants one of them (1,024-2,048 px images, skewed mix: of the 221 rounds CP-SAT
    was called on skewed-slo1.5, 130 held two requests and 78 three).

    `blocks`: pairs (a, b) of GPU blocks whose swap maps the model onto itself (`symmetry.swaps`),
    so the relaxation too; a request may take a set inside b only where an earlier one took a set
    inside a. Exact: from any placement, swapping blocks largest first (and permuting runs of
    interchangeable siblings by the first request inside each) reaches one that obeys every
    such rule, of the same value. Without it, placements that differ by a swap of idle blocks are
    searched once each (hundreds a round)."""
    owns = request_options(rm) if owns is None else owns
    if not 2 <= len(owns) <= FEW_MAX or _joint_binds(rm, owns):
        return None
    return _search(rm, owns, floor, blocks, [budget])


class _Above(Exception):
    """`_search` with `first`: a plan above the floor exists."""


def _search(rm: RoundModel, owns: list[_Own], floor: int, blocks, left: list[int],
            first: bool = False, memo: bool = True) -> tuple[int, list | None] | None:
    """`beyond`'s branch and bound over `owns` (search nodes from `left`, shared by the caller);
    with `first`, it stops at the first plan above `floor` (its value and plan are then not the
    relaxation's best: only that one exists). `memo`: `_fill`'s (False: every placement searched,
    for tests: the same answers and nodes)."""
    pairs = [(_mask(a), _mask(b)) for a, b in blocks]
    # per request: [(best it reaches there, GPU mask, (values, busy, best up to n) or None, gpus,
    # keep flag of waiting, the a of each block pair (a, b) whose b holds the set)], best first
    opts = []
    for o in owns:
        v0, k0 = o.value(0, 0, 0, 0)
        row = [(v0, 0, None, (), k0, ())]
        for vals, busy, upto, sets in _classes(rm, o):
            for g in sets:
                m = _mask(g)
                row.append((upto[-1][0], m, (vals, busy, upto), g, None, tuple(a for a, b in pairs if m & b == m)))
        row.sort(key=lambda t: -t[0])
        opts.append(row)
    rest = [sum(row[0][0] for row in opts[i:]) for i in range(len(opts) + 1)]
    best: list = [floor, None]
    chosen: list = []
    fills: dict | None = {} if memo else None  # (_fill's: placements that share GPUs alike)

    R, n_opts = rm.state.round_us, len(opts)

    def place(i: int, acc: int) -> None:
        if i >= 2:
            if i == n_opts:
                _fill(R, owns, chosen, best, left, None, fills)
                if first and best[1] is not None:
                    raise _Above
                return
            # those placed so far, sharing GPUs, plus the best the rest could add: cut if no better
            if not _fill(R, owns, chosen, best, left, rest[i], fills):
                return
        last = i == n_opts - 1
        seen = set()
        after = rest[i + 1]
        for opt in opts[i]:
            if acc + opt[0] + after <= best[0]:
                break  # best first: no later option of this request does better
            m = opt[1]
            if opt[5] and _unmatched(opt[5], chosen):
                continue  # inside b before anything inside a: a swap of the two reaches it
            if last:  # the last: sets of one class that meet the others alike are worth the same
                how = 0  # (per placed request, 3 bits: inside it, holding it, apart)
                for c in chosen:
                    cm = c[1]
                    how = how << 3 | (m & cm == m) << 2 | (m & cm == cm) << 1 | (not m & cm)
                key = (id(opt[2][0]) if opt[2] else None, how)
                if key in seen:
                    continue
                seen.add(key)
                if i >= 1:  # (place(i + 1), inline: the whole placement)
                    chosen.append(opt)
                    _fill(R, owns, chosen, best, left, None, fills)
                    chosen.pop()
                    if first and best[1] is not None:
                        raise _Above
                    continue
            chosen.append(opt)
            place(i + 1, acc + opt[0])
            chosen.pop()

    try:
        place(0, 0)
    except _OutOfNodes:
        return None
    except _Above:
        pass
    finally:
        place = None  # (a recursive closure is a reference cycle: freed now, not by the garbage collector)
    return best[0], best[1]


def _steps_per_us(rm: RoundModel, o: _Own) -> list[tuple[float, float]]:
    """The most steps o can run this round for a given GPU-time (steps x degree x step time, on
    any of its sets), relaxed to its upper concave envelope: segments (steps per GPU-us, GPU-us),
    steepest first. The real curve is a maximum of ramps (degree k: up to its cap of steps at k x
    t_k GPU-us each), so the envelope is above it."""
    m = rm.model
    pts = sorted({(min(m.ub[s], o.rem) * len(g) * t, min(m.ub[s], o.rem)) for g, t, _, s in rm.cand[o.rid]
                  if m.ub[s] > 0})
    hull = [(0, 0)]
    for b, n in pts:
        if n <= hull[-1][1]:
            continue  # costs more GPU-time for no more steps
        while len(hull) >= 2 and ((hull[-1][1] - hull[-2][1]) * (b - hull[-2][0])
                                  <= (n - hull[-2][1]) * (hull[-1][0] - hull[-2][0])):
            hull.pop()  # below the chord from the point before it: not on the envelope
        hull.append((b, n))
    return [((n1 - n0) / (b1 - b0), b1 - b0) for (b0, n0), (b1, n1) in zip(hull, hull[1:]) if b1 > b0]


def _keep_sets(rm: RoundModel, owns: list[_Own]) -> list[frozenset[str]]:
    """The largest sets of requests the joint test could keep together (none is a subset of
    another): a kept set of any plan of the model is inside one of them. Each joint row is tested
    on its own, relaxed: the requests due by its time run this round with the whole cluster's
    GPU-time shared out to shrink the row's work most (`_steps_per_us`, a fractional knapsack).
    Kept, a request that cannot finish this round owes its decode (its row's term is then fixed);
    a forecast row (horizon.add_forecast) takes its room off the row of the request's due time.
    Which GPUs a set takes, and the decode of a request that could finish, are dropped (both only
    make the test harder), so a set failing it cannot be kept by any plan."""
    m, st = rm.model, rm.state
    room = st.cluster.gpus * st.round_us
    can = [o for o in owns if o.can]
    own = {o.u: o for o in can}
    segs = {o.u: _steps_per_us(rm, o) for o in can}
    top = {o.u: max((m.ub[s] for *_, s in rm.cand[o.rid]), default=0) for o in can}
    owes = {rm.owed[u][0]: own[u] for u in own if u in rm.owed and top[u] < own[u].rem}  # owed for sure if kept
    rows = []  # per joint row: capacity, the (u var, GPU-ms a step) due by then, the decodes owed by then
    due: list[tuple[int, int]] = []
    owed: list[tuple[str, int]] = []
    forecast: list[tuple[str, int]] = []  # (request, forecast room) whose forecast row is this row
    for acc, group, _ in rm.running:
        due += [(v, c) for v, c in group.items() if v in own]
        owed += [(owes[v].rid, c) for v, c in group.items() if v in owes]
        forecast = [(own[v].rid, rm.extra_need[own[v].rid]) for v in group
                    if v in own and rm.extra_need.get(own[v].rid)]
        rows.append((m.ub[acc], list(due), list(owed), forecast))

    def fits(keep: frozenset[str]) -> bool:
        for cap, terms, fixed, ahead in rows:
            terms = [(v, c) for v, c in terms if own[v].rid in keep]
            cap -= max((f for i, f in ahead if i in keep), default=0)
            work = sum(c * own[v].rem for v, c in terms) + sum(c for i, c in fixed if i in keep)
            if work <= cap:
                continue
            gain, left = 0.0, room
            for rate, length in sorted(((c * r, n) for v, c in terms for r, n in segs[v]), reverse=True):
                take = min(left, length)
                gain += rate * take
                left -= take
                if left <= 0:
                    break
            if work - gain > cap + 1e-6 * max(1, abs(cap)):  # (floats: a set is ruled out only by a clear margin)
                return False
        return True

    out: list[frozenset[str]] = []
    for size in range(len(can), -1, -1):
        for ids in itertools.combinations([o.rid for o in can], size):
            keep = frozenset(ids)
            if not any(keep <= k for k in out) and fits(keep):
                out.append(keep)
    return out


def proved(rm: RoundModel, floor: int, blocks: list[tuple[tuple[int, ...], tuple[int, ...]]] = (),
           budget: int = 3000, few: int = 5, whole: int = 4, owns: list[_Own] | None = None) -> bool:
    """Whether no plan of the model is worth more than `floor` (a plan's value already found), on
    rounds of 2..`whole` requests, and up to `few` where the joint test cannot keep every request
    (`_keep_sets`): `beyond`'s relaxation, searched once per set the joint test could keep, with
    every request outside it given up, finds nothing above it (each search stops at the first plan
    above). `beyond` drops the joint test's coupling, so where it binds (three 2,048 px images on 8
    GPUs) its bound is a keep weight above the optimum, and it is not tried. False when `budget`
    search nodes (all sets together) were not enough."""
    if not 2 <= len(rm.keep) <= few:  # (before request_options: a backlog's round has hundreds)
        return False
    owns = request_options(rm) if owns is None else owns
    keeps = _keep_sets(rm, owns)
    if len(owns) > whole and keeps == [frozenset(o.rid for o in owns if o.can)]:
        return False  # five requests that could all be kept: it runs out of nodes (110,000 to prove one)
    left = [budget]
    for keep in keeps:
        sub = [copy.copy(o) for o in owns]
        for o in sub:
            o.can = o.can and o.rid in keep
        got = _search(rm, sub, floor, blocks, left, first=True)
        if got is None or got[1] is not None:
            return False
    return True


def _fill(R: int, owns: list[_Own], chosen: list, best: list, left: list[int], extra: int | None = None,
          memo: dict | None = None) -> bool:
    """The best steps for one placement (`beyond`): every request whose set contains another's
    shares the round of that set's GPUs with it; record it in `best` ([value, plan]) if better.
    With `extra` (a part placement: the best the others could add), only whether it could beat
    `best`, recording nothing. Every call and step takes one of the nodes `left`.

    `memo` (one per `_search`): placements that share GPUs alike (each request's class, the
    chains) searched from the same `best` value with the same `extra` are searched alike, node
    for node (the search reads nothing else: not which GPUs), so the first one's outcome, nodes
    and steps answer the rest; the plan recorded is rebuilt on the placement's own sets."""
    union = 0
    for c in chosen:
        if c[1] & union:
            break
        union |= c[1]
    else:  # pairwise disjoint (most placements): each at its best on its set
        return _apart(owns, chosen, best, left, extra)
    masks = [c[1] for c in chosen]
    # chains: a request and those whose sets contain its set; they share a GPU (its set's)
    chains: list[tuple[int, ...]] = []
    for ma in masks:
        if ma:
            ch = tuple([b for b, mb in enumerate(masks) if mb & ma == ma])
            if len(ch) > 1 and ch not in chains:
                chains.append(ch)
    if not chains:
        return _apart(owns, chosen, best, left, extra)
    if memo is None:
        return _share(R, owns, chosen, best, left, extra, chains)
    key = (tuple([id(c[2][0]) if c[2] else None for c in chosen]), tuple(chains), best[0], extra)
    hit = memo.get(key)
    if hit is not None:
        nodes, found, value, got = hit
        left[0] -= nodes
        if left[0] < 0:
            raise _OutOfNodes  # (where the search itself would have run out)
        if got is not None:
            best[0] = value
            best[1] = [(owns[a].rid, c[3], n, kp) for a, (c, (n, kp)) in enumerate(zip(chosen, got))]
        return found
    before, plan = left[0], best[1]
    found = _share(R, owns, chosen, best, left, extra, chains)
    memo[key] = (before - left[0], found, best[0], None if best[1] is plan else [(n, kp) for _, _, n, kp in best[1]])
    return found


def _share(R: int, owns: list[_Own], chosen: list, best: list, left: list[int], extra: int | None,
           chains: list[tuple[int, ...]]) -> bool:
    """`_fill`'s search where sets nest: the steps of the requests in `chains` (each a request and
    those whose sets contain its set), best first, the GPUs each chain shares within the round."""
    mine: dict[int, list[int]] = {}  # request -> the chains it is in
    for c, ch in enumerate(chains):
        for a in ch:
            if a in mine:
                mine[a].append(c)
            else:
                mine[a] = [c]
    tied = sorted(mine, key=lambda a: (-len(mine[a]), a))  # in most chains first
    k = len(chosen)
    free = 0
    for a in range(k):
        if a not in mine:
            free += chosen[a][0]
    steps = [0] * k  # (of the tied ones: set along the search; the others' when recorded)
    load = [0] * len(chains)
    ext = extra or 0
    after = [ext] * (len(tied) + 1)  # the best the tied ones from j on (and `extra`) could add
    for j in range(len(tied) - 1, -1, -1):
        after[j] = after[j + 1] + chosen[tied[j]][0]
    # per tied request: (index, values, busy time, best up to n, its one chain or None, its chains)
    level = [(a, *chosen[a][2], mine[a][0] if len(mine[a]) == 1 else None, mine[a]) for a in tied]
    last = len(tied) - 1
    found = False

    def record(acc: int) -> None:
        best[0] = acc
        best[1] = [(owns[a].rid, c[3], *_steps_kept(c, steps[a] if a in mine else None)) for a, c in enumerate(chosen)]

    def step(j: int, acc: int) -> None:
        nonlocal found
        left[0] -= 1
        if left[0] < 0:
            raise _OutOfNodes
        if (found and extra is not None) or acc + after[j] <= best[0]:
            return
        if j > last:
            found = True
            if extra is None:
                record(acc)
            return
        a, vals, busy, upto, one, cs = level[j]
        room = R - (load[one] if one is not None else max([load[c] for c in cs]))
        top = bisect.bisect_right(busy, room) - 1  # busy grows with the steps
        if j == last:  # the last: its best within the room left (the node below, inline)
            if top >= 1:
                steps[a] = upto[top][1]
                acc += upto[top][0]
                left[0] -= 1
                if left[0] < 0:
                    raise _OutOfNodes
                if not (found and extra is not None) and acc + ext > best[0]:
                    found = True
                    if extra is None:
                        record(acc)
            return
        nxt = after[j + 1]
        for n in range(top, 0, -1):
            if acc + upto[n][0] + nxt <= best[0]:
                return  # no fewer steps of it does better (upto: its best up to n)
            b = busy[n]
            for c in cs:
                load[c] += b
            steps[a] = n
            step(j + 1, acc + vals[n][0])
            for c in cs:
                load[c] -= b
            if found and extra is not None:
                return

    try:
        step(0, free)
    finally:
        step = None  # (a recursive closure is a reference cycle: freed now, not by the garbage collector)
    return found


def _steps_kept(c, n: int | None = None) -> tuple[int, bool]:
    """(steps, kept) of a placed option `c` of `_search` run n steps (None: its best on its own set,
    the last of its best-up-to list), as a plan row records them."""
    vals = c[2]
    if n is None:
        n = vals[2][-1][1] if vals else 0
    return n, (vals[0][n][1] if vals else c[4])


def _apart(owns: list[_Own], chosen: list, best: list, left: list[int], extra: int | None) -> bool:
    """`_fill` of a placement whose sets are pairwise disjoint: each request at its best on its set."""
    total = 0
    for c in chosen:
        total += c[0]
    left[0] -= 1
    if total + (extra or 0) <= best[0]:
        return False
    if extra is None:
        best[0] = total
        best[1] = [(owns[a].rid, c[3], *_steps_kept(c)) for a, c in enumerate(chosen)]
    return True


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
        future = rm.convex[rid][:1] if rid in rm.convex else ()
        terms = {v: obj.pop(v) for v in (*own, rm.keep[rid], rm.done[rid], rm.left[rid], *future) if v in obj}
        lo = sum(min(c * m.lb[v], c * m.ub[v]) for v, c in terms.items())
        val = m.var(f"value[{rid}]", lo, max(lo, best))
        m.add({**terms, val: -1}, lb=0, ub=0)
        obj[val] = 1
        added.append(terms)
    m.objective = obj
    if hint is None:
        return None
    return list(hint) + [sum(c * hint[v] for v, c in t.items()) for t in added]
