"""Runs the round policy off the event loop, and answers with a valid plan no matter what.

The policy runs on one dedicated thread (CP-SAT and CBC release the GIL while they search) or,
with mode="process", in one long-lived worker process (a policy in pure Python then cannot
stall the event loop). One worker keeps stateful policies (fixed-sp, TetriServe's hints)
consistent. If the policy raises, the worker process dies, or its plan breaks a rule of
`tetriopt.plan.check_plan` (the engine's gate, the simulator's too), the round falls back to
the greedy heuristic, computed right here.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

from ..plan import Assignment, PlanStatus, RoundPlan, check_plan, decision_us, members
from ..policies import Policy, make_policy
from ..lookahead import outlook
from ..policies.greedy import Greedy, Loads, greedy_decisions
from ..state import RequestState, RoundState

log = logging.getLogger("tetriopt.server.planner")

_POLICY: Any = None  # the worker process's policy


def _init_process(name: str, options: dict[str, Any]) -> None:
    global _POLICY
    _POLICY = make_policy(name, **options)


def _plan_in_process(state: RoundState, limit_ms: float | None) -> RoundPlan:
    return plan_within(_POLICY, state, limit_ms)


def plan_within(policy: Policy, state: RoundState, limit_ms: float | None) -> RoundPlan:
    """`policy.plan(state)` under a tighter time limit than the policy's own, for this call only (a
    round planned again late in its lead has less time left). Policies without a limit run as
    they are. Safe because one worker runs one policy's calls in turn."""
    full = getattr(policy, "limit_s", None)
    if limit_ms is None or full is None:
        return policy.plan(state)
    policy.limit_s = min(full, limit_ms / 1e3)
    try:
        return policy.plan(state)
    finally:
        policy.limit_s = full


def fill_late(state: RoundState, plan: RoundPlan, late: tuple[RequestState, ...],
              batching: bool = False) -> tuple[RoundState, RoundPlan]:
    """Add requests that arrived after the round's snapshot (during planning) to GPU time its plan
    leaves free: greedy (EDF, joint test) on the tail of each GPU, after the plan's last end there.

    The server snapshots a round `lead` before its boundary so the solver's time is hidden (and
    plans again while arrivals leave time for it); without this, a request arriving after the
    last plan waits a whole round even on idle GPUs, where the offline simulation (visible at the
    first boundary at or after arrival) starts it at once. When the plan leaves no room, work of
    requests the plan has given up on (not in `plan.kept`: they miss their deadline anyway) makes
    room if that places more late arrivals; it waits for the next round. Returns the state with
    the late requests added and the plan with their assignments (the other assignments unchanged,
    so their start order stands). With `batching`, late same-size arrivals may share steps
    (greedy's batching rule), as the policy's own requests may.
    """
    merged = replace(state, requests=state.requests + late)
    extra = _on_tails(merged, plan.assignments, late, batching)
    out = replace(plan, assignments=plan.assignments + tuple(extra)) if extra else plan
    if plan.kept is not None and _placed(extra) < len(late):
        kept = set(plan.kept)
        base = tuple(a for a in plan.assignments if kept & set(a.requests))
        more = _on_tails(merged, base, late, batching) if len(base) < len(plan.assignments) else []
        if _placed(more) > _placed(extra):
            out = replace(plan, assignments=base + tuple(more))
    if plan.kept is not None and len(merged.requests) <= RESCUE_MAX_PENDING and not _serves(merged, out, late):
        # a late arrival that needs this round and found no room: greedy on the whole round, kept
        # only if it keeps everyone the plan kept and gives each of them, and each late arrival,
        # the steps it needs now (the offline solve plans such an arrival with the rest; 256/512 px
        # images at 1.5x their SLO arriving in a round's last 25 ms were refused or missed, issue 11)
        g = Greedy(batching).plan(merged)
        by_id = {r.id: r for r in merged.requests}
        if (set(g.kept or ()) >= kept_ids(plan) | {r.id for r in late}
                and _serves(merged, g, late + tuple(by_id[i] for i in kept_ids(plan) if i in by_id))):
            out = replace(g, solve_ms=plan.solve_ms, note="late arrivals: greedy re-plan")
    return merged, out


RESCUE_MAX_PENDING = 32  # fill_late tries greedy on the whole round up to this many requests (cost: ms)


def kept_ids(plan: RoundPlan) -> set[str]:
    return set(plan.kept or ())


def _serves(state: RoundState, plan: RoundPlan, reqs) -> bool:
    """Does `plan` give each of `reqs` the steps it needs in this round (lookahead's need_now)?"""
    got: dict[str, int] = {}
    for a in plan.assignments:
        for i in a.requests:
            got[i] = got.get(i, 0) + a.steps
    return all(got.get(r.id, 0) >= outlook(state, r).need_now for r in reqs)


def _placed(assignments: list[Assignment]) -> int:
    """Requests these assignments advance (a batch: every member)."""
    return len({r for a in assignments for r in a.requests})


def _on_tails(merged: RoundState, planned: tuple[Assignment, ...], late: tuple[RequestState, ...],
              batching: bool = False) -> list[Assignment]:
    """Greedy's assignments for `late` after the last end of `planned` on each GPU."""
    def tails() -> Loads:
        loads = Loads(merged)
        for a in planned:
            for g in a.gpus:
                loads.load[g] = max(loads.load[g], a.end_us - merged.now_us)
        return loads

    decisions, _ = greedy_decisions(replace(merged, requests=late), batching=batching, loads=tails())
    tail, by_id, extra = tails().load, {r.id: r for r in late}, []
    for rid, gpus, n in decisions:  # replay greedy's choices, each set starting after its busiest GPU
        start = merged.now_us + max(tail[g] for g in gpus)
        end = start + decision_us(merged, by_id, rid, gpus, n)
        if end > merged.end_us:
            continue
        ids = members(rid)
        extra.append(Assignment(request=ids[0], batch=ids[1:], gpus=gpus, steps=n, start_us=start, end_us=end))
        for g in gpus:
            tail[g] = end - merged.now_us
    return extra


class Planner:
    """`policy` by name, or `factory`: a callable making a policy object of one's own (embedding,
    tests), run on the worker thread under the same checks and fallback."""

    def __init__(self, policy: str, time_limit_ms: float, seed: int = 0, workers: int = 1, mode: str = "thread",
                 batching: bool = False, immediate_start: bool = False, factory: Callable[[], Policy] | None = None):
        self.options = {"time_limit_ms": time_limit_ms, "seed": seed, "workers": workers, "batching": batching,
                        "immediate_start": immediate_start}
        if factory is not None and mode != "thread":
            raise ValueError("a policy factory runs on the worker thread (mode='thread')")
        self.mode = mode
        self._policy = factory() if factory is not None else make_policy(policy, **self.options)  # fails fast
        self.policy_name = self._policy.name if factory is not None else policy
        self._pool: Executor = self._new_pool()
        if mode != "thread":
            self._policy = None
        self._fallback = make_policy("greedy")

    def _new_pool(self) -> Executor:
        if self.mode == "process":
            return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_process, initargs=(self.policy_name, self.options))
        return ThreadPoolExecutor(1, thread_name_prefix="tetriopt-solver")

    async def plan(self, state: RoundState, limit_ms: float | None = None) -> RoundPlan:
        """A checked plan for `state` (greedy when the policy fails), within `limit_ms` when given
        and tighter than the policy's own time limit."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            if self.mode == "process":
                plan = await loop.run_in_executor(self._pool, _plan_in_process, state, limit_ms)
            else:
                plan = await loop.run_in_executor(self._pool, plan_within, self._policy, state, limit_ms)
            why = check_plan(state, plan)
            if why is None:
                return plan
            reason = f"invalid plan from {self.policy_name}: {why}"
        except Exception as e:  # noqa: BLE001 - any solver failure must not stop serving
            reason = f"{self.policy_name} failed: {e!r}"
            if self.mode == "process" and "Broken" in type(e).__name__:
                self._pool = self._new_pool()
        log.error("round planning fell back to greedy", extra={"round": state.round_index, "reason": reason})
        plan = self._fallback.plan(state)
        return replace(plan, status=PlanStatus.FALLBACK, note=reason, solve_ms=(time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
