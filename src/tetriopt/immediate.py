"""Immediate starts: a request arriving mid-round starts at once on GPUs the round leaves idle.

Round-boundary schedulers (TetriServe, every policy here) let a request wait up to a whole round
for the next boundary, which a small request with a tight target cannot afford. The rule below
runs between boundaries, after the round's plan is committed: it never moves or delays a
committed assignment, it only uses an aligned GPU set from the moment all its GPUs are idle for
the rest of the round (and not before the request's arrival). The next round plans the request
as usual from wherever it got to.

The rule is the greedy policy's per-request choice, made fast: the cheapest useful degree
(GPU-time per step) at which the steps that fit before the round ends still leave the rest
doable by the deadline at that degree; otherwise the set that does the most steps. Among sets of
the chosen degree it takes the one that frees up latest (best fit: the earliest-free sets stay
for later arrivals), then the lowest GPU ids.
"""

from __future__ import annotations

from typing import Iterable

from .lookahead import steps_possible, useful_degrees
from .state import Assignment, RequestState, RoundState


def free_from(state: RoundState, assignments: Iterable[Assignment]) -> list[int]:
    """Per GPU, the time from which nothing is scheduled on it until the round ends."""
    free = [state.now_us] * state.cluster.gpus
    for a in assignments:
        for g in a.gpus:
            free[g] = max(free[g], a.end_us)
    return free


def start_on_idle(state: RoundState, r: RequestState, free: list[int]) -> Assignment | None:
    """An assignment for `r` (arrived at r.arrival_us, inside the round) on idle GPUs, or None.

    `free` is what free_from returns; the caller adds the answer to it before the next arrival.
    """
    end = state.end_us
    due = r.deadline_us - state.decode_us(r)
    best_partial = None
    steps = useful_degrees(state, r)
    for k in sorted(steps, key=lambda k: (k * steps[k], k)):
        t = steps[k]
        options = []
        for gpus in state.sets[k]:
            start = max(r.arrival_us, max(free[g] for g in gpus))
            n = min(r.remaining_steps, (end - start) // t)
            if n > 0:
                options.append((-n, -start, gpus, start))
        if not options:
            continue
        neg_n, _, gpus, start = min(options)
        a = Assignment(request=r.id, gpus=gpus, steps=-neg_n, start_us=start, end_us=start - neg_n * t,
                       immediate=True)
        after = r.remaining_steps - a.steps
        if after == 0 and a.end_us <= due or after and after <= steps_possible(state, t, end, due):
            return a
        if best_partial is None or (a.steps, -k) > (best_partial.steps, -best_partial.degree):
            best_partial = a
    return best_partial
