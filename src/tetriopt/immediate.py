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

from typing import Iterable

from .lookahead import steps_possible, useful_degrees
from .plan import Assignment, RoundPlan, decisions_of, make_plan, members
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
    """A planner's side of immediate starts: in a round where requests it keeps on track run, the
    requests it gave up (best effort) do not, so that their GPUs stay idle for arrivals; they run
    in rounds where no kept request does. Measured: +9 deadlines over 4 FLUX workloads at SLO 1.0
    for cpsat with immediate starts (docs/evaluation.md, section E)."""
    kept = set(plan.kept or ())
    if not kept:
        return plan
    dec = [d for d in decisions_of(plan) if any(i in kept for i in members(d[0]))]
    if not dec or len(dec) == len(plan.assignments):
        return plan
    return make_plan(state, dec, backend=plan.backend, status=plan.status, objective=plan.objective,
                     bound=plan.bound, kept=plan.kept, solve_ms=plan.solve_ms,
                     note=(plan.note + "; " if plan.note else "") + "given-up work left out for immediate starts")
