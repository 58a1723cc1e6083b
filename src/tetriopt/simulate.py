"""Whole-workload scheduling in simulated time: the round engine on a virtual clock.

Round after round until every request is done, `RoundEngine.run_round` takes the snapshot,
asks the policy, checks the plan and runs it on the simulated executor (the server's `sim`
executor, without sleeping and without images), which reports each assignment at its planned
end. A request is visible from the first round boundary at or after its arrival. Its image is
done when its last step ends plus its VAE decode (decode runs on the request's GPU set outside
the round capacity: about half a step for FLUX 1024 px; see README, "Model assumptions").

With `immediate_start`, requests arriving inside a round also start at once on GPUs the round's
checked plan leaves idle (RoundEngine.add_immediate, immediate.py); the next boundary plans them
as usual. A batched assignment advances each of its members by its steps.
"""

from __future__ import annotations

from typing import Callable

from .engine import InvalidPlan, RoundEngine, Tracked, VirtualClock
from .instance import Instance
from .plan import RoundPlan
from .policies import Policy, make_policy
from .result import RequestOutcome, RoundRecord, SolveResult
from .server.executors.sim import SimExecutor

MAX_IDLE_ROUNDS = 1000


def simulate(inst: Instance, policy: Policy | str, progress: Callable[[int], None] | None = None,
             immediate_start: bool = False, **options) -> SolveResult:
    pol = make_policy(policy, immediate_start=immediate_start, **options) if isinstance(policy, str) else policy
    R = inst.round_us
    clock = VirtualClock()
    executor = SimExecutor(gpus=inst.cluster.gpus, profile=inst.profile, images=False)
    executor.start(clock)
    engine = RoundEngine(cluster=inst.cluster, profile=inst.profile, degrees=inst.degrees, round_us=R,
                         executor=executor, clock=clock)
    reqs = sorted(inst.requests, key=lambda r: (r.arrival_us, r.id))
    rounds, assignments, outcomes = [], [], {}
    nxt, now, idle = 0, 0, 0
    while True:
        while nxt < len(reqs) and reqs[nxt].arrival_us <= now:
            r = reqs[nxt]
            engine.submit(Tracked(id=r.id, width=r.width, height=r.height, steps=r.steps,
                                  arrival_us=r.arrival_us, deadline_us=r.deadline_us))
            nxt += 1
        if not engine.pending:
            if nxt >= len(reqs):
                break
            a = reqs[nxt].arrival_us
            if not immediate_start:  # idle until the boundary at or after the next arrival
                now = -(-a // R) * R
                continue
            if a >= now + R:  # immediate starts: idle until the round the next request arrives in
                now = a // R * R
                continue
        arrivals = []
        while immediate_start and nxt < len(reqs) and reqs[nxt].arrival_us < now + R:
            r = reqs[nxt]
            arrivals.append(Tracked(id=r.id, width=r.width, height=r.height, steps=r.steps,
                                    arrival_us=r.arrival_us, deadline_us=r.deadline_us))
            nxt += 1
        try:
            run = engine.run_round(lambda s: pol.plan(s) if s.requests else RoundPlan((), backend="idle"),
                                   now, now // R, arrivals)
        except InvalidPlan as e:
            raise RuntimeError(f"policy {pol.name} produced an invalid plan: {e}") from None
        plan = run.plan
        assignments.extend((now // R, a) for a in plan.assignments)
        for t in run.finished:
            outcomes[t.id] = RequestOutcome(t.id, t.finish_us, t.finish_us <= t.deadline_us)
            if progress:
                progress(1)
        idle = idle + 1 if not plan.assignments else 0
        if idle > MAX_IDLE_ROUNDS:
            raise RuntimeError(f"policy {pol.name} ran nothing for {idle} rounds with {len(engine.pending)} pending")
        rounds.append(RoundRecord(round=now // R, start_us=now, pending=len(run.state.requests),
                                  kept=None if plan.kept is None else len(plan.kept), backend=plan.backend,
                                  status=plan.status, solve_ms=plan.solve_ms, objective=plan.objective,
                                  bound=plan.bound, note=plan.note))
        now += R
    return SolveResult(policy=pol.name, instance=inst,
                       requests=tuple(outcomes[r.id] for r in inst.requests),
                       assignments=tuple(assignments), rounds=tuple(rounds))
