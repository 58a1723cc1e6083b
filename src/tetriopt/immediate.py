"""Immediate starts: a request arriving mid-round starts at once on GPUs the round leaves idle.

Round-boundary schedulers (TetriServe, every policy here) let a request wait up to a whole round
for the next boundary, which a small request with a tight target cannot afford. The rule below
runs between boundaries, after the round's plan is committed: it never moves or delays a
committed assignment, it only uses an aligned GPU set while all its GPUs are idle (from the
request's arrival on: the rest of the round, or a gap the plan leaves before its next task
there). The next round plans the request as usual from wherever it got to.

The rule is the greedy policy's per-request choice, made fast: the cheapest useful degree
(GPU-time per step) at which the steps that fit before the round ends still leave the rest
doable by the deadline at that degree; otherwise the set that does the most steps. Among sets of
the chosen degree it takes the one doing the most steps, then starting earliest, then the lowest
GPU ids.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterable

from .lookahead import outlook, steps_possible, useful_degrees
from .policies.greedy import fill_leftover
from .plan import Assignment, RoundPlan, check_plan, decision_us, decisions_of, make_plan, members
from .state import RequestState, RoundState


def busy_intervals(state: RoundState, assignments: Iterable[Assignment]) -> list[list[tuple[int, int]]]:
    """Per GPU, the sorted (start, end) of what is scheduled on it in the round."""
    busy: list[list[tuple[int, int]]] = [[] for _ in range(state.cluster.gpus)]
    for a in assignments:
        for g in a.gpus:
            busy[g].append((a.start_us, a.end_us))
    for b in busy:
        b.sort()
    return busy


def idle_window(busy: list[list[tuple[int, int]]], gpus: tuple[int, ...], at: int, end: int) -> list[tuple[int, int]]:
    """The (start, stop) windows from `at` to `end` in which every GPU of the set is idle."""
    ivs = sorted(iv for g in gpus for iv in busy[g] if iv[1] > at)
    out, t = [], at
    for s, e in ivs:
        if s > t:
            out.append((t, min(s, end)))
        t = max(t, e)
    if t < end:
        out.append((t, end))
    return [(s, e) for s, e in out if e > s]


def start_on_idle(state: RoundState, r: RequestState, busy: list[list[tuple[int, int]]]) -> Assignment | None:
    """An assignment for `r` (arrived at r.arrival_us, inside the round) on idle GPUs, or None.

    `busy` is what busy_intervals returns; the caller adds the answer to it (`occupy`).
    """
    end = state.end_us
    best_partial = None
    steps = useful_degrees(state, r)
    for k in sorted(steps, key=lambda k: (k * steps[k], k)):
        t = steps[k]
        options = []
        for gpus in state.sets[k]:
            for s, e in idle_window(busy, gpus, max(r.arrival_us, state.now_us), end):
                n = state.fit_steps(r, k, e - s)
                if n > 0:
                    options.append((-n, s, gpus))
        if not options:
            continue
        neg_n, start, gpus = min(options)
        a = Assignment(request=r.id, gpus=gpus, steps=-neg_n, start_us=start,
                       end_us=start - neg_n * t + state.aux_us(r, -neg_n), immediate=True)
        after = r.remaining_steps - a.steps
        if after == 0 and a.end_us <= r.deadline_us or \
                after and after <= steps_possible(state, r, t, end, True, steps.values()):
            return a
        if best_partial is None or (a.steps, -k) > (best_partial.steps, -best_partial.degree):
            best_partial = a
    return best_partial


def occupy(busy: list[list[tuple[int, int]]], a: Assignment) -> None:
    for g in a.gpus:
        busy[g].append((a.start_us, a.end_us))
        busy[g].sort()


def reserve_idle(state: RoundState, plan: RoundPlan) -> RoundPlan:
    """A planner's side of immediate starts: GPUs kept idle for arrivals instead of work that
    gains nothing this round.

    - In a round where requests it keeps on track run, the requests it gave up (best effort) do
      not; they run in rounds where no kept request does. Measured: +9 deadlines over 4 FLUX
      workloads at SLO 1.0 for cpsat with immediate starts (docs/evaluation.md, section E).
    - Work of a request that can no longer meet its deadline (`outlook(...).alive` false) ends by
      the middle of the round (at least one step), so an arrival in the second half finds its
      GPUs idle: a late request loses little by finishing later, while a large request arriving
      mid-round (SD3 2048 px on 4 A40s: 28 steps at degree 4 take 10.3 s of a 13 s target, and
      waiting for a 1.85 s boundary makes it miss) needs the whole set at once. Measured on the
      merged tree: +16, +5 and +21 deadlines on the three SD3 A40 workloads, -1 to +2 on FLUX
      H100 (docs/evaluation.md, E5). Half: a quarter or three quarters of the round did worse.
    - Which hopeless requests run there is not the model's choice (it values them alike) but
      arrival order, at their cheapest degree, so none waits to the end of the workload (E6).
    """
    if plan.kept is None:
        return plan
    kept = set(plan.kept)
    by_id = {r.id: r for r in state.requests}
    plain = decisions_of(plan)
    runs_kept = any(i in kept for d in plain for i in members(d[0]))
    if runs_kept:
        dec = [d for d in plain if any(i in kept for i in members(d[0]))]
    else:
        dec = [d for d in plain if any(outlook(state, by_id[i]).alive for i in members(d[0]))]
        # the hopeless (lost) requests get the rest, oldest first at their cheapest degree, ending
        # by mid-round (at least one step): served in arrival order instead of the model's choice,
        # none waits to the end of the workload (docs/evaluation.md, E6: p99 latency 943 -> 387 s
        # on A40 skewed SLO 1.0). Degrees whose step ends by mid-round only: half the hopeless
        # throughput there, and the backlog's rounds made a simulation 10x slower
        held = {i for d in dec for i in members(d[0])}
        lost = [r for r in state.requests if r.id not in held and not outlook(state, r).alive]
        n = len(dec)
        dec = dec + [_by_mid_round(state, by_id, d) for d in fill_leftover(state, dec, lost)[n:]]
    if dec == plain:
        return plan
    return make_plan(state, dec, backend=plan.backend, status=plan.status, objective=plan.objective,
                     bound=plan.bound, kept=plan.kept, solve_ms=plan.solve_ms,
                     note=(plan.note + "; " if plan.note else "") + "given-up work left out for immediate starts")


def _by_mid_round(state: RoundState, by_id: dict, d: tuple) -> tuple:
    """A decision cut to end by the middle of the round (at least one step)."""
    n = d[2]
    while n > 1 and decision_us(state, by_id, d[0], d[1], n) > state.round_us // 2:
        n -= 1
    return (d[0], d[1], n)


def idle_blocks_us(state: RoundState, plan: RoundPlan) -> int:
    """GPU-us of whole aligned blocks left idle to the end of the round: per aligned set of every
    usable degree, its size x (round end - when its last GPU falls idle). What an arrival needing
    that block can use; pack_idle maximises it."""
    busy = busy_intervals(state, plan.assignments)
    last = [max((e for _, e in b), default=state.now_us) for b in busy]
    return sum(k * (state.end_us - max(last[g] for g in gpus)) for k, sets in state.sets.items() for gpus in sets)


def pack_idle(state: RoundState, plan: RoundPlan, passes: int = 3, trials: int = 160) -> RoundPlan:
    """A tie-break among plans of equal round objective when immediate starts are on: move
    decisions to another aligned set of the same degree wherever that leaves more whole blocks
    idle for longer (`idle_blocks_us`). A move is neutral for the round model: a set enters its
    objective only through the stay bonus (moves to or from a member's location are not made)
    and its busy rows (the plan must still fit the round, and every request it finishes in time
    still does). On 4 A40s a 2048 px SD3 request is met only if it starts mid-round on all four
    GPUs at once, so where the work sits decides whether it can. At most `trials` plans are tried
    (a busy SD3 H200 round has ~40 decisions x 8 sets); its time counts in solve_ms."""
    t0 = time.perf_counter()
    by_id = {r.id: r for r in state.requests}
    dec = decisions_of(plan)

    def on_time(p: RoundPlan) -> int:
        return sum(a.steps == by_id[i].remaining_steps and a.end_us <= by_id[i].deadline_us
                   for a in p.assignments for i in a.requests)

    def remake(ds: list) -> RoundPlan:
        return make_plan(state, ds, backend=plan.backend, status=plan.status, objective=plan.objective,
                         bound=plan.bound, kept=plan.kept, solve_ms=plan.solve_ms, note=plan.note)

    def timed(p: RoundPlan) -> RoundPlan:
        return replace(p, solve_ms=plan.solve_ms + (time.perf_counter() - t0) * 1e3)

    base = remake(dec)
    if base.assignments != plan.assignments:
        return plan  # laid out otherwise (kept order): left alone
    best, score, met = plan, idle_blocks_us(state, plan), on_time(plan)
    for _ in range(passes):
        moved = False
        for j, (rid, gpus, steps) in enumerate(dec):
            locs = {by_id[i].location for i in members(rid)}
            if gpus in locs:
                continue
            for alt in state.sets.get(len(gpus), ()):
                if alt == gpus or alt in locs:
                    continue
                trials -= 1
                if trials < 0:
                    return timed(best)
                trial = dec[:j] + [(rid, alt, steps)] + dec[j + 1:]
                p = remake(trial)
                if on_time(p) < met or check_plan(state, p) is not None:
                    continue
                sc = idle_blocks_us(state, p)
                if sc > score:
                    dec, best, score, moved = trial, p, sc, True
                    gpus = alt
        if not moved:
            break
    return timed(best)
