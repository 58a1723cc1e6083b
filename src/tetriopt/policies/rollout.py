"""Rollout: choose between round plans by playing each forward with a cheap base policy.

The round model judges its keep decisions with a fluid joint test (the GPU-time due by each
deadline fits the cluster's), which can admit work whose steps, packed for real into aligned
sets round after round, later collide (docs/solver.md, 3). A rollout asks the concrete question
instead: run this round's plan, then TetriServe's plans round after round on the requests known
now, and count the deadlines met. Comparing the optimiser's plan with TetriServe's own this way
is one step of policy improvement over TetriServe: TetriServe is stateless, so its rollout from
its own plan is exactly what it would do with no further arrivals, and the plan chosen meets at
least as many of the known requests in that forward play.

A rollout drops requests that can no longer meet their deadline (they count for nothing and
would only fill leftover GPUs) and stops when none is alive, so it spans at most the longest
deadline ahead (about 6 rounds for FLUX at SLO 1.0). Arrivals are not forecast: replaying recent
arrivals into the rollout was measured and met fewer deadlines (docs/solver.md, 4); `play_future`
(sampled arrivals) serves the `cpsat[giveup=1;futures=1]` ablation only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from ..lookahead import outlook
from ..plan import Decision, RoundPlan, make_plan
from ..state import RequestState, RoundState


def advance(state: RoundState, plan: RoundPlan) -> tuple[RoundState, int]:
    """The next boundary's state if `plan` runs as laid out (the simulator's semantics: a latent
    stays on the set of its last assignment), and how many requests it finishes by their deadline."""
    nxt, met = advance_ids(state, plan)
    return nxt, len(met)


def advance_ids(state: RoundState, plan: RoundPlan) -> tuple[RoundState, list[str]]:
    """`advance`, with the ids of the requests finished by their deadline."""
    ran: dict[str, int] = {}
    end: dict[str, tuple[int, tuple[int, ...]]] = {}
    for a in plan.assignments:
        for i in a.requests:
            ran[i] = ran.get(i, 0) + a.steps
            if i not in end or a.end_us >= end[i][0]:
                end[i] = (a.end_us, a.gpus)
    met, nxt = [], []
    for r in state.requests:
        n = ran.get(r.id, 0)
        if n >= r.remaining_steps:
            if end[r.id][0] <= r.deadline_us:
                met.append(r.id)
            continue
        nxt.append(replace(r, remaining_steps=r.remaining_steps - n, location=end[r.id][1]) if n else r)
    return replace(state, now_us=state.end_us, requests=tuple(nxt), round_index=state.round_index + 1), met


def without(state: RoundState, ids) -> RoundState:
    """The state without the requests `ids` (given up for good: the forward play ignores them)."""
    return replace(state, requests=tuple(r for r in state.requests if r.id not in ids))


def alive_only(state: RoundState) -> RoundState:
    """The state without the requests that can no longer meet their deadline."""
    out = replace(state, requests=tuple(r for r in state.requests if outlook(state, r).alive))
    out.memo.update(state.memo)  # a request's outlook depends on the boundary only, not on the others
    return out


def rollout_met(state: RoundState, decisions: Iterable[Decision], kept: tuple[str, ...] | None, base,
                max_rounds: int = 50) -> int:
    """Deadlines met among the requests of `state` when this round runs `decisions` and `base` (a
    stateless policy) plans every later round for the requests still alive."""
    return Forward(base).met(state, decisions, kept, max_rounds=max_rounds)


def _key(state: RoundState) -> tuple:
    """What a stateless policy's plan depends on (the cluster and profile by identity: one per simulation)."""
    return (state.now_us, state.round_us, state.round_index, state.degrees, id(state.cluster), id(state.profile),
            state.requests)


class Forward:
    """`rollout_met` with its base policy's plans and forward plays memoised by state, and an early
    stop. Between two plans of a round, and from one round's rollout to the next (when no request
    arrived), the forward plays pass through identical states: each is planned and played once.
    The base policy must be stateless (its plan a function of the state), so that a memoised plan
    or count is exactly the one recomputing would give."""

    def __init__(self, base, size: int = 2048):
        self.base = base
        self.size = size
        self._plans: dict[tuple, tuple[RoundState, RoundPlan]] = {}  # the state is kept: its ids stay taken
        self._met: dict[tuple, tuple[str, ...]] = {}  # alive-only state -> ids met playing base from it

    def plan(self, state: RoundState) -> RoundPlan:
        """The base policy's plan for `state`, computed once per distinct state."""
        k = _key(state)
        hit = self._plans.get(k)
        if hit is None:
            if len(self._plans) >= self.size:
                self._plans.clear()
                self._met.clear()
            hit = self._plans[k] = (state, self.base.plan(state))
        return hit[1]

    def forget_before(self, now_us: int) -> None:
        """Drop the plans and plays of states before `now_us`: rounds only move forward, so they
        can never be asked again (kept, they were 10,000 long-lived objects by the end of a
        skewed-slo1.5 run, memory that every full garbage collection walks)."""
        if any(k[0] < now_us for k in self._plans):
            self._plans = {k: v for k, v in self._plans.items() if k[0] >= now_us}
        if any(k[0] < now_us for k in self._met):
            self._met = {k: v for k, v in self._met.items() if k[0] >= now_us}

    def cached(self, state: RoundState) -> RoundPlan | None:
        """The base policy's plan for `state` if it was computed already (else None)."""
        hit = self._plans.get(_key(state))
        return None if hit is None else hit[1]

    def met(self, state: RoundState, decisions: Iterable[Decision], kept: tuple[str, ...] | None,
            beat: int | None = None, max_rounds: int = 50) -> int:
        """rollout_met(state, decisions, kept, base); with `beat`, it may stop as soon as the count
        cannot exceed `beat` (it then returns a count <= beat, not necessarily the full one)."""
        return len(self.play(state, decisions, kept, beat, max_rounds))

    def play(self, state: RoundState, decisions: Iterable[Decision], kept: tuple[str, ...] | None,
             beat: int | None = None, max_rounds: int = 50) -> frozenset[str]:
        """The ids `met` counts (with `beat`, possibly only some of them once they cannot exceed it)."""
        s, got = advance_ids(state, make_plan(state, list(decisions), backend="rollout", kept=kept))
        path: list[tuple[tuple, int]] = []  # (state's key, how many were met before it) along this play
        for _ in range(max_rounds):
            s = alive_only(s)
            if not s.requests:
                break
            k = _key(s)
            if k in self._met:
                got.extend(self._met[k])
                break
            if beat is not None and len(got) + len(s.requests) <= beat:
                return frozenset(got)  # even meeting every live request would not exceed `beat`
            path.append((k, len(got)))
            s, m = advance_ids(s, self.plan(s))
            got.extend(m)
        else:
            return frozenset(got)  # cut by max_rounds: not a whole play, nothing memoised
        for k, before in path:
            self._met[k] = tuple(got[before:])
        return frozenset(got)

    def play_future(self, state: RoundState, decisions: Iterable[Decision], kept: tuple[str, ...] | None,
                    arrivals: list[RequestState], max_rounds: int = 50) -> int:
        """Deadlines met among the known requests and `arrivals` (a sampled future, arrival order)
        when this round runs `decisions` and the base policy plans every later round, each arrival
        joining at the first boundary after it arrives. Not memoised (the futures differ)."""
        s, got = advance_ids(state, make_plan(state, list(decisions), backend="rollout", kept=kept))
        met, nxt = len(got), 0
        for _ in range(max_rounds):
            j = nxt
            while nxt < len(arrivals) and arrivals[nxt].arrival_us <= s.now_us:
                nxt += 1
            if nxt > j:
                s = replace(s, requests=s.requests + tuple(arrivals[j:nxt]))
            s = alive_only(s)
            if not s.requests:
                if nxt >= len(arrivals):
                    break
                s = replace(s, now_us=s.end_us, round_index=s.round_index + 1)
                continue
            s, m = advance_ids(s, self.base.plan(s))
            met += len(m)
        return met
