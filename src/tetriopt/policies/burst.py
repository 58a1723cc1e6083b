"""Burst admission: when several new wide requests arrive in one round, admit only as many as the
cluster can carry at full speed, and give the rest up at once.

docs/solver.md section 4: what the LP sets still lose at 64 GPUs are the bursts (four new 2048 px
requests in one round): the round model keeps them all, runs each a step, and drops some rounds
later, after they held GPUs the others needed. Here a request is wide when its fastest useful
degree is the largest the cluster offers (a 2048 px request: an 8-GPU block). Of a round's new
wide requests (two or more, each still makeable alone), in deadline order, one is admitted while
the EDF joint test still fits with every wide request charged whole block-rounds (ceil(steps left
/ a round's steps at that degree) x degree x round: at full speed it holds its block all round)
and the others kept in the previous round at their cheapest deadline-meeting cost; the rest are
given up for good: the planner is shown them as already late (deadline = now), so they run only
best effort. Met is still judged on the true deadline (margins.ShownEarly applies it).
"""

from __future__ import annotations

import dataclasses

from ..lookahead import outlook
from ..state import RequestState, RoundState
from .margins import can_make, fastest


def wide(state: RoundState, r: RequestState) -> int | None:
    """r's fastest degree if it is the largest degree with sets in the cluster, else None."""
    k = fastest(state, r)
    return k if k is not None and k == state.widest else None


def _need(state: RoundState, r: RequestState) -> int:
    """GPU-us r takes to its end in the test: whole block-rounds if wide, else its cheapest cost."""
    k = wide(state, r)
    if k is None:
        return outlook(state, r).cheapest_cost * r.remaining_steps
    per = max(1, state.max_steps(r, k))
    return -(-r.remaining_steps // per) * k * state.round_us


def _fits(state: RoundState, rs: list[RequestState]) -> bool:
    work = 0
    for r in sorted(rs, key=lambda r: (r.deadline_us, r.arrival_us, r.id)):
        work += _need(state, r)
        if work > state.cluster.gpus * (state.due_us(r) - state.now_us):
            return False
    return True


def give_up(state: RoundState, new: set[str], kept: set[str]) -> set[str]:
    """The new wide requests of this round to give up (none unless two or more arrived)."""
    cand = sorted((r for r in state.requests if r.id in new and wide(state, r) and can_make(state, r)),
                  key=lambda r: (r.deadline_us, r.arrival_us, r.id))
    if len(cand) < 2:
        return set()
    base = [r for r in state.requests if r.id in kept and r.id not in new and outlook(state, r).alive]
    out: set[str] = set()
    for r in cand:
        if _fits(state, base + [r]):
            base.append(r)
        else:
            out.add(r.id)
    return out


def late(state: RoundState, ids: set[str]) -> RoundState:
    """The state with the requests of `ids` shown as already late (deadline = now)."""
    if not ids & {r.id for r in state.requests}:
        return state
    return dataclasses.replace(state, requests=tuple(
        dataclasses.replace(r, deadline_us=state.now_us) if r.id in ids else r for r in state.requests))
