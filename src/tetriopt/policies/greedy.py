"""A solver-free policy with admission control: the fallback and warm start of the MIP policies.

Earliest deadline first, but a request is kept only while the work of everything kept and due
by its deadline (each at its cheapest deadline-meeting degree) fits in the cluster's GPU-time
before that deadline. Kept requests run at the cheapest degree that keeps them on track; what
was given up runs afterwards on leftover GPU time, oldest first, so it still finishes.
"""

from __future__ import annotations

import time
from typing import Iterator

from ..lookahead import Outlook, outlook, steps_possible
from ..plan import Decision, PlanStatus, RoundPlan, decision_us, make_plan, members
from ..state import RequestState, RoundState
from .formulation import past


CHECK_EVERY = 16  # requests examined between two looks at the clock when a stop time is given


def admitted(state: RoundState, look, done=None) -> Iterator[RequestState]:
    """The requests kept by the EDF joint capacity test (each also individually alive), in EDF
    order, each outlook asked for (`look(r)`) only when the scan reaches it; the scan ends where
    `done()` says so (asked every CHECK_EVERY requests)."""
    work = 0
    for i, r in enumerate(sorted(state.requests, key=lambda r: (r.deadline_us, r.arrival_us, r.id))):
        if done is not None and i % CHECK_EVERY == CHECK_EVERY - 1 and done():
            return
        o = look(r)
        if not o.alive:
            continue
        w = o.cheapest_cost * r.remaining_steps
        if work + w <= state.cluster.gpus * (state.due_us(r) - state.now_us):
            work += w
            yield r


def admit(state: RoundState, looks: dict[str, Outlook]) -> list[str]:
    """Ids kept by the EDF joint capacity test (each request also individually alive)."""
    return [r.id for r in admitted(state, lambda r: looks[r.id])]


class Loads:
    """Per-GPU busy time in the current round; a set has room for what fits on its busiest GPU."""

    def __init__(self, state: RoundState):
        self.state = state
        self.load = [0] * state.cluster.gpus

    def free(self, gpus: tuple[int, ...]) -> int:
        return self.state.round_us - max(self.load[g] for g in gpus)

    def add(self, gpus: tuple[int, ...], dur: int) -> None:
        for g in gpus:
            self.load[g] += dur


def fitting(state: RoundState, decisions: list[Decision]) -> list[Decision]:
    """The decisions, in order, that still fit on their GPUs after the ones before them (each
    with its encode / decode: plan.decision_us)."""
    by_id = {r.id: r for r in state.requests}
    loads, out = Loads(state), []
    for rid, g, n in decisions:
        dur = decision_us(state, by_id, rid, g, n)
        if loads.free(g) >= dur:
            loads.add(g, dur)
            out.append((rid, g, n))
    return out


def place(state: RoundState, loads: Loads, r: RequestState, k: int, step: int, want: int) -> tuple[tuple[int, ...], int] | None:
    """Best set of size k for r: most steps (up to want; its encode / decode counted), then its own
    GPUs, then tightest fit."""
    if state.round_us - min(loads.load) < step:
        return None  # no GPU has room for one step: skip the scan over every set
    best = None
    for gpus in state.sets[k]:
        free = loads.free(gpus)
        if free < step:  # not one step (fit_steps would say 0): at 2,000 pending most sets are full
            continue
        n = state.fit_steps(r, k, free, want)
        if n <= 0:
            continue
        key = (-n, gpus != r.location, free, gpus)
        if best is None or key < best[0]:
            best = (key, gpus, n)
    return None if best is None else (best[1], best[2])


def join_batch(state: RoundState, loads: Loads, decisions: list[Decision], r: RequestState, o: Outlook,
               by_id) -> bool:
    """Batching-aware greedy: r joins a planned same-size decision (a batch grows by one) when that
    gives r the steps it needs now, costs the others no step, fits on the set's GPUs and adds less
    time there than r alone at that degree would. Requests due inside the round never batch."""
    end, due = state.end_us, r.deadline_us - state.decode_us(r)
    if due < end:
        return False
    best = None
    for j, (rid, g, n) in enumerate(decisions):
        ids = members(rid)
        first = by_id[ids[0]]
        k = len(g)
        if (first.width, first.height) != (r.width, r.height) or len(ids) + 1 not in state.profile.batch_sizes                 or r.remaining_steps < n or k not in o.step:
            continue
        if any(by_id[i].deadline_us - state.decode_us(by_id[i]) < end for i in ids):
            continue
        need = max(1, r.remaining_steps - steps_possible(state, r, o.step[k], end, True, o.step.values()))
        delta = n * (state.step_us(r, k, len(ids) + 1) - state.step_us(r, k, len(ids))) + state.aux_us(r, n)
        if n < need or delta > loads.free(g) or delta >= n * o.step[k]:
            continue
        if best is None or delta < best[0]:
            best = (delta, j)
    if best is None:
        return False
    delta, j = best
    rid, g, n = decisions[j]
    decisions[j] = ((*members(rid), r.id), g, n)
    loads.add(g, delta)
    return True


def greedy_decisions(state: RoundState, batching: bool = False, loads: Loads | None = None,
                     stop: float | None = None) -> tuple[list[Decision], list[str]]:
    """EDF with the joint test; `loads`: GPU time already taken in the round (default: none).

    Each kept request is placed as the admission scan reaches it (placement follows the kept
    order, so this is admit-then-place), which makes it anytime: with `stop` (perf_counter
    seconds) the scan and the leftover fill end there, and the decisions so far are a valid plan
    of the most urgent requests, kept being those the scan admitted (the deadline-bounded
    decision of MipPolicy; it runs on until it has placed one request, so that a round always
    makes progress; nothing looks at the clock without `stop`)."""
    kept: list[str] = []
    by_id = {r.id: r for r in state.requests}
    loads = Loads(state) if loads is None else loads
    decisions: list[Decision] = []
    for r in admitted(state, lambda r: outlook(state, r), lambda: bool(decisions) and past(stop)):
        rid, o = r.id, outlook(state, r)
        kept.append(rid)
        if batching and join_batch(state, loads, decisions, r, o, by_id):
            continue
        choice = partial = None
        for k in sorted(o.degrees, key=lambda k: (k * o.step[k], k)):
            # steps needed now so that the rest still fits at this degree afterwards
            need = max(1, r.remaining_steps - steps_possible(state, r, o.step[k], state.end_us, True,
                                                             o.step.values()))
            got = place(state, loads, r, k, o.step[k], state.max_steps(r, k))
            if not got:
                continue
            if got[1] >= min(need, r.remaining_steps):
                choice = (k, got)
                break
            if partial is None or got[1] > partial[1][1]:
                partial = (k, got)
        choice = choice or partial
        if choice:
            k, (gpus, n) = choice
            loads.add(gpus, decision_us(state, by_id, rid, gpus, n))
            decisions.append((rid, gpus, n))
    if decisions and past(stop):
        return decisions, kept
    kept_set = set(kept)
    rest = [r for r in state.requests if r.id not in kept_set]
    return fill_leftover(state, decisions, rest, loads, ordered=False, stop=stop), kept


def fill_leftover(state: RoundState, decisions: list[Decision], rest, loads: Loads | None = None,
                  ordered: bool = False, stop: float | None = None) -> list[Decision]:
    """Best effort: the `rest` requests (oldest first unless `ordered`), at their cheapest degree,
    on what time is left; with `stop`, until then (checked every CHECK_EVERY requests) once some
    request is placed."""
    by_id = {r.id: r for r in state.requests}
    if loads is None:
        loads = Loads(state)
        for rid, g, n in decisions:
            loads.add(g, decision_us(state, by_id, rid, g, n))
    decisions = list(decisions)
    for i, r in enumerate(rest if ordered else sorted(rest, key=lambda r: (r.arrival_us, r.id))):
        if i % CHECK_EVERY == CHECK_EVERY - 1 and decisions and past(stop):
            break
        if state.round_us - min(loads.load) < 1:
            break  # every GPU is full: nothing more fits (and no outlook is worth computing)
        o = outlook(state, r)
        got = None
        for k in sorted(o.degrees, key=lambda k: (k * o.step[k], k)):  # the cheapest degree that runs it
            got = place(state, loads, r, k, o.step[k], state.max_steps(r, k))
            if got or state.max_steps(r, k):
                break
        if got:
            loads.add(got[0], decision_us(state, by_id, r.id, got[0], got[1]))
            decisions.append((r.id, got[0], got[1]))
    return decisions


class Greedy:
    name = "greedy"

    def __init__(self, batching: bool = False):
        self.batching = batching

    def plan(self, state: RoundState) -> RoundPlan:
        t0 = time.perf_counter()
        decisions, kept = greedy_decisions(state, self.batching)
        return make_plan(state, decisions, backend="greedy", status=PlanStatus.HEURISTIC, kept=tuple(kept),
                         solve_ms=(time.perf_counter() - t0) * 1e3)
