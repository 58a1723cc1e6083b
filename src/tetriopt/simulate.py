"""Whole-workload scheduling in simulated time: round after round until every request is done.

A request is visible from the first round boundary at or after its arrival. Its image is done
when its last step ends plus its VAE decode (decode runs on the request's GPU set outside the
round capacity: about half a step for FLUX 1024 px; see README, "Model assumptions").

With `immediate_start`, a request arriving mid-round also starts at once on GPUs the round's
committed plan leaves idle until the round ends (immediate.py); the next boundary plans it as
usual. A batched assignment advances each of its members by its steps.
"""

from __future__ import annotations

from typing import Callable

from .instance import Instance
from .immediate import busy_intervals, occupy, start_on_idle
from .plan import batch_error, decisions_of, overfull_gpus
from .policies import Policy, make_policy
from .result import RequestOutcome, RoundRecord, SolveResult
from .state import RequestState, RoundPlan, RoundState

MAX_IDLE_ROUNDS = 1000


def simulate(inst: Instance, policy: Policy | str, progress: Callable[[int], None] | None = None,
             immediate_start: bool = False, **options) -> SolveResult:
    pol = make_policy(policy, **options) if isinstance(policy, str) else policy
    R = inst.round_us
    reqs = sorted(inst.requests, key=lambda r: (r.arrival_us, r.id))
    remaining = {r.id: r.steps for r in reqs}
    location: dict[str, tuple[int, ...]] = {r.id: () for r in reqs}
    active: dict[str, object] = {}
    rounds, assignments, outcomes = [], [], {}
    nxt, now, idle = 0, 0, 0
    while True:
        while nxt < len(reqs) and reqs[nxt].arrival_us <= now:
            active[reqs[nxt].id] = reqs[nxt]
            nxt += 1
        if not active:
            if nxt >= len(reqs):
                break
            a = reqs[nxt].arrival_us
            if not immediate_start:  # idle until the boundary at or after the next arrival
                now = -(-a // R) * R
                continue
            if a >= now + R:  # immediate starts: idle until the round the next request arrives in
                now = a // R * R
                continue
        state = RoundState(
            now_us=now, round_us=R, cluster=inst.cluster, profile=inst.profile, degrees=inst.degrees,
            round_index=now // R,
            requests=tuple(RequestState(id=r.id, width=r.width, height=r.height, remaining_steps=remaining[r.id],
                                        deadline_us=r.deadline_us, arrival_us=r.arrival_us, location=location[r.id])
                           for r in active.values()))
        plan = pol.plan(state) if active else RoundPlan(assignments=(), backend="idle", status="OPTIMAL")
        bad = overfull_gpus(state, decisions_of(plan))
        ids = [i for a in plan.assignments for i in a.requests]
        if bad or len(ids) != len(set(ids)) or any(
                any(i not in active or a.steps > remaining[i] for i in a.requests) or a.start_us < now
                or a.end_us > now + R or batch_error(state, a) for a in plan.assignments):
            raise RuntimeError(f"policy {pol.name} produced an invalid plan in round {now // R}: {plan}")
        done_now = list(plan.assignments)
        if immediate_start:  # arrivals inside this round, in order, on GPUs idle for its rest
            busy = busy_intervals(state, plan.assignments)
            while nxt < len(reqs) and reqs[nxt].arrival_us < now + R:
                r = reqs[nxt]
                nxt += 1
                active[r.id] = r
                a = start_on_idle(state, RequestState(id=r.id, width=r.width, height=r.height,
                                                      remaining_steps=r.steps, deadline_us=r.deadline_us,
                                                      arrival_us=r.arrival_us), busy)
                if a is not None:
                    occupy(busy, a)
                    done_now.append(a)
        for a in done_now:
            assignments.append((now // R, a))
            for i in a.requests:
                remaining[i] -= a.steps
                location[i] = a.gpus
                if remaining[i] == 0:
                    r = active.pop(i)
                    fin = a.end_us + inst.profile.vae_decode_us(r.width, r.height)
                    outcomes[r.id] = RequestOutcome(r.id, fin, fin <= r.deadline_us)
                    if progress:
                        progress(1)
        idle = idle + 1 if not done_now else 0
        if idle > MAX_IDLE_ROUNDS:
            raise RuntimeError(f"policy {pol.name} ran nothing for {idle} rounds with {len(active)} pending")
        rounds.append(RoundRecord(round=now // R, start_us=now, pending=len(state.requests),
                                  kept=None if plan.kept is None else len(plan.kept), backend=plan.backend,
                                  status=plan.status, solve_ms=plan.solve_ms, objective=plan.objective,
                                  bound=plan.bound, note=plan.note))
        now += R
    return SolveResult(policy=pol.name, instance=inst,
                       requests=tuple(outcomes[r.id] for r in inst.requests),
                       assignments=tuple(assignments), rounds=tuple(rounds))
