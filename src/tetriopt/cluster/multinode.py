"""K GPU nodes in one simulated clock: a router assigns arrivals, each node plans its own rounds.

Every node has `inst.cluster` (its GPUs and islands) and its own policy object; all nodes share
the round boundaries. At a boundary the requests that arrived since the last one are routed in
arrival order, the router may move requests that have not started, then every node runs its
round. Plans use node-local GPU ids; the result maps node i's GPU g to i x G + g, so it is a
plan of `global_instance(inst, K)` (K x G GPUs, islands never crossing a node) and the
independent checker `validate.validate_result` applies to it unchanged.

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
from ..plan import Assignment
from ..state import RequestState, RoundState
from ..errors import InputError
from .router import ROUTERS, LeastWork, NodeView, Router, joint_slack, make_router

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

    def run_round(self, now: int):
        try:
            run = self.engine.run_round(self.policy.plan, now, now // self.engine.round_us)
        except InvalidPlan as e:
            raise RuntimeError(f"node {self.index}: {e}") from None
        return run.state, run.plan, [(t, t.finish_us) for t in run.finished]


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


def simulate_cluster(inst: Instance, nodes: int, router: Router | str, policy: str = "cpsat",
                     progress: Callable[[int], None] | None = None, **options) -> ClusterRun:
    """Route and schedule `inst` on `nodes` nodes of inst.cluster each (see the module doc)."""
    rt = make_router(router) if isinstance(router, str) else router
    clock = VirtualClock()
    ns = [_Node(i, inst, make_policy(policy, **options), clock) for i in range(nodes)]
    fallback = LeastWork()
    G, R = inst.cluster.gpus, inst.round_us
    where: dict[str, int] = {}
    reqs = sorted(inst.requests, key=lambda r: (r.arrival_us, r.id))
    rounds: list[RoundRecord] = []
    assignments: list[tuple[int, Assignment]] = []
    outcomes: dict[str, RequestOutcome] = {}
    decision: list[float] = []
    routed = [0] * nodes
    rejected = moved = infeasible = 0
    nxt, now, idle = 0, 0, 0
    while True:
        t0 = time.perf_counter()
        views = [NodeView(n.index, n.snapshot(now)) for n in ns]
        while nxt < len(reqs) and reqs[nxt].arrival_us <= now:
            r = reqs[nxt]
            nxt += 1
            rs = RequestState(id=r.id, width=r.width, height=r.height, remaining_steps=r.steps,
                              deadline_us=r.deadline_us, arrival_us=r.arrival_us)
            i = rt.route(rs, views)
            if i is None:
                if alone_feasible(rs, views[0]):
                    rejected += 1  # some node alone could keep it: the server's 429
                else:
                    infeasible += 1  # not even an idle node could: the server's 400 deadline_infeasible
                i = fallback.route(rs, views)
            ns[i].submit(Tracked(id=r.id, width=r.width, height=r.height, steps=r.steps,
                                 arrival_us=r.arrival_us, deadline_us=r.deadline_us))
            where[r.id] = i
            routed[i] += 1
            views[i] = views[i].with_request(rs)
        for m in rt.moves(views):
            ns[m.dst].submit(ns[m.src].take(m.request))
            where[m.request] = m.dst
            moved += 1
        route_ms = (time.perf_counter() - t0) * 1e3
        if not any(n.engine.pending for n in ns):
            if nxt >= len(reqs):
                break
            now = -(-reqs[nxt].arrival_us // R) * R
            continue
        slowest, ran = 0.0, False
        for n in ns:
            if not n.engine.pending:
                continue
            state, plan, finished = n.run_round(now)
            slowest = max(slowest, plan.solve_ms)
            ran = ran or bool(plan.assignments)
            off = n.index * G
            assignments.extend((now // R, replace(a, gpus=tuple(off + g for g in a.gpus))) for a in plan.assignments)
            for r, fin in finished:
                outcomes[r.id] = RequestOutcome(r.id, fin, fin <= r.deadline_us)
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
