"""Deadline arithmetic shared by every policy: what a request can still do before its deadline.

All of it respects the round structure: after this round a request runs at most
floor(round / T) steps per round on one GPU set, so a deadline 1.9 rounds away buys one full
round plus the steps that fit in the partial one, not 1.9 rounds of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from .state import RequestState, RoundState


def steps_possible(state: RoundState, step: int, start_us: int, deadline_us: int) -> int:
    """Steps of duration `step` that fit between start_us and deadline_us, one set per round."""
    span = deadline_us - start_us
    if span < step:
        return 0
    full, rest = divmod(span, state.round_us)
    return full * (state.round_us // step) + rest // step


@dataclass(frozen=True)
class Outlook:
    """Per-request figures at a round boundary (times in us, GPU-time in GPU-us)."""

    degrees: tuple[int, ...]          # useful degrees (a step fits in a round, not dominated)
    step: dict[int, int]              # per-step latency by degree
    fastest: int                      # degree with the smallest step latency
    slack_steps: int                  # steps at the fastest degree that still fit after this round
    cheapest_cost: int                # GPU-us per step at the cheapest degree that still meets the deadline
                                      # (the cheapest of all when none does)
    cheapest_degree: int
    alive: bool                       # can it still meet its deadline if it gets the best this round


def useful(step: dict[int, int], round_us: int) -> dict[int, int]:
    """Of the per-degree step latencies given (degrees that have GPU sets), the degrees whose step
    fits in a round, dropping those no faster than a smaller degree (the one copy of this rule:
    policies through `outlook`, the bound through its windows)."""
    out: dict[int, int] = {}
    best = None
    for k in sorted(step):
        t = step[k]
        if t > round_us or (best is not None and t >= best):
            continue  # too slow for a round, or more GPUs and no faster: never worth it
        out[k] = best = t
    return out


def useful_degrees(state: RoundState, r: RequestState) -> dict[int, int]:
    return useful({k: state.step_us(r, k) for k in state.degrees if state.sets.get(k)}, state.round_us)


def outlook(state: RoundState, r: RequestState) -> Outlook:
    """r's figures in this round, computed once per round state (memoised on it by request id)."""
    key = ("outlook", r.id)
    o = state.memo.get(key)
    if o is None:
        o = state.memo[key] = _outlook(state, r)
    return o


def _outlook(state: RoundState, r: RequestState) -> Outlook:
    step = useful_degrees(state, r)
    if not step:  # nothing fits in a round: report the smallest-latency degree anyway
        k = min(state.degrees, key=lambda d: (state.step_us(r, d), d))
        step = {k: state.step_us(r, k)}
    fastest = min(step, key=lambda k: (step[k], k))
    due = state.due_us(r)
    slack = steps_possible(state, step[fastest], state.end_us, due)
    by_cost = sorted(step, key=lambda k: (k * step[k], k))
    cheapest_k = by_cost[0]  # if nothing meets the deadline any more: the cheapest degree
    for k in by_cost:
        if steps_possible(state, step[k], state.now_us, due) >= r.remaining_steps:
            cheapest_k = k
            break
    alive = steps_possible(state, step[fastest], state.now_us, due) >= r.remaining_steps
    return Outlook(degrees=tuple(sorted(step)), step=step, fastest=fastest, slack_steps=slack,
                   cheapest_cost=cheapest_k * step[cheapest_k], cheapest_degree=cheapest_k, alive=alive)
