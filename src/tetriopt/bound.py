"""An upper bound on the deadlines any plan can meet, from a hindsight relaxation (docs/bound.md).

For each request i, rounds j in which it can work before its due time (deadline - VAE decode),
and useful degrees k, an integer n[i,j,k] counts its steps at degree k in round j:

    maximise   sum_i y_i
    s.t.       sum_{j,k} n[i,j,k] = S_i * y_i                     (a met request does all its steps)
               sum_k T_i(k) * n[i,j,k] <= cap[i,j]                 (one step at a time; cap = the part
                                                                    of round j before its due time)
               sum_{i,k} k T_i(k) n[i,j,k] <= N * R                (GPU-time of round j)
               sum_{i: due_i <= t} sum_k k T_i(k) n[i,j,k] <= N (t - jR)
                                                                   (for each due time t inside round j)
               y binary, n integer >= 0, n[i,j,k] = 0 before i's first round boundary

and, since each assignment also runs the request's text encode (its first) or VAE decode (the one
that finishes it) on its whole set, binaries first/last[i,j,k] place those, and the rows above
charge them (cuts (6)-(8) of docs/bound.md); the per-request rows are also scaled by y_i (9), and a
met request costs at least the least GPU-time of any plan of it alone (10, `least_work_us`).

Every valid plan (simulator semantics: rounds, aligned sets, steps inside rounds) restricted to
the requests it meets is a solution, so the optimum is >= the best met count. It is solved with
CP-SAT per connected component of overlapping request windows. A component not proven optimal
within its share of the time limit contributes a looser bound that is still valid, and the result
says which (`per_component[].method`): CP-SAT's proven objective bound when the search ended
FEASIBLE (for this maximisation that is an upper bound on the integer optimum), else (no
solution, or no time left to build or search the component) the number of its requests that
could meet their deadline alone on an empty cluster. The time limit covers everything: model
building counts, and components left when it runs out are not searched.

The extended model (`arrival_visible`, `batching`; docs/bound.md) bounds plans that may start a
request mid-round at its arrival and share steps between same-size requests: request i's first
round is the one it arrives in, with only the time after its arrival usable, and in the GPU-time
rows a step costs i its cheapest share of any batch, min over B of k T_i(k, B) / B.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .instance import Instance, Request
from .lookahead import useful


@dataclass(frozen=True)
class Window:
    """What request i could do towards meeting its deadline."""

    request: Request
    first_round: int
    due_us: int
    step: dict[int, int]            # useful degree -> step latency (us)
    caps: dict[int, int]            # round -> usable time in that round (us)
    gpu: dict[int, int] = field(default_factory=dict)  # degree -> GPU-time charged per step (us)
    room: dict[int, int] = field(default_factory=dict)  # round -> its time from arrival to deadline (us)
    encode_us: int = 0                  # the text encode before its first step, in that assignment
    decode_us: int = 0                  # the VAE decode after its last step, in that assignment
    # least_work_us by (aux, one_set): the screen and every build_model of the window ask the same
    # (a fresh dict per window, also under dataclasses.replace: init=False)
    least: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def gpu_us(self, k: int) -> int:
        return self.gpu.get(k, k * self.step[k])

    @property
    def last_round(self) -> int:
        return max(self.caps) if self.caps else self.first_round - 1

    def max_steps(self) -> int:
        t = min(self.step.values()) if self.step else 0
        return sum(c // t for c in self.caps.values()) if t else 0


def least_work_us(w: Window, aux: bool = True, one_set: bool = False) -> int:
    """The least GPU-time a met request costs, over every integer plan of it alone that the model's
    per-request rows allow: whole steps; in each round at most its usable time before the due time
    (cap), the round it starts in also holding the encode and the round it ends in the decode
    before the deadline (room); both charged on the narrowest degree that round uses (the first /
    last assignment's degree is one of those). Per round and narrowest degree, the Pareto front of
    (time, GPU-time) by step count; then a DP over rounds (not started / running). 0 if none.
    `one_set`: a round's steps all run at one degree (one GPU set per request per round).
    Computed once per window and (aux, one_set)."""
    if (aux, one_set) not in w.least:
        w.least[aux, one_set] = _least_work(w, aux, one_set)
    return w.least[aux, one_set]


def _least_work(w: Window, aux: bool, one_set: bool) -> int:
    S, enc, dec = w.request.steps, (w.encode_us if aux else 0), (w.decode_us if aux else 0)
    degs = sorted(w.step)
    INF = 1 << 62
    todo = {0: 0}   # not started yet: steps 0 -> cost
    run: dict[int, int] = {}  # started, not finished: steps so far -> least cost
    done = INF
    for j, cap in sorted(w.caps.items()):
        room = w.room.get(j, cap)
        # fronts[k0][s]: [(time, GPU-time)] of s >= 1 steps in this round, narrowest degree k0
        fronts = {k0: _fronts([(w.step[k], w.gpu_us(k)) for k in degs if k == k0 or k > k0 and not one_set], cap, S)
                  for k0 in degs}

        def best(limit: int, aux_us: int) -> dict[int, int]:
            out: dict[int, int] = {}
            for k0, fr in fronts.items():
                for n, pts in fr.items():
                    g = min((g for t, g in pts if t <= limit), default=INF)
                    if g < INF and g + k0 * aux_us < out.get(n, INF):
                        out[n] = g + k0 * aux_us
            return out

        plain, first = best(cap, 0), best(cap - enc, enc)
        last, both = best(min(cap, room - dec), dec), best(min(cap - enc, room - enc - dec), enc + dec)
        nxt_run = dict(run)  # a round without steps
        for s0, c0 in run.items():
            for n, c in plain.items():
                if s0 + n < S and c0 + c < nxt_run.get(s0 + n, INF):
                    nxt_run[s0 + n] = c0 + c
            for n, c in last.items():
                if s0 + n == S:
                    done = min(done, c0 + c)
        for n, c in first.items():
            if n < S and c < nxt_run.get(n, INF):
                nxt_run[n] = c
        if S in both:
            done = min(done, both[S])
        run = nxt_run
    return 0 if done == INF else done


def _fronts(kinds: list[tuple[int, int]], cap: int, S: int) -> dict[int, list[tuple[int, int]]]:
    """Step count n >= 1 -> Pareto front [(time, GPU-time)] of n steps within `cap` made of the
    (step time, GPU-time) kinds, at least one of the first kind."""
    front: dict[int, list[tuple[int, int]]] = {}
    t1, g1 = kinds[0]
    for n in range(1, S + 1):
        if n * t1 > cap:
            break
        front[n] = [(n * t1, n * g1)]
    for t, g in kinds[1:]:
        nxt: dict[int, list[tuple[int, int]]] = {}
        for s0, pts in front.items():
            for t0, g0 in pts:
                n = 0
                while s0 + n <= S and t0 + n * t <= cap:
                    nxt.setdefault(s0 + n, []).append((t0 + n * t, g0 + n * g))
                    n += 1
        front = {n: _pareto(pts) for n, pts in nxt.items()}
    return front


def _pareto(pts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, best = [], None
    for t, g in sorted(pts):
        if best is None or g < best:
            out.append((t, g))
            best = g
    return out


def _minplus(a: dict[int, int], b: dict[int, int], cap: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for x, ga in a.items():
        for y, gb in b.items():
            if x + y <= cap and ga + gb < out.get(x + y, 1 << 62):
                out[x + y] = ga + gb
    return out


def useful_steps(inst: Instance, r: Request) -> dict[int, int]:
    """Degrees whose step fits in a round and is faster than every smaller degree's."""
    return useful({k: inst.step_us(r, k) for k in inst.degrees if inst.cluster.sets(k)}, inst.round_us)


def batched_steps(inst: Instance, r: Request) -> tuple[dict[int, int], dict[int, int]]:
    """(step time, GPU-time charged per step) by degree when steps may be shared: over the batch
    sizes B at which degree k is faster than every smaller degree, the shortest step and the
    cheapest per-member share k T(k, B) / B. (A batch on a set no faster than a smaller aligned
    subset can move there without finishing later or adding load, so other (k, B) never help.)"""
    p, step, gpu = inst.profile, {}, {}
    best: dict[int, int] = {}  # batch size -> fastest step of the smaller degrees so far
    for k in sorted(inst.degrees):
        if not inst.cluster.sets(k):
            continue
        useful = []
        for b in p.batch_sizes:
            t = p.step_us(r.width, r.height, k, b)
            if t <= inst.round_us and t < best.get(b, t + 1):
                useful.append((t, b))
            best[b] = min(best.get(b, t), t)
        if useful:
            step[k] = min(t for t, _ in useful)
            gpu[k] = min(k * t // b for t, b in useful)
    return step, gpu


def window(inst: Instance, r: Request, arrival_visible: bool = False, batching: bool = False) -> Window:
    R = inst.round_us
    # the simulator shows a request from the first boundary >= arrival; with immediate starts it
    # may run from its arrival on, inside the round it arrives in
    first = r.arrival_us // R if arrival_visible else -(-r.arrival_us // R)
    due = r.deadline_us - inst.profile.vae_decode_us(r.width, r.height)
    step, gpu = batched_steps(inst, r) if batching else (useful_steps(inst, r), {})
    caps = {}
    j = first
    while step and j * R < due:
        caps[j] = min(R, due - j * R) - max(0, r.arrival_us - j * R)
        j += 1
    caps = {j: c for j, c in caps.items() if c > 0}
    # the decode runs right after the last step, in that step's round (RoundState.aux_us): a met
    # request finishes in a round whose rest before the deadline holds a step and the decode, so
    # its steps lie in the rounds up to the last such round, and in that one only before its end
    # less the decode (a round whose rest cannot hold them is no use; the one before must keep
    # room for the decode). Plans that finish earlier run nothing there: still a relaxation.
    t = min(step.values()) if step else 0
    for j in sorted(caps, reverse=True):
        fin = min(R, r.deadline_us - j * R) - inst.profile.vae_decode_us(r.width, r.height) \
            - max(0, r.arrival_us - j * R)
        if fin >= t:
            caps[j] = min(caps[j], fin)
            break
        del caps[j]
    room = {j: min(R, r.deadline_us - j * R) - max(0, r.arrival_us - j * R) for j in caps}
    return Window(r, first, due, step, caps, gpu, room, inst.profile.text_encode_us,
                  inst.profile.vae_decode_us(r.width, r.height))


@dataclass
class BoundResult:
    requests: int
    met_bound: int
    feasible_alone: int                 # requests that could meet their deadline on an empty cluster
                                        # (those the time limit left unchecked included)
    components: int
    optimal_components: int
    incumbent: int                      # best relaxation solution found (= met_bound when all optimal)
    solve_s: float
    per_component: list[dict] = field(default_factory=list)
    incumbent_met: tuple[str, ...] = ()  # requests met in the relaxation's best solution (a witness, not a plan)
    features: tuple[str, ...] = ()      # the extended model's: "immediate_start", "batching" (empty: TetriServe's)
    methods: dict[str, int] = field(default_factory=dict)  # components bounded by each method (METHODS)

    @property
    def slo_attainment_bound(self) -> float:
        return self.met_bound / self.requests if self.requests else 1.0

    @property
    def status(self) -> str:
        return "OPTIMAL" if self.optimal_components == self.components else "BOUND"

    def to_json(self) -> dict:
        return {"slo_attainment_bound": round(self.slo_attainment_bound, 6), "met_bound": self.met_bound,
                "requests": self.requests, "status": self.status, "feasible_alone": self.feasible_alone,
                "components": self.components, "optimal_components": self.optimal_components,
                "relaxation_incumbent": self.incumbent, "bound_methods": self.methods,
                "solve_s": round(self.solve_s, 3), **({"features": list(self.features)} if self.features else {})}


def components(ws: list[Window]) -> list[list[Window]]:
    """Groups of requests whose round windows overlap (transitively); they share no round otherwise."""
    out: list[list[Window]] = []
    end = None
    for w in sorted(ws, key=lambda w: (w.first_round, w.last_round, w.request.id)):
        if end is None or w.first_round > end:
            out.append([w])
            end = w.last_round
        else:
            out[-1].append(w)
            end = max(end, w.last_round)
    return out


def block_levels(inst: Instance) -> list[int]:
    """Degrees b > 1 whose aligned sets partition the GPUs, every wider set being a union of them."""
    out = []
    for b in inst.degrees:
        blocks = inst.cluster.sets(b)
        if b <= 1 or len(blocks) * b != inst.cluster.gpus or len({g for s in blocks for g in s}) != inst.cluster.gpus:
            continue
        ok = all(set(blk) <= set(s) or not set(blk) & set(s)
                 for d in inst.degrees if d >= b for s in inst.cluster.sets(d) for blk in blocks)
        if ok:
            out.append(b)
    return out


METHODS = ("optimal", "cpsat-bound", "lp-bound", "mip-bound", "pieces", "feasible-alone", "unchecked")
LP_FIRST = 20  # components of this many requests get the LP bound before any search
PIECE_MAX = 400  # bigger components are bounded piecewise (`_solve_pieces`), in pieces of about PIECE
PIECE = 100
LIN2_MAX = 80  # smaller components are searched with CP-SAT's linearization level 2


def build_model(inst: Instance, ws: list[Window], aux: bool = True, m=None, one_set: bool = False):
    """The relaxation of one component as a CP-SAT model (objective set): (model, y per window).

    With `aux` (docs/bound.md, cuts (6)-(8)) binaries first[i,j,k] / last[i,j,k] say in which round
    and at which degree a met request runs its first / last step; that assignment also runs the
    text encode / VAE decode on its k GPUs, which the rows below then charge.

    With `one_set` (TetriServe's model: a request holds one GPU set per round; cut (11)) binaries
    z[i,j,k] pick that set's degree."""
    from ortools.sat.python import cp_model

    N, R = inst.cluster.gpus, inst.round_us
    m = cp_model.CpModel() if m is None else m
    ys = []
    # round -> [(done by, GPU-time, degree, the request's own time, request)]: one entry per step
    # variable (done by its due time), and with `aux` one per first indicator (its encode, also
    # done by the due time) and one per last indicator (its decode, done by the deadline)
    by_round: dict[int, list[tuple]] = {}
    # round -> GPU-time that sets busy more than R - eps leave idle (cut (12)); eps: the shortest
    # assignment any request could run (one step, at its fastest degree)
    waste: dict[int, list] = {}
    eps = min((inst.step_us(q, k) for q in inst.requests for k in inst.degrees if inst.cluster.sets(k)), default=0)
    for w in ws:
        r = w.request
        y = m.new_bool_var(f"y[{r.id}]")
        ys.append(y)
        steps: dict[int, dict[int, object]] = {}  # round -> degree -> n
        for j, cap in w.caps.items():
            for k, t in w.step.items():
                hi = cap // t
                if hi > 0:
                    n = steps.setdefault(j, {})[k] = m.new_int_var(0, min(hi, r.steps), f"n[{r.id},{j},{k}]")
                    by_round.setdefault(j, []).append((w.due_us, w.gpu_us(k) * n, k, t * n, r.id))
        m.add(sum(n for row in steps.values() for n in row.values()) == r.steps * y)
        z: dict[tuple[int, int], object] = {}
        if one_set:  # (11) one degree per round
            for j, row in steps.items():
                for k, n in row.items():
                    z[j, k] = m.new_bool_var(f"z[{r.id},{j},{k}]")
                    m.add(n <= min(w.caps[j] // w.step[k], r.steps) * z[j, k])
                m.add(sum(z[j, k] for k in row) <= y)
        own = {j: sum(w.step[k] * n for k, n in row.items()) for j, row in steps.items()}
        for j, row in steps.items():  # no work unless met: the same rows scaled by y (LP strength)
            m.add(own[j] <= w.caps[j] * y)
            m.add(sum(row.values()) <= min(w.caps[j] // min(w.step[k] for k in row), r.steps) * y)
            for k, n in row.items():
                m.add(n <= min(w.caps[j] // w.step[k], r.steps) * y)
        mine = [w.gpu_us(k) * n for row in steps.values() for k, n in row.items()]  # its GPU-time
        if aux:
            # it starts in round j only if rounds j.. can hold all its steps, and finishes there (at
            # degree k) only if rounds ..j can and a step and the decode fit before its deadline
            t = min(w.step.values())
            most = {j: w.caps[j] // t for j in steps}
            fits_from = {j: sum(c for jj, c in most.items() if jj > j) + (w.caps[j] - w.encode_us) // t for j in steps}
            fits_by = {j: sum(c for jj, c in most.items() if jj < j) + min(w.caps[j], w.room[j] - w.decode_us) // t
                       for j in steps}
            first = {(j, k): m.new_bool_var(f"first[{r.id},{j},{k}]") for j, row in steps.items() for k in row
                     if fits_from[j] >= r.steps}
            last = {(j, k): m.new_bool_var(f"last[{r.id},{j},{k}]") for j, row in steps.items() for k in row
                    if w.step[k] + w.decode_us <= w.room[j] and fits_by[j] >= r.steps}
            m.add(sum(first.values()) == y)
            m.add(sum(last.values()) == y)
            for (j, k), v in (*first.items(), *last.items()):
                m.add(v <= steps[j][k])  # that round runs a step at that degree
                if one_set:
                    m.add(v <= z[j, k])
            rounds = sorted(steps)
            for x, j in enumerate(rounds):
                after = [n for jj in rounds[x + 1:] for n in steps[jj].values()]
                ended = [v for (jj, _), v in last.items() if jj <= j]
                if after and ended:  # no step after the finishing round
                    m.add(sum(after) + r.steps * sum(ended) <= r.steps * y)
                before = [n for jj in rounds[:x] for n in steps[jj].values()]
                later = [v for (jj, _), v in first.items() if jj >= j]
                if before and later:  # no step before the first round
                    m.add(sum(before) + r.steps * sum(later) <= r.steps * y)
            for j, row in steps.items():
                enc = sum(first[j, k] for k in row if (j, k) in first)
                dec = sum(last[j, k] for k in row if (j, k) in last)
                m.add(own[j] + w.encode_us * enc <= w.caps[j])  # the encode precedes steps due by due_us
                m.add(own[j] + w.encode_us * enc + w.decode_us * dec <= w.room[j])
                for k in row:
                    if (j, k) in first:
                        e = w.encode_us * first[j, k]
                        by_round[j].append((w.due_us, k * e, k, e, r.id))
                        mine.append(k * e)
                    if (j, k) in last:
                        e = w.decode_us * last[j, k]
                        by_round[j].append((r.deadline_us, k * e, k, e, r.id))
                        mine.append(k * e)
        else:
            for j, row in steps.items():
                if len(row) > 1:
                    m.add(own[j] <= w.caps[j])
        if one_set:  # (12) a set busy more than R - eps in a round has no room left for any step
            for j, row in steps.items():
                for k, n in row.items():
                    t, hi = w.step[k], min(w.caps[j] // w.step[k], r.steps)
                    n0 = (R - eps) // t
                    if n0 >= hi:
                        continue  # its steps never keep the set that busy
                    h = m.new_bool_var(f"full[{r.id},{j},{k}]")
                    m.add(h <= z[j, k])
                    m.add(n <= n0 * z[j, k] + (hi - n0) * h)  # more than n0 steps: h = 1
                    f, l = (first.get((j, k)), last.get((j, k))) if aux else (None, None)
                    aux_on = [(e, v) for e, v in ((w.encode_us, f), (w.decode_us, l)) if v is not None and e]
                    idle = m.new_int_var(0, k * R, f"idle[{r.id},{j},{k}]")
                    m.add(idle >= k * (R - t * hi) * h - sum(k * e * v for e, v in aux_on))
                    waste.setdefault(j, []).append(idle)
        least = least_work_us(w, aux, one_set)  # (10): a met request costs at least this
        if least:
            m.add(sum(mine) >= least * y)
    levels = block_levels(inst)
    for j, terms in by_round.items():
        m.add(sum(g for _, g, *_ in terms) + sum(waste.get(j, [])) <= N * R)
        start, end = j * R, (j + 1) * R
        # each due time t inside the round: the work done by t runs in [jR, t] (as a chain of
        # running sums, so that each row is short: the same rows, a smaller model)
        dues = sorted({d for d, *_ in terms if start < d < end})
        done, prev = None, -1
        for d in dues:
            part = [g for by, g, *_ in terms if prev < by <= d]
            nxt = m.new_int_var(0, N * (d - start), f"done[{j},{d}]")
            m.add(nxt == (done if done is not None else 0) + sum(part))
            done, prev = nxt, d
        # blocks of size b partition the GPUs and every wider set is a union of them: while a
        # request runs narrower than b, its block runs nothing wide, so
        # b * (its narrow time) + GPU-time of all work at degree >= b <= N * R
        owners = {term[4] for term in terms}
        for b in levels:
            wide = [g for _, g, k, _, _ in terms if k >= b]
            if not wide:
                continue
            total = m.new_int_var(0, N * R, f"wide[{j},{b}]")
            m.add(total == sum(wide))
            for rid in owners:
                narrow = [b * e for _, _, k, e, o in terms if o == rid and k < b]
                if narrow:
                    m.add(sum(narrow) + total <= N * R)
    m.maximize(sum(ys))
    return m, ys


_INF = 1 << 62


def lp_bound(model, time_limit_s: float, duals: list[float] | None = None, primal: list[float] | None = None
             ) -> float | None:
    """An upper bound on the maximum of a linear CP-SAT model (as `build_model` makes) from its LP
    relaxation: GLOP's row duals put into the weak-duality (Lagrangian) bound
    sum_r pi_r b_r + sum_x max over x's range of (c_x - sum_r pi_r a_rx) x, b_r the row's upper
    limit where pi_r > 0 and its lower one where pi_r < 0. That holds for any multipliers, so
    GLOP's tolerances or a time-out can only make it looser, never too small; both sign
    conventions are evaluated and the smaller counts. Rows that are not linear are left out (a
    relaxation). None if GLOP returns no duals within `time_limit_s` (building the LP included).
    `duals` (one per linear row, in order): use these multipliers instead of GLOP's (any give a
    bound; tests). `primal`: a list, filled with GLOP's value of each variable (a witness's guide)."""
    from ortools.linear_solver import pywraplp

    t0 = time.perf_counter()
    box, c, const, rows = lp_rows(model)

    def glop(params: str) -> bool:  # a fresh GLOP solve; on success the duals (and primal) are read
        nonlocal duals
        s = pywraplp.Solver.CreateSolver("GLOP")
        xs = [s.NumVar(lo, hi, "") for lo, hi in box]
        cons = []
        for r, (lo, hi, vs, cs) in enumerate(rows):
            if r % 256 == 0 and time.perf_counter() - t0 >= time_limit_s:  # a big LP's build is long
                return False
            row = s.Constraint(-s.infinity() if lo is None else lo, s.infinity() if hi is None else hi)
            for v, a in zip(vs, cs):
                row.SetCoefficient(xs[v], a)
            cons.append(row)
        obj = s.Objective()
        for x, cx in zip(xs, c):
            if cx:
                obj.SetCoefficient(x, cx)
        obj.SetMaximization()
        left = time_limit_s - (time.perf_counter() - t0)  # building the LP counts
        if left <= 0:
            return False
        s.SetSolverSpecificParametersAsString(params)
        s.SetTimeLimit(max(1, int(left * 1000)))
        if s.Solve() not in (s.OPTIMAL, s.FEASIBLE):
            return False
        duals = [row.dual_value() for row in cons]
        if primal is not None:
            primal[:] = [x.solution_value() for x in xs]
        return True

    # GLOP's dual simplex first (faster on the grid's big components: 16 GPUs / 64 pending 0.9
    # against 2.1 s, 64 / 128 4.5 against 7.5 s), with a looser check of its solution: at its
    # default GLOP ends IMPRECISE (no duals) on some (64 / 32 seed 0: both simplexes; the duals
    # need no precision, weak duality makes any a bound); then the primal, afresh.
    if duals is None and not any(glop(prm) for prm in ("use_dual_simplex: true solution_feasibility_tolerance: 1e-4",
                                                       "solution_feasibility_tolerance: 1e-4")):
        return None
    return min(weak_dual(box, c, const, rows, [sign * pi for pi in duals]) for sign in (1.0, -1.0))


def lp_rows(model) -> tuple[list[tuple[int, int]], list[float], float, list[tuple]]:
    """A linear CP-SAT model's LP data: (each variable's range, objective coefficients, objective
    constant, rows as (lower limit or None, upper limit or None, variable indices, coefficients)),
    its rows with enforcement literals or that are not linear left out (a relaxation)."""
    p = model.proto
    box = [(v.domain[0], v.domain[len(v.domain) - 1]) for v in p.variables]  # (no negative index here)
    sf = p.objective.scaling_factor or 1.0
    c = [0.0] * len(box)
    for v, a in zip(p.objective.vars, p.objective.coeffs):
        c[v] += sf * a
    lins = [(ct.linear, ct.linear.domain[0], ct.linear.domain[len(ct.linear.domain) - 1])
            for ct in p.constraints if ct.has_linear() and not len(ct.enforcement_literal)]
    rows = [(None if lo <= -_INF else lo, None if hi >= _INF else hi, list(lin.vars), list(lin.coeffs))
            for lin, lo, hi in lins]
    return box, c, sf * p.objective.offset, rows


def weak_dual(box, c, const: float, rows, duals) -> float:
    """The weak-duality bound on max c.x + const over the rows and ranges for row multipliers
    `duals` (any): sum_r pi_r b_r + sum_x max over x's range of (c_x - sum_r pi_r a_rx) x, b_r the
    row's upper limit where pi_r > 0, its lower one where pi_r < 0 (a row without that limit
    counts as pi_r = 0)."""
    d = list(c)
    val = [const]
    for pi, (lo, hi, vs, cs) in zip(duals, rows):
        if pi > 0 and hi is not None:
            val.append(pi * hi)
        elif pi < 0 and lo is not None:
            val.append(pi * lo)
        else:
            continue
        for v, a in zip(vs, cs):
            d[v] -= pi * a
    val += [dx * (box[x][1] if dx > 0 else box[x][0]) for x, dx in enumerate(d) if dx]
    return math.fsum(val)


def mip_bound(model, time_limit_s: float, start: list | None = None, max_nodes: int | None = None
              ) -> tuple[float | None, int | None]:
    """(HiGHS's proven bound on the maximum, its best solution's objective or None) of a linear
    CP-SAT model (as `build_model` makes, every variable integer), by HiGHS's branch and cut within
    `time_limit_s` (1 thread, fixed seed; its path still depends on the CPU it gets). On the grid's
    8-GPU components it proves optima 1-3 below what CP-SAT's search (one worker) proves in 150 s
    (docs/bound.md, seventh round): its cuts and branching on the knapsack-like rows. A floating-point
    solver: the bound is HiGHS's dual bound at its default tolerances (feasibility 1e-6, so it
    accepts points slightly outside the rows: looser, not tighter); CP-SAT's bound and `lp_bound`
    are exact. Rows `lp_rows` leaves out are left out here too (a relaxation). `start`: a solution
    (one value per variable) to start from (prunes more). `max_nodes`: also stop after that many
    branch-and-bound nodes (HiGHS's `mip_max_nodes`; with `time_limit_s` = inf the result no longer
    depends on the CPU it gets, docs/bound.md eighth round). None if HiGHS gives no bound. Needs
    highspy (the dev extras)."""
    import highspy
    import numpy as np

    box, c, const, rows = lp_rows(model)
    h = _quiet(highspy.Highs)
    for opt, v in (("output_flag", False), ("threads", 1), ("random_seed", 0), ("time_limit", max(0.001, time_limit_s))):
        h.setOptionValue(opt, v)
    if max_nodes is not None:
        h.setOptionValue("mip_max_nodes", max(0, int(max_nodes)))
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(box), len(rows)
    lp.col_cost_ = np.array(c, dtype=float)
    lp.col_lower_ = np.array([lo for lo, _ in box], dtype=float)
    lp.col_upper_ = np.array([hi for _, hi in box], dtype=float)
    lp.row_lower_ = np.array([-inf if lo is None else lo for lo, *_ in rows], dtype=float)
    lp.row_upper_ = np.array([inf if hi is None else hi for _, hi, *_ in rows], dtype=float)
    start_at, index, value = [0], [], []
    for _, _, vs, cs in rows:
        index += vs
        value += cs
        start_at.append(len(index))
    a = lp.a_matrix_
    a.format_ = highspy.MatrixFormat.kRowwise
    a.num_col_, a.num_row_ = len(box), len(rows)
    a.start_, a.index_, a.value_ = (np.array(start_at, dtype=np.int32), np.array(index, dtype=np.int32),
                                    np.array(value, dtype=float))
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.offset_ = const
    lp.integrality_ = [highspy.HighsVarType.kInteger] * len(box)
    h.passModel(lp)
    if start is not None and len(start) == len(box):
        sol = highspy.HighsSolution()
        sol.col_value = [float(v) for v in start]
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    info = h.getInfo()
    if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
        return None, None  # meeting none is a solution: a numerical failure, no bound taken
    bound = info.mip_dual_bound
    if not math.isfinite(bound) or abs(bound) >= inf:
        return None, None
    ok = info.primal_solution_status >= 1 and math.isfinite(info.objective_function_value)
    return bound, (round(info.objective_function_value) if ok else None)


def _quiet(make):
    """make(), its C++ side's prints to stdout dropped (HiGHS prints a banner when the first solver
    of a process is made, whatever its options: it would corrupt `tetriopt bound --json -`)."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _search(inst: Instance, ws: list[Window], aux: bool, deadline: float, workers: int, one_set: bool = False,
            model=None, cap: int | None = None) -> tuple[int, int, str, list[str]]:
    """(upper bound, incumbent, method, ids met in the incumbent) of one model of the component
    (`model`: (model, ys) already built), searched until `deadline` (perf_counter seconds); model
    building counts against it. `cap`: a proven bound on the model's optimum, added as a row (it
    cuts no optimal solution, and lets the search stop when it reaches it)."""
    from ortools.sat.python import cp_model

    if deadline - time.perf_counter() <= 0:
        return len(ws), 0, "feasible-alone", []
    m, ys = model or build_model(inst, ws, aux, one_set=one_set)
    if cap is not None and cap < len(ws):
        m.add(sum(ys) <= cap)
    for y in ys:  # meeting none is a solution: a search cut short still ends FEASIBLE with a bound
        m.add_hint(y, 0)
    left = deadline - time.perf_counter()
    if left <= 0:
        return len(ws), 0, "feasible-alone", []
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = left
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    # the LP with the rows CP-SAT linearises only at level 2: proves mid-size components that the
    # default leaves open (8 GPUs / 32 pending, 35 requests: optimal 25 in 8 deterministic s,
    # against a bound of 27 with the default; 16 / 8: 32 against 33). On big ones its root LP is
    # slower and the LP bound (lp_bound) is what counts, so they keep the default.
    if len(ws) < LIN2_MAX:
        solver.parameters.linearization_level = 2
    code = solver.solve(m)
    met = [w.request.id for w, y in zip(ws, ys) if code in (cp_model.OPTIMAL, cp_model.FEASIBLE) and solver.value(y)]
    if code == cp_model.OPTIMAL:
        v = int(round(solver.objective_value))
        return v, v, "optimal", met
    if code == cp_model.FEASIBLE:  # the proven bound of a maximisation that has a solution
        ub = int(solver.best_objective_bound + 1e-6)
        return max(len(met), min(ub, len(ws))), len(met), "cpsat-bound", met
    return len(ws), 0, "feasible-alone", []


def _solve_component(inst: Instance, ws: list[Window], deadline: float, workers: int, one_set: bool = False,
                     mip_s: float = 0.0, mip_nodes: int = 0) -> tuple[int, int, str, list[str]]:
    """(upper bound, incumbent, method, ids met in the incumbent) of the relaxation on one
    component, searched until `deadline` (perf_counter seconds). Every window in `ws` is feasible
    alone, so len(ws) is always a valid bound.

    The model without cuts (6)-(8) for a quarter of the time (small and quickly proven; a
    relaxation of the full one, so its bound is valid too), then the full model for the rest,
    told the smaller bound. The full model's LP relaxation (`lp_bound`, at most half of what is
    left; all of it from LIN2_MAX requests on, where at load 8-10 half did not suffice and the
    searches' bounds were no better than the LP's floor where it answered) comes first on
    components of LP_FIRST requests or more (on big ones CP-SAT's own bound stays above the LP's
    for long: 16 GPUs / 64 pending, 64-65 after 20 s at load 3, LP 63.4 in 2 s), between the two
    searches on smaller ones the first did not prove. The smallest bound
    counts. (Without the first search the full model, larger and slower to
    prove, ended above the old bound where it ran out of time: skewed-slo1.5, 298 against 297.)
    `mip_s` > 0: a component left unproven then gets up to that many more seconds of HiGHS's
    branch and cut on the full model (`mip_bound`), its floored
    bound counting where smaller (method `mip-bound`, even where HiGHS proves it optimal).
    `mip_nodes` > 0: HiGHS also stops after that many nodes; without `mip_s` it has no time limit
    then, so its figure is the same on any CPU (eighth round)."""
    if len(ws) == 1:
        return 1, 1, "optimal", [ws[0].request.id]  # feasible alone (checked by the caller)
    if len(ws) > PIECE_MAX:
        return _solve_pieces(inst, ws, deadline, one_set)
    start = time.perf_counter()
    lp, model = len(ws), None

    def relax() -> None:  # the full model's LP bound, in at most half of what is left (all on big ones)
        nonlocal lp, model
        if deadline > time.perf_counter():
            model = build_model(inst, ws, True, one_set=one_set)
            left = deadline - time.perf_counter()
            v = lp_bound(model[0], left if len(ws) >= LIN2_MAX else left / 2) if left > 0 else None
            if v is not None:
                lp = max(0, min(len(ws), math.floor(v + 1e-6)))

    if len(ws) >= LP_FIRST:  # big: the LP is the bound that counts at load, so it goes first
        relax()
    light = _search(inst, ws, False, time.perf_counter() + (deadline - time.perf_counter()) / 4, workers, one_set,
                    cap=lp)
    if model is None and light[2] != "optimal":
        relax()
    full = _search(inst, ws, True, deadline, workers, one_set, model, min(light[0], lp))
    ub = min(light[0], full[0], lp)
    if full[2] == "optimal" or full[1] == ub:
        return ub, full[1], "optimal", full[3]
    if mip_s > 0 or mip_nodes > 0:
        # the full model afresh (the searches added their cap row to theirs). Cut off by time,
        # HiGHS's result depends on the CPU it gets: on 8 GPUs / 64 pending seed 0 it proved 41 in
        # 127 and 227 s, and stopped at 43-44 after 240-420 s in three other runs (load 8-16); a
        # node limit alone (mip_nodes, no mip_s) gives the same figure on any CPU
        t0 = time.perf_counter()
        limit = mip_s if mip_s > 0 else math.inf
        v, _ = mip_bound(build_model(inst, ws, True, one_set=one_set)[0], limit - (time.perf_counter() - t0),
                         max_nodes=mip_nodes or None)
        if v is not None and math.floor(v + 1e-6) < ub:  # (proven or not: a floating-point proof, never "optimal")
            return max(0, math.floor(v + 1e-6)), full[1], "mip-bound", full[3]
    # the incumbent is the full model's (a solution of the light one may meet more than its bound)
    if ub == lp < len(ws):  # (the full search was told it: its bound is the LP's at best)
        method = "lp-bound"
    elif light[2] == full[2] == "feasible-alone":
        method = "feasible-alone"
    else:
        method = "cpsat-bound"
    return ub, full[1], method, full[3]


def _solve_pieces(inst: Instance, ws: list[Window], deadline: float, one_set: bool) -> tuple[int, int, str, list[str]]:
    """A component too big to model whole in the time (the issue's 64-GPU workload at full size is
    one of 1,356 requests: neither its LP nor a search answers within 60 s), bounded as the sum of
    the LP bounds (`lp_bound`, floored) of consecutive pieces of about PIECE requests (by first
    round), each given an equal share of what is left; a piece whose LP does not answer counts
    all its requests. Valid: every coupling row has non-negative terms only, so a solution of
    the whole, restricted to a piece's requests, is a solution of the piece's model, and each
    piece's LP optimum is at least what it meets there. Looser than the whole (requests near a
    cut lose the competitors across it), so only past PIECE_MAX requests. No incumbent."""
    k = -(-len(ws) // PIECE)
    ub, answered = 0, False
    for x in range(k):
        piece = ws[x * len(ws) // k:(x + 1) * len(ws) // k]
        share = (deadline - time.perf_counter()) / (k - x)
        v = None
        if share > 0:
            t0 = time.perf_counter()
            model, _ = build_model(inst, piece, True, one_set=one_set)
            v = lp_bound(model, share - (time.perf_counter() - t0))
        answered |= v is not None
        ub += len(piece) if v is None else max(0, min(len(piece), math.floor(v + 1e-6)))
    return ub, 0, "pieces" if answered else "feasible-alone", []


def feasible_alone(inst: Instance, arrival_visible: bool = False, batching: bool = False, one_set: bool = True
                   ) -> list[Window]:
    """The windows of the requests some plan of which alone (whole steps, encode and decode inside
    its rounds) meets the deadline: the ones the relaxation models."""
    return _screen(inst, arrival_visible, batching, one_set)[0]


def _screen(inst: Instance, arrival_visible: bool, batching: bool, one_set: bool, deadline: float | None = None
            ) -> tuple[list[Window], list[Window]]:
    """(windows feasible alone, windows not checked by `deadline`). The check is a DP per request
    (`least_work_us`, about 0.2 ms each): under a limit shorter than the screen itself, the rest
    pass only the cheap step-count test and each counts as met, which keeps the bound valid."""
    ok: list[Window] = []
    unchecked: list[Window] = []
    for r in inst.requests:
        w = window(inst, r, arrival_visible, batching)
        if w.max_steps() < r.steps:
            continue
        if deadline is not None and time.perf_counter() >= deadline:
            unchecked.append(w)
        elif least_work_us(w, one_set=one_set) > 0:
            ok.append(w)
    return ok, unchecked


def upper_bound(inst: Instance, time_limit_s: float = 60.0, workers: int = 1, arrival_visible: bool = False,
                batching: bool = False, one_set: bool | None = None, mip_s: float = 0.0, mip_nodes: int = 0
                ) -> BoundResult:
    """The relaxation's bound on met deadlines (see the module docstring and docs/bound.md).

    Defaults: TetriServe's model (round-boundary starts, one request per step); `arrival_visible`
    and `batching` widen the plan space bounded to immediate starts and shared steps. `one_set`
    (default: TetriServe's model only) bounds plans that give a request one GPU set per round.
    `mip_s` > 0: each component not proven within its share then gets up to `mip_s` more seconds
    of HiGHS (`mip_bound`; outside `time_limit_s`; needs highspy). `mip_nodes` > 0: HiGHS also stops
    after that many branch-and-bound nodes per component; without `mip_s` it then has no time limit
    and the figure does not depend on the CPU (docs/bound.md eighth round)."""
    from ortools.sat.python import cp_model  # noqa: F401  (a one-off import, not the bound's time)

    t0 = time.perf_counter()
    if one_set is None:
        one_set = not arrival_visible and not batching
    end = t0 + time_limit_s
    alone, unchecked = _screen(inst, arrival_visible, batching, one_set, end)
    comps = components(alone)
    met = inc = opt = 0
    per: list[dict] = []
    met_ids: list[str] = []
    methods = dict.fromkeys(METHODS, 0)
    methods["unchecked"] = len(unchecked)  # each alone, counted met (the limit ended the screen)
    met += len(unchecked)
    # small components first, each an equal share of what is left: they are proven fast, and the
    # time they leave rolls over to the big ones at the end
    multi = sum(len(c) > 1 for c in comps)
    for c in sorted(comps, key=len):
        left = end - time.perf_counter()
        share = left / multi if len(c) > 1 else 0.0
        multi -= len(c) > 1
        ub, best, method, ids = _solve_component(inst, c, time.perf_counter() + share, workers, one_set, mip_s,
                                                 mip_nodes)
        met_ids.extend(ids)
        met += ub
        inc += best
        opt += method == "optimal"
        methods[method] += 1
        if len(c) > 1:
            per.append({"requests": len(c), "bound": ub, "incumbent": best, "optimal": method == "optimal",
                        "method": method, "rounds": [c[0].first_round, max(w.last_round for w in c)]})
    return BoundResult(requests=len(inst.requests), met_bound=met, feasible_alone=len(alone) + len(unchecked),
                       components=len(comps) + len(unchecked), optimal_components=opt, incumbent=inc, methods=methods,
                       solve_s=time.perf_counter() - t0, per_component=per, incumbent_met=tuple(sorted(met_ids)),
                       features=tuple(f for f, on in (("immediate_start", arrival_visible), ("batching", batching)) if on))
