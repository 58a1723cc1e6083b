"""K GPU nodes in one simulated clock: a router assigns arrivals, each node plans its own rounds.

Every node has `inst.cluster` (its GPUs and islands) and its own policy object; all nodes share
the round boundaries. At a boundary the requests that arrived since the last one are routed in
arrival order, the router may move requests that have not started, then every node runs its
round. Plans use node-local GPU ids; the result maps node i's GPU g to i x G + g, so it is a
plan of `global_instance(inst, K)` (K x G GPUs, islands never crossing a node) and the
independent checker `validate.validate_result` applies to it unchanged.

With immediate starts, every node plans its round first; then each request arriving inside the
round is routed at once and may start on GPUs its node's plan leaves idle (immediate.py), as on
one node; the committed plans of every node stay as they are.

A request no node can keep (the deadline-aware router answers None: the server's 429) is
counted as rejected and still runs best effort on the node with the least committed work,
as the global planner runs what it gives up, so both finish every request.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable

from ..engine import InvalidPlan, RoundEngine, Tracked, VirtualClock
from ..instance import Cluster, Instance
from ..policies import Policy, make_policy
from ..result import RequestOutcome, RoundRecord, SolveResult
from ..immediate import busy_intervals, start_on_idle
from ..plan import Assignment, RoundPlan
from ..state import RequestState, RoundState
from ..errors import InputError
from .router import ROUTERS, LeastWork, NodeView, Router, committed_us, joint_slack, make_router

MAX_IDLE_ROUNDS = 1000


def global_instance(inst: Instance, nodes: int) -> Instance:
    """The same workload on one cluster of nodes x G GPUs whose islands never cross a node."""
    g = inst.cluster.gpus
    islands = tuple(tuple(i * g + x for x in isl) for i in range(nodes) for isl in inst.cluster.islands)
    return replace(inst, cluster=Cluster(g * nodes, islands), nodes=1,
                   name=inst.name + (f"-x{nodes}" if nodes > 1 else ""))


class _Node:
    """One node: its own round engine, simulated executor and policy, on the shared virtual clock."""

    def __init__(self, index: int, inst: Instance, policy: Policy, clock: VirtualClock):
        from ..server.executors.sim import SimExecutor

        self.index = index
        self.policy = policy
        executor = SimExecutor(gpus=inst.cluster.gpus, profile=inst.profile, images=False)
        executor.start(clock)
        self.engine = RoundEngine(cluster=inst.cluster, profile=inst.profile, degrees=inst.degrees,
                                  round_us=inst.round_us, executor=executor, clock=clock)

    def submit(self, t: Tracked) -> None:
        self.engine.submit(t)

    def take(self, rid: str) -> Tracked:
        t = self.engine.drop(rid)
        assert t is not None and t.done == t.inflight == 0, f"only not-started requests move ({rid})"
        return t

    def snapshot(self, now: int) -> RoundState:
        return self.engine.snapshot(now, now // self.engine.round_us)


def alone_feasible(r: RequestState, node: NodeView) -> bool:
    """Could an idle node of this shape keep r (the joint test with nothing else pending)?"""
    idle = replace(node.state, requests=(r,))
    return joint_slack(idle, r.id) is not None


@dataclass(frozen=True)
class ClusterRun:
    """A multi-node run: the plan on the global cluster plus what the router did."""

    result: SolveResult
    nodes: int
    router: str
    rejected: int                  # requests no node could keep (429 in the server); ran best effort
    infeasible: int                # requests not even an idle node could keep (400); ran best effort
    moved: int                     # not-started requests moved between nodes
    routed: tuple[int, ...]        # requests first routed to each node
    decision_ms: tuple[float, ...]  # per round boundary: routing + the slowest node's plan

    @property
    def summary(self) -> dict:
        d = self.decision_ms
        return {**self.result.summary, "nodes": self.nodes, "router": self.router, "rejected": self.rejected,
                "infeasible": self.infeasible,
                "moved": self.moved, "routed_per_node": list(self.routed),
                "decision_ms_p50": round(statistics.median(d), 3) if d else 0.0,
                "decision_ms_p99": round(sorted(d)[min(len(d) - 1, int(0.99 * len(d)))], 3) if d else 0.0,
                "decision_ms_max": round(max(d), 3) if d else 0.0}


def next_boundary(state: RoundState, plan: RoundPlan) -> RoundState:
    """The state the node's next round meets once `plan` runs: what a router judges a request
    arriving inside this round by (as at a boundary, the next round's view)."""
    done: dict[str, int] = {}
    where: dict[str, tuple[int, ...]] = {}
    for a in plan.assignments:
        for i in a.requests:
            done[i] = done.get(i, 0) + a.steps
            where[i] = a.gpus
    reqs = tuple(replace(r, remaining_steps=r.remaining_steps - done.get(r.id, 0), location=where.get(r.id, r.location))
                 for r in state.requests if r.remaining_steps > done.get(r.id, 0))
    return replace(state, now_us=state.end_us, round_index=state.round_index + 1, requests=reqs)


def simulate_cluster(inst: Instance, nodes: int, router: Router | str, policy: str = "cpsat",
                     progress: Callable[[int], None] | None = None, immediate_start: bool = False,
                     **options) -> ClusterRun:
    """Route and schedule `inst` on `nodes` nodes of inst.cluster each (see the module doc).

    With `immediate_start`, a request arriving inside a round is routed at its arrival (in arrival
    order, on every node's next-boundary view after this round's plan) and starts at once on GPUs
    its node's plan leaves idle (RoundEngine.add_immediate: the committed plans stay as they are).
    Where the router finds no node that keeps it from the next boundary, a node where it can
    start at once takes it (the most steps there, then the least committed work)."""
    rt = make_router(router) if isinstance(router, str) else router
    clock = VirtualClock()
    ns = [_Node(i, inst, make_policy(policy, immediate_start=immediate_start, **options), clock)
          for i in range(nodes)]
    fallback = LeastWork()
    G, R = inst.cluster.gpus, inst.round_us
    reqs = sorted(inst.requests, key=lambda r: (r.arrival_us, r.id))
    rounds: list[RoundRecord] = []
    assignments: list[tuple[int, Assignment]] = []
    outcomes: dict[str, RequestOutcome] = {}
    decision: list[float] = []
    routed = [0] * nodes
    rejected = moved = infeasible = 0
    nxt, now, idle = 0, 0, 0

    def route(r, views: list[NodeView], starts=None) -> int:
        """Node for arrival r (counting refusals); `starts(i, rs)`: steps r can start on node i now."""
        nonlocal rejected, infeasible
        rs = RequestState(id=r.id, width=r.width, height=r.height, remaining_steps=r.steps,
                          deadline_us=r.deadline_us, arrival_us=r.arrival_us)
        i = rt.route(rs, views)
        if i is None:
            if alone_feasible(rs, views[0]):
                rejected += 1  # some node alone could keep it: the server's 429
            else:
                infeasible += 1  # not even an idle node could: the server's 400 deadline_infeasible
            now_ = [(-n, committed_us(v.state), v.index) for v in views if v.alive
                    for n in [starts(v.index, rs) if starts else 0] if n > 0]
            i = min(now_)[2] if now_ else fallback.route(rs, views)
        routed[i] += 1
        views[i] = views[i].with_request(rs)
        return i

    def track(r) -> Tracked:
        return Tracked(id=r.id, width=r.width, height=r.height, steps=r.steps, arrival_us=r.arrival_us,
                       deadline_us=r.deadline_us)

    while True:
        t0 = time.perf_counter()
        views = [NodeView(n.index, n.snapshot(now)) for n in ns]
        while nxt < len(reqs) and reqs[nxt].arrival_us <= now:
            ns[route(reqs[nxt], views)].submit(track(reqs[nxt]))
            nxt += 1
        for m in rt.moves(views):
            ns[m.dst].submit(ns[m.src].take(m.request))
            moved += 1
        route_ms = (time.perf_counter() - t0) * 1e3
        if not any(n.engine.pending for n in ns):
            if nxt >= len(reqs):
                break
            a = reqs[nxt].arrival_us
            if not immediate_start or a >= now + R:  # idle until the next arrival's boundary (or round)
                now = (a // R if immediate_start else -(-a // R)) * R
                continue
        planned = []
        for n in ns:
            state, plan = n.engine.plan_round(
                lambda s: n.policy.plan(s) if s.requests else RoundPlan((), backend="idle"), now, now // R)
            planned.append([state, state, plan])
        if immediate_start and nxt < len(reqs) and reqs[nxt].arrival_us < now + R:
            t0 = time.perf_counter()
            for n, (state, _, plan) in zip(ns, planned):
                try:  # the policy's own plan, before immediate starts join it
                    n.engine.check(state, plan)
                except InvalidPlan as e:
                    raise RuntimeError(f"node {n.index}: {e}") from None
            views = [NodeView(n.index, next_boundary(p[0], p[2])) for n, p in zip(ns, planned)]

            def starts(i: int, rs: RequestState) -> int:
                full, plan = planned[i][1], planned[i][2]
                a = start_on_idle(full, rs, busy_intervals(full, plan.assignments))
                return a.steps if a is not None else 0

            while nxt < len(reqs) and reqs[nxt].arrival_us < now + R:
                i = route(reqs[nxt], views, starts)
                p = planned[i]
                p[1], p[2] = ns[i].engine.add_immediate(p[1], p[2], [track(reqs[nxt])])
                nxt += 1
            route_ms += (time.perf_counter() - t0) * 1e3
        slowest, ran = 0.0, False
        for n, (state, full, plan) in zip(ns, planned):
            if not full.requests:
                continue
            slowest = max(slowest, plan.solve_ms)
            try:
                run = n.engine.execute_round(state, full, plan)
            except InvalidPlan as e:
                raise RuntimeError(f"node {n.index}: {e}") from None
            plan = run.plan
            ran = ran or bool(plan.assignments)
            off = n.index * G
            assignments.extend((now // R, replace(a, gpus=tuple(off + g for g in a.gpus))) for a in plan.assignments)
            for r in run.finished:
                outcomes[r.id] = RequestOutcome(r.id, r.finish_us, r.finish_us <= r.deadline_us)
                if progress:
                    progress(1)
            rounds.append(RoundRecord(round=now // R, start_us=now, pending=len(state.requests),
                                      kept=None if plan.kept is None else len(plan.kept), backend=plan.backend,
                                      status=plan.status, solve_ms=plan.solve_ms, objective=plan.objective,
                                      bound=plan.bound, note=f"node {n.index}"))
        decision.append(route_ms + slowest)
        idle = idle + 1 if not ran else 0
        if idle > MAX_IDLE_ROUNDS:
            raise RuntimeError(f"{rt.name}/{policy}: nothing ran for {idle} rounds")
        now += R
    result = SolveResult(policy=f"{policy}@{rt.name}", instance=global_instance(inst, nodes),
                         requests=tuple(outcomes[r.id] for r in inst.requests), assignments=tuple(assignments),
                         rounds=tuple(rounds))
    return ClusterRun(result=result, nodes=nodes, router=rt.name, rejected=rejected, infeasible=infeasible, moved=moved,
                      routed=tuple(routed), decision_ms=tuple(decision))


GLOBAL = "global"  # not a router: one planner over all nodes' GPUs, the yardstick for routers


def check_router(name: str) -> None:
    if name != GLOBAL:
        try:
            make_router(name)
        except InputError as e:
            raise InputError("router", name, f"unknown router; known: {', '.join(ROUTERS)}, {GLOBAL}") from e


def run_routed(inst: Instance, nodes: int, policy: str, router: str,
               progress: Callable[[int], None] | None = None, **options) -> ClusterRun:
    """`simulate_cluster`, or for router "global" one `policy` over the K x G GPU cluster."""
    if router != GLOBAL:
        return simulate_cluster(inst, nodes, router, policy, progress=progress, **options)
    from ..simulate import simulate

    res = simulate(global_instance(inst, nodes), policy, progress=progress, **options)
    G = inst.cluster.gpus
    per_node = [set() for _ in range(nodes)]
    for _, a in res.assignments:
        per_node[a.gpus[0] // G].add(a.request)
    return ClusterRun(result=res, nodes=nodes, router=GLOBAL, rejected=0, infeasible=0, moved=0,
                      routed=tuple(len(s) for s in per_node), decision_ms=tuple(r.solve_ms for r in res.rounds))
