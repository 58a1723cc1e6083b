"""Whole-workload scheduling in simulated time: round after round until every request is done.

A request is visible from the first round boundary at or after its arrival. Its image is done
when its last step ends plus its VAE decode (decode runs on the request's GPU set outside the
round capacity: about half a step for FLUX 1024 px; see README, "Model assumptions").
"""

from __future__ import annotations

from typing import Callable

from .instance import Instance
from .plan import overfull_gpus
from .policies import Policy, make_policy
from .result import RequestOutcome, RoundRecord, SolveResult
from .state import RequestState, RoundState

MAX_IDLE_ROUNDS = 1000


def simulate(inst: Instance, policy: Policy | str, progress: Callable[[int], None] | None = None,
             **options) -> SolveResult:
    pol = make_policy(policy, **options) if isinstance(policy, str) else policy
    R = inst.round_us
    reqs = sorted(inst.requests, key=lambda r: (r.arrival_us, r.id))
    remaining = {r.id: r.steps for r in reqs}
    location: dict[str, tuple[int, ...]] = {r.id: () for r in reqs}
    last_end: dict[str, int] = {}
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
            now = -(-reqs[nxt].arrival_us // R) * R
            continue
        state = RoundState(
            now_us=now, round_us=R, cluster=inst.cluster, profile=inst.profile, degrees=inst.degrees,
            round_index=now // R,
            requests=tuple(RequestState(id=r.id, width=r.width, height=r.height, remaining_steps=remaining[r.id],
                                        deadline_us=r.deadline_us, arrival_us=r.arrival_us, location=location[r.id])
                           for r in active.values()))
        plan = pol.plan(state)
        decisions = [(a.request, a.gpus, a.steps) for a in plan.assignments]
        bad = overfull_gpus(state, decisions)
        if bad or any(a.request not in active or a.steps > remaining[a.request] or a.start_us < now
                      or a.end_us > now + R for a in plan.assignments):
            raise RuntimeError(f"policy {pol.name} produced an invalid plan in round {now // R}: {plan}")
        for a in plan.assignments:
            remaining[a.request] -= a.steps
            location[a.request] = a.gpus
            last_end[a.request] = a.end_us
            assignments.append((now // R, a))
            if remaining[a.request] == 0:
                r = active.pop(a.request)
                fin = a.end_us + inst.profile.vae_decode_us(r.width, r.height)
                outcomes[r.id] = RequestOutcome(r.id, fin, fin <= r.deadline_us)
                if progress:
                    progress(1)
        idle = idle + 1 if not plan.assignments else 0
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
