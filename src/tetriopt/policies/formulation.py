"""The round MIP, written once as a small linear model that every MIP backend translates.

Variables, per pending request i:
  x[i,g]  run on aligned GPU set g this round (at most one g)
  s[i,g]  steps on g (1..m[i,k] when x[i,g], else 0; m = what fits in a round)
  keep[i] still aiming to meet the deadline
  done[i] finishes this round
  u[i]    remaining steps after the round if kept (0 if given up)
  f[i,g]  finishes on g (s[i,g] = remaining), so its VAE decode runs there
Constraints:
  every GPU's busy time <= round length (exact for laminar aligned sets; see gpusets.layout);
    busy time counts steps, the text encode of a request not started (x) and the decode (f), as
    every assignment's duration does (RoundState.aux_us)
  individual test: kept => steps left fit before the deadline at the fastest degree, counting
    rounds with the encode and the decode where the plan runs them (lookahead.steps_possible),
    and a request not started runs now if its encode cannot wait (Outlook.need_now); a request
    whose deadline falls before the round ends can be kept only if it finishes this round in time
  joint test: for every deadline D, sum over kept requests due by D of (steps left x GPU-time
    per step at their cheapest deadline-meeting degree, plus the VAE decode still owed on such a
    set when steps are left: owes_decode[i] = 1 iff u > 0) <= GPUs x (D - round end)
Objective (maximise), lexicographic by weights:
  W_keep * kept  -  8 * remaining GPU-time of kept  +  4 * cost * done
  + 2 * GPU-time-equivalent progress of every request  -  GPU-time used  +  stay bonus
so kept requests progress first, given-up ones use what is left (no GPU idles while work could
use it), cheap degrees win ties, and a request keeps its GPUs when nothing else differs.
GPU-times in the objective are in GPU-ms (integers).
With `convex` (the default of `build` and MipPolicy, since 4d2651b for the policy; `cpsat[convex=0]`
and `build(convex=False)` are the model before; docs/solver.md section 4), a kept request's
remaining GPU-time is
not u x its cheapest per-step cost but c >= the lower convex envelope of the least GPU-time it
alone needs to finish u steps by its deadline (`least_future`): leaving more steps for later
raises the degree they need. The keep weight then counts c's largest value, so the order of the
tiers stands.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from operator import mul

from ..leastcost import INF, envelope_at, envelope_values, least_cost_table, lower_envelope, segments
from ..lookahead import Outlook, outlook
from ..plan import Decision, decision_us
from ..state import RequestState, RoundState


@dataclass
class LinearModel:
    names: list[str] = field(default_factory=list)
    lb: list[int] = field(default_factory=list)
    ub: list[int] = field(default_factory=list)
    cons: list[tuple[dict[int, int], float, float]] = field(default_factory=list)
    objective: dict[int, int] = field(default_factory=dict)

    def var(self, name: str, lb: int, ub: int) -> int:
        self.names.append(name)
        self.lb.append(lb)
        self.ub.append(ub)
        return len(self.names) - 1

    def add(self, coeffs: dict[int, int], lb: float = float("-inf"), ub: float = float("inf")) -> None:
        # (a copy: callers may reuse their dict; most rows have no zero coefficient to drop)
        self.cons.append((dict(coeffs) if all(coeffs.values()) else {v: c for v, c in coeffs.items() if c}, lb, ub))

    def value(self, sol: list[int]) -> int:
        return sum(c * sol[v] for v, c in self.objective.items())

    def feasible(self, sol: list[int]) -> bool:
        if any(not (lo <= x <= hi) for x, lo, hi in zip(sol, self.lb, self.ub)):
            return False
        get = sol.__getitem__  # (map over the row's values and keys: a third of the generator's time, same sums)
        return all(lo <= sum(map(mul, co.values(), map(get, co))) <= hi for co, lo, hi in self.cons)


@dataclass(frozen=True)
class Weights:
    keep: int
    remaining: int = 8
    done: int = 4
    progress: int = 2
    gpu: int = 1


NEG_INF, POS_INF = float("-inf"), float("inf")


def gpu_ms(us: int) -> int:
    return max(1, (us + 500) // 1000)


@dataclass
class RoundModel:
    """A RoundState's model plus the maps back from variables to decisions."""

    model: LinearModel
    state: RoundState
    looks: dict[str, Outlook]
    cand: dict[str, list[tuple[tuple[int, ...], int, int, int]]]  # id -> [(gpus, step, x, s)]
    keep: dict[str, int]
    done: dict[str, int]
    left: dict[str, int]  # u: steps left after the round if kept
    weights: Weights
    running: list = field(default_factory=list)  # (acc var, {u var: GPU-ms}, previous acc var)
    urgent: list = field(default_factory=list)  # (request, keep var, budget us), deadline order
    restricted: bool = False  # sets capped or requests unplaced: optimal for the restricted model only
    batches: list = field(default_factory=list)  # batching.BatchOption of a model built with batching
    fin: dict = field(default_factory=dict)  # step var -> (finish var, remaining): 1 iff steps reach it (decode)
    owed: dict = field(default_factory=dict)  # u var -> (owes-decode var, its decode in GPU-ms): 1 iff u > 0
    joint_cost: dict = field(default_factory=dict)  # request -> GPU-us per step in the joint test (default: cheapest)
    extra_need: dict = field(default_factory=dict)  # request -> GPU-ms it must leave free before its due time if kept
    busy: dict = field(default_factory=dict)  # GPU -> {var: us} of its busy-time row (symmetry.py reads it)
    running_due: list = field(default_factory=list)  # the due time of each `running` row
    # convex (build(convex=True)): request -> (c var, u var, keep var, envelope rows (du, dc, b), c at
    # u = 0..top): c >= the least GPU-ms it alone needs to finish u steps (leastcost), in the objective
    convex: dict = field(default_factory=dict)

    def joint_us(self, rid: str) -> int:
        return self.joint_cost.get(rid, self.looks[rid].cheapest_cost)

    def derive(self, sol: list[int]) -> None:
        """Set the finish and owes-decode variables from the step and u values, then the convex
        costs and the running sums of the joint test (which count the owed decodes) (for warm starts)."""
        for s, (f, rem) in self.fin.items():
            sol[f] = int(sol[s] >= rem)
        for u, (p, _) in self.owed.items():
            sol[p] = int(sol[u] > 0)
        for c, u, kp, rows, _ in self.convex.values():
            sol[c] = envelope_at(rows, sol[u], sol[kp])
        for acc, group, prev in self.running:
            sol[acc] = sum(c * sol[u] for u, c in group.items()) + (sol[prev] if prev is not None else 0)

    def decisions(self, sol: list[int]) -> list[tuple[str, tuple[int, ...], int]]:
        out = []
        for rid, cs in self.cand.items():
            for gpus, _, x, s in cs:
                if sol[x] and sol[s] > 0:
                    out.append((rid, gpus, sol[s]))
        if self.batches:
            from .batching import batch_decisions
            out.extend(batch_decisions(self.batches, sol))
        return out


def keepable(state: RoundState, r: RequestState, o: Outlook) -> tuple[bool, int | None]:
    """(can be kept at all, max steps left after the round if kept; None = must finish now)."""
    due = state.due_us(r)
    if not o.alive:
        return False, None
    if due < state.end_us:
        return True, None
    return True, o.slack_steps


def candidate_sets(state: RoundState, r: RequestState, k: int, index: int, max_sets: int | None,
                   also: tuple[tuple[int, ...], ...] = ()):
    """The sets of size k r may use: all of them, or for big models the `max_sets` nearest its latent.

    Without a cap the model is exact. With one (large clusters x many requests), a request keeps
    its own set and the sets overlapping it, then sets spread by request index so that requests
    without a location do not all compete for the same few sets; `also` (the sets the warm-start
    heuristics chose) are always included so the hint stays expressible.
    """
    sets = state.sets[k]
    if max_sets is None or len(sets) <= max_sets:
        return sets
    keep = {g for g in also if len(g) == k}
    loc = set(r.location)
    ranked = sorted(range(len(sets)), key=lambda j: (sets[j] != r.location, -len(loc & set(sets[j])),
                                                     (j - index) % len(sets)))
    return tuple(sets[j] for j in sorted(set(ranked[:max_sets]) | {j for j in range(len(sets)) if sets[j] in keep}))


def joint_cap_ms(state: RoundState, due_us: int, factor: float = 1.0) -> int:
    """GPU-ms the cluster has between the round's end and `due_us` (the joint test's capacity)."""
    return int(max(0, state.cluster.gpus * (due_us - state.end_us)) * factor) // 1000


def keep_allowed(state: RoundState, r: RequestState, o: Outlook, steps: int, dur_us: int) -> bool:
    """The individual test of the model for a request given this round's steps taking `dur_us`
    (plan.decision_us: with its encode / decode) from the round's start (for warm starts)."""
    can, slack = keepable(state, r, o)
    if not can:
        return False
    if slack is None:
        return steps == r.remaining_steps and dur_us <= r.deadline_us - state.now_us
    return steps >= o.need_now and r.remaining_steps - steps <= slack


class OutOfTime(Exception):
    """Building the model ran past its deadline (the caller answers from its warm starts)."""


def past(stop: float | None) -> bool:
    """Whether the decision's stop time (perf_counter seconds; None: no limit) has passed."""
    return stop is not None and time.perf_counter() > stop


_TAGS: dict[tuple[int, ...], str] = {}


def _tag(gpus: tuple[int, ...]) -> str:
    """A GPU set in variable names ("0,1,2,3"), formatted once per set, not for every set of every round."""
    tag = _TAGS.get(gpus)
    if tag is None:
        tag = _TAGS[gpus] = ','.join(map(str, gpus))
    return tag


def charge_aux(m: LinearModel, state: RoundState, r: RequestState, gpus: tuple[int, ...], x: int, s: int,
               cap: int, fin: dict, gpu_terms: dict, tag: str) -> None:
    """Charge r's text encode on `gpus` when option x is chosen, and its VAE decode when its steps
    var s reaches r's remaining steps (a finish var f = 1 exactly then, recorded in `fin`): the
    round's capacity holds what the executor runs there (state.aux_us)."""
    enc = state.encode_us(r)
    if enc:
        for g in gpus:
            gpu_terms[g][x] = enc
    if cap == r.remaining_steps and fin is not None:
        f = m.var(f"f[{r.id},{tag}]", 0, 1)
        m.add({s: 1, f: -1}, ub=cap - 1)
        m.add({f: 1, x: -1}, ub=0)
        fin[s] = (f, cap)
        for g in gpus:
            gpu_terms[g][f] = state.decode_us(r)


def build(state: RoundState, max_pairs: int = 1200, placed: set[str] | None = None,
          hinted: dict[str, tuple[tuple[int, ...], ...]] | None = None, joint_capacity: float = 1.0,
          deadline: float | None = None, batching: bool = False, convex: bool = True) -> RoundModel:
    """The round model (with `batching`, also batch options: policies/batching.py; with `convex`, a
    kept request's remaining steps cost the least GPU-time it alone needs to finish them: `least_future`).

    Above `max_pairs` (request, set) pairs each request sees a few sets only. Requests outside
    `placed` (None: all are placed) get no steps this round but still take part in the keep
    decision and the joint test, so a large backlog is judged whole while only the most urgent
    requests carry placement variables; those of them that cannot be kept any more are left out
    of the model (they could only appear with every variable at 0).
    """
    m = LinearModel()
    looks = {r.id: outlook(state, r) for r in state.requests}
    modelled = [r for r in state.requests if placed is None or r.id in placed or looks[r.id].alive]
    futures = {}  # request -> (envelope rows, c at u = 0..top) of its least future GPU-ms (convex)
    if convex:
        for n, r in enumerate(modelled):
            if n % 16 == 15 and past(deadline):
                raise OutOfTime
            got = least_future(state, r, looks[r.id])
            if got is not None:
                futures[r.id] = got
    # (the keep weight outweighs every other term: with `convex`, a request's remaining work is its c at most)
    total = sum(max(gpu_ms(looks[r.id].cheapest_cost) * r.remaining_steps, futures[r.id][1][-1] if r.id in futures else 0)
                for r in state.requests)
    w = Weights(keep=15 * total + state.cluster.gpus * gpu_ms(state.round_us) + len(state.requests) + 1)
    cand: dict[str, list] = {}
    fin: dict[int, tuple[int, int]] = {}
    owed: dict[int, tuple[int, int]] = {}
    aux: dict[int, tuple[int, int]] = {}  # x or f var -> (its encode / decode us, request's urgent index)
    keep: dict[str, int] = {}
    done: dict[str, int] = {}
    left: dict[str, int] = {}
    gpu_terms: dict[int, dict[int, int]] = {g: {} for g in range(state.cluster.gpus)}
    joint: list[tuple[int, int, int]] = []  # (deadline, u var, cost)
    urgent: list[tuple[RequestState, int, int]] = []  # due inside the round: (request, keep var, budget)
    movable = [r for r in modelled if placed is None or r.id in placed]
    pairs = sum(len(state.sets[k]) for r in movable for k in looks[r.id].degrees)
    set_cap = None if pairs <= max_pairs else max(2, max_pairs // max(1, sum(len(looks[r.id].degrees)
                                                                              for r in movable)))
    batch_xs: dict[str, dict[int, int]] = {r.id: {} for r in state.requests}
    batch_steps: dict[str, dict[int, int]] = {r.id: {} for r in state.requests}
    batches, joint_cost = [], {}
    convex_of: dict[str, tuple] = {}
    if batching and state.profile.max_batch > 1:
        from .batching import add_batch_options, shared_costs
        joint_cost = shared_costs(state, looks)
        due_now = {r.id for r in state.requests if state.due_us(r) < state.end_us}
        batches = add_batch_options(m, state, looks, w, placed, due_now, batch_xs, batch_steps, gpu_terms, gpu_ms,
                                    fin, charge_aux)
    for index, r in enumerate(sorted(modelled, key=lambda r: (r.deadline_us, r.id))):
        if index % 4 == 3 and past(deadline):
            raise OutOfTime  # `deadline` (perf_counter seconds): the decision's time limit, less its reserve
        o = looks[r.id]
        e = gpu_ms(o.cheapest_cost)
        rem = r.remaining_steps
        cand[r.id] = []
        xs, steps_expr, dur_expr = dict(batch_xs[r.id]), dict(batch_steps[r.id]), {}
        aux = bool(state.encode_us(r))  # (charge_aux has something to charge: an encode, or a finishing set)
        names, lbs, ubs, cons, objective = m.names, m.lb, m.ub, m.cons, m.objective
        for k in o.degrees if placed is None or r.id in placed else ():
            t = o.step[k]
            mk = state.max_steps(r, k)
            if mk <= 0:
                continue
            per_step = w.progress * e - w.gpu * gpu_ms(k * t)  # the objective of a step at degree k, any set
            for gpus in candidate_sets(state, r, k, index, set_cap, (hinted or {}).get(r.id, ())):
                tag = _tag(gpus)
                # (variables and rows appended as LinearModel.var / add would: no zero coefficient to
                # drop, fresh dicts; the most frequent ones of the model, so the hot loop of building it)
                x = len(names)
                s = x + 1
                names += (f"x[{r.id},{tag}]", f"s[{r.id},{tag}]")
                lbs += (0, 0)
                ubs += (1, mk)
                cons += (({s: 1, x: -mk}, NEG_INF, 0), ({s: 1, x: -1}, 0, POS_INF))
                xs[x] = 1
                steps_expr[s] = 1
                dur_expr[s] = t
                for g in gpus:
                    gpu_terms[g][s] = t
                if aux or mk == rem:
                    charge_aux(m, state, r, gpus, x, s, mk, fin, gpu_terms, tag)
                objective[s] = per_step
                if gpus == r.location:
                    m.objective[x] = m.objective.get(x, 0) + max(1, e // 4)
                cand[r.id].append((gpus, t, x, s))
        if xs:
            m.add(xs, ub=1)
        kp = m.var(f"keep[{r.id}]", 0, 1)
        dn = m.var(f"done[{r.id}]", 0, 1)
        u = m.var(f"u[{r.id}]", 0, rem)
        keep[r.id], done[r.id], left[r.id] = kp, dn, u
        can_keep, slack = keepable(state, r, o)
        if not can_keep:
            m.ub[kp] = 0
        # done => all remaining steps this round
        m.add({**steps_expr, dn: -rem}, lb=0)
        if not steps_expr:
            m.ub[dn] = 0
        # u >= rem - steps - rem * (1 - keep)  <=>  u + steps - rem*keep >= 0
        m.add({u: 1, **steps_expr, kp: -rem}, lb=0)
        if can_keep and slack is None:
            # the deadline falls inside this round: keep only if it finishes in time now, after
            # the other requests due inside the round that go before it on its GPUs (below)
            m.add({kp: 1, dn: -1}, ub=0)
            urgent.append((r, kp, r.deadline_us - state.now_us))
        elif can_keep:
            m.add({u: 1}, ub=slack)
            need = o.need_now  # steps this round without which it cannot make it (lookahead.outlook)
            if need > 0:  # implied by the above for integers unless its encode cannot wait; tightens the LP
                m.add({**steps_expr, kp: -need}, lb=0)
        m.objective[kp] = w.keep
        m.objective[u] = -w.remaining * e
        if r.id in futures:  # remaining steps at their least future GPU-time instead of e each
            rows, env = futures[r.id]
            c = future_var(m, f"future[{r.id}]", rows, env, u, kp)
            del m.objective[u]
            m.objective[c] = -w.remaining
            convex_of[r.id] = (c, u, kp, rows, env)
        m.objective[dn] = w.done * e
        if can_keep:  # kept and not finished this round: its decode is still to come, on its set
            p = m.var(f"owes_decode[{r.id}]", 0, 1)
            m.add({u: 1, p: -rem}, ub=0)
            owed[u] = (p, gpu_ms(o.cheapest_degree * state.decode_us(r)))
            # the owed decode runs after the last step, up to the deadline: it is due then, not at due_us
            joint.append((r.deadline_us, p, o.cheapest_degree * state.decode_us(r)))
        joint.append((state.due_us(r), u, joint_cost.get(r.id, o.cheapest_cost)))
    for g, terms in gpu_terms.items():
        if terms:
            m.add(terms, ub=state.round_us)
    # requests due inside the round run first on their GPUs, earliest deadline first (plan.make_plan):
    # if j is kept on set G, every GPU of G finishes the urgent work due by j's deadline (with its
    # encodes and decodes, j's own decode included) within j's budget (its deadline, from now)
    R = state.round_us
    for pos, (r, kp, budget) in enumerate(urgent):
        if past(deadline):
            raise OutOfTime
        for gpus, _, x, _ in cand[r.id]:
            for gpu in gpus:
                before: dict[int, int] = {}
                for q, _, _ in urgent[:pos + 1]:
                    for gg, t, xq, s in cand[q.id]:
                        if gpu in gg:
                            before[s] = t
                            enc = state.encode_us(q)
                            if enc:
                                before[xq] = enc
                            if s in fin:
                                before[fin[s][0]] = state.decode_us(q)
                before[x] = before.get(x, 0) + R
                m.add({**before, kp: R}, ub=budget + 2 * R)
    # joint capacity test at every distinct deadline (u is 0 for requests given up), as a running
    # sum so the model stays linear in size: acc_j = acc_{j-1} + work due at deadline j <= capacity
    joint.sort()
    prev, group, running, running_due = None, {}, [], []
    for i, (d, u, cost) in enumerate(joint):
        group[u] = gpu_ms(cost)
        if i + 1 < len(joint) and joint[i + 1][0] == d:
            continue
        cap = joint_cap_ms(state, d, joint_capacity)
        acc = m.var(f"work_due[{d}]", 0, cap)
        m.add({**group, **({prev: 1} if prev is not None else {}), acc: -1}, lb=0, ub=0)
        running.append((acc, group, prev))
        running_due.append(d)
        prev, group = acc, {}
    return RoundModel(model=m, state=state, looks=looks, cand=cand, keep=keep, done=done, left=left, weights=w, running=running, urgent=urgent,
                      restricted=set_cap is not None or len(movable) < len(state.requests), batches=batches,
                      joint_cost=joint_cost, fin=fin, owed=owed, busy=gpu_terms, running_due=running_due,
                      convex=convex_of)


def least_future(state: RoundState, r: RequestState,
                 o: Outlook) -> tuple[list[tuple[int, int, int]], list[int]] | None:
    """(rows (du, dc, b) of the lower convex envelope, its value at u = 0..top) of the least
    GPU-ms r alone needs to run u more steps from the round's end and finish by its deadline
    (leastcost.least_cost_table: with its decode's GPU-time), u up to the most it may
    leave if kept (top = min(remaining, slack)); None where it cannot be kept with steps left.
    The latent is counted as placed by then (no encode): a lower bound where it does not run now."""
    key = ("least_future", r.id)
    if key in state.memo:
        return state.memo[key]
    can, slack = keepable(state, r, o)
    out = None
    if can and slack is not None and min(r.remaining_steps, slack) > 0:
        top = min(r.remaining_steps, slack)
        table = least_cost_table(state.round_us, tuple((k, o.step[k]) for k in o.degrees),
                                 r.deadline_us - state.end_us, state.decode_us(r), top)
        ms = [x if x == INF else (gpu_ms(int(x)) if u else 0) for u, x in enumerate(table)]
        hull = lower_envelope(ms)
        if len(hull) >= 2:
            out = segments(hull), envelope_values(hull, top)
    state.memo[key] = out
    return out


def future_var(m: LinearModel, name: str, rows: list[tuple[int, int, int]], env: list[int], u: int, kp: int) -> int:
    """c >= the envelope `rows` at u: du c >= dc u + b keep (b <= 0, so c = 0 when given up)."""
    c = m.var(name, 0, env[-1])
    for du, dc, b in rows:
        m.add({c: du, u: -dc, kp: -b}, lb=0)
    return c


def complete(rm: RoundModel, decisions: list[Decision], kept: list[str] | tuple[str, ...],
             jc: float = 1.0) -> list[int] | None:
    """A full model solution from a heuristic's decisions (None if none is feasible).

    Decisions the model cannot express (a set outside a request's candidates) are left out. Keep
    flags start from the heuristic's own, minus those failing the individual test; where a
    deadline's joint test overflows, the kept request with the most remaining work is given up.
    """
    m = rm.model
    sol = [0] * len(m.names)
    want = {}
    for rid, g, n in decisions:
        if not isinstance(rid, str):  # a batch: expressible only in a model built with batching
            from .batching import set_batch
            if set_batch(m, rm.batches, sol, rid, g, n):
                want.update({i: (g, n) for i in rid})
            continue
        hit = [(x, s) for gg, _, x, s in rm.cand.get(rid, []) if gg == g]
        if hit and n <= m.ub[hit[0][1]]:
            sol[hit[0][0]], sol[hit[0][1]] = 1, n
            want[rid] = (g, n)
    st = rm.state
    by_id = {r.id: r for r in st.requests if r.id in rm.keep}  # the modelled ones
    kept_in = set(kept)
    keep = {}
    dur = {i: decision_us(st, by_id, i, g, n) for i, (g, n) in want.items() if i in by_id and n}
    for i, r in by_id.items():
        keep[i] = (i in kept_in and m.ub[rm.keep[i]] > 0
                   and keep_allowed(st, r, rm.looks[i], want.get(i, ((), 0))[1], dur.get(i, 0)))
    # requests due inside the round, in deadline order: their GPUs must get through it in time
    load: dict[int, int] = {}
    for r, _, budget in rm.urgent:
        g, n = want.get(r.id, ((), 0))
        for gpu in g:
            load[gpu] = load.get(gpu, 0) + dur.get(r.id, 0)
        if keep[r.id] and any(load[gpu] > budget for gpu in g):
            keep[r.id] = False
    # joint test, earliest due time first: where a prefix overflows, give up its biggest remaining work.
    # A kept request's steps are due at its due time, the decode it still owes at its deadline
    # (as in build's rows); `counted` is what of it is in the prefix so far
    due = lambda i: st.due_us(by_id[i])  # noqa: E731
    left = {i: by_id[i].remaining_steps - want.get(i, ((), 0))[1] for i in by_id}
    owes = {i: rm.owed[rm.left[i]][1] if left[i] and rm.left[i] in rm.owed else 0 for i in by_id}
    work = {i: gpu_ms(rm.joint_us(i)) * left[i] + owes[i] for i in by_id}
    events = sorted([(due(i), 0, i) for i in by_id if keep[i]]
                    + [(by_id[i].deadline_us, 1, i) for i in by_id if keep[i] and owes[i]], key=lambda e: (e[0], e[2], e[1]))
    # the prefix as a heap on (work, due, id), largest first: a backlog of 2,000 kept requests
    # took 1.3 s with a list scanned for its maximum at every give-up
    # (entries of requests given up otherwise are skipped when they come up)
    rank = {i: n for n, i in enumerate(sorted(by_id))}
    prefix: list[tuple[int, int, int, str]] = []
    counted: dict[str, int] = {}
    total = 0
    for t, is_decode, i in events:
        if not keep[i]:
            continue
        if is_decode:
            counted[i] += owes[i]
            total += owes[i]
        else:
            heapq.heappush(prefix, (-work[i], -due(i), -rank[i], i))
            counted[i] = work[i] - owes[i]
            total += counted[i]
        cap = joint_cap_ms(st, t, jc)
        while total > cap:
            j = heapq.heappop(prefix)[3]
            if j in counted:
                total -= counted.pop(j)
                keep[j] = False
        if not is_decode and rm.extra_need.get(i, 0) and total + rm.extra_need[i] > cap and i in counted:
            total -= counted.pop(i)  # kept, it would take the room of cheaper forecast arrivals (horizon.add_forecast)
            keep[i] = False
    for i, r in by_id.items():
        n = want.get(i, ((), 0))[1]
        sol[rm.done[i]] = int(n == r.remaining_steps)
        sol[rm.keep[i]] = int(keep[i])
        sol[rm.left[i]] = (r.remaining_steps - n) if keep[i] else 0
    rm.derive(sol)
    return sol if m.feasible(sol) else None
