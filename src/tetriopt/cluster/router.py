"""Which node a request goes to: pluggable routers over per-node round states.

A node's view is the `RoundState` its next round will meet (pending requests with the steps
they will still have once the rounds in flight succeed), so a router judges a node with the
same figures its planner will use. Sequence parallelism stays inside a node; routing is the
only decision above the per-node round optimiser.

- `round-robin`: the next live node in turn.
- `least-work`: the live node with the least committed GPU-time (each pending request's steps
  left x GPU-time per step at its cheapest deadline-meeting degree, as the joint test counts it).
- `deadline-aware`: the per-node joint test (`greedy.admit`, the look-ahead the planners keep
  requests by): the node where the request is kept, nothing kept there is pushed out, and the
  tightest deadline prefix has the most GPU-time to spare. None: no node can keep it (the
  server answers 429). It also moves requests that have not started off a node that has
  fallen behind (its joint test gives them up) to a node that can keep them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Iterable, Protocol, Sequence

from ..errors import InputError
from ..lookahead import outlook
from ..policies.greedy import admit
from ..state import RequestState, RoundState


@dataclass(frozen=True)
class NodeView:
    """What a router knows about one node: its next round's state, and whether it is up."""

    index: int
    state: RoundState
    alive: bool = True

    def with_request(self, r: RequestState) -> "NodeView":
        """The view after routing r here (before the node's own state catches up)."""
        return replace(self, state=replace(self.state, requests=self.state.requests + (r,)))

    def without(self, rid: str) -> "NodeView":
        return replace(self, state=replace(self.state, requests=tuple(x for x in self.state.requests
                                                                        if x.id != rid)))


@dataclass(frozen=True)
class Move:
    """Take a not-yet-started request off one node and give it to another."""

    request: str
    src: int
    dst: int


class Router(Protocol):
    name: str

    def route(self, r: RequestState, nodes: Sequence[NodeView]) -> int | None:
        """Index of the node for r, or None when no node should take it."""

    def moves(self, nodes: Sequence[NodeView]) -> list[Move]:
        """Requests to move between nodes at a round boundary (not started ones only)."""


def committed_us(state: RoundState) -> int:
    """GPU-us of work the node has committed: steps left x cheapest deadline-meeting cost."""
    return sum(r.remaining_steps * outlook(state, r).cheapest_cost for r in state.requests)


def joint_slack(state: RoundState, rid: str) -> int | None:
    """GPU-us to spare at the tightest deadline prefix that includes `rid` when the node keeps it
    on top of what it keeps now; None when the joint test cannot keep it there (it, or a request
    kept now, would be given up)."""
    looks = {r.id: outlook(state, r) for r in state.requests}
    if not looks[rid].alive:
        return None
    others = replace(state, requests=tuple(r for r in state.requests if r.id != rid))
    kept = set(admit(others, looks)) | {rid}
    # the same capacity rule as admit: GPUs x time from the round boundary to the due time
    work, slack = 0, None
    me = next(r for r in state.requests if r.id == rid)
    for r in sorted((r for r in state.requests if r.id in kept), key=lambda r: (r.deadline_us, r.arrival_us, r.id)):
        work += looks[r.id].cheapest_cost * r.remaining_steps
        if (r.deadline_us, r.arrival_us, r.id) < (me.deadline_us, me.arrival_us, me.id):
            continue  # prefixes before rid are what the node keeps today: unchanged
        spare = state.cluster.gpus * (r.deadline_us - state.decode_us(r) - state.now_us) - work
        slack = spare if slack is None else min(slack, spare)
    return slack if slack is not None and slack >= 0 else None


def started(r: RequestState) -> bool:
    """Has any step run (or been dispatched)? Only requests that have not may move."""
    return bool(r.location)


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def route(self, r: RequestState, nodes: Sequence[NodeView]) -> int | None:
        live = [n for n in nodes if n.alive]
        if not live:
            return None
        return live[next(self._turn) % len(live)].index

    def moves(self, nodes: Sequence[NodeView]) -> list[Move]:
        return []


class LeastWork:
    name = "least-work"

    def route(self, r: RequestState, nodes: Sequence[NodeView]) -> int | None:
        live = [n for n in nodes if n.alive]
        if not live:
            return None
        return min(live, key=lambda n: (committed_us(n.state), n.index)).index

    def moves(self, nodes: Sequence[NodeView]) -> list[Move]:
        return []


class DeadlineAware:
    name = "deadline-aware"

    def slack(self, r: RequestState, node: NodeView) -> int | None:
        return joint_slack(node.with_request(r).state, r.id) if node.alive else None

    def route(self, r: RequestState, nodes: Sequence[NodeView]) -> int | None:
        """Most slack; ties (idle nodes) to the least committed work, then the lowest index."""
        best = None
        for n in nodes:
            s = self.slack(r, n)
            if s is not None:
                key = (-s, committed_us(n.state), n.index)
                if best is None or key < best:
                    best = key
        return None if best is None else best[2]

    def moves(self, nodes: Sequence[NodeView]) -> list[Move]:
        """Not-started requests a node's joint test gives up, to a node that keeps them."""
        views = {n.index: n for n in nodes}
        out: list[Move] = []
        for n in nodes:
            if not n.alive or not n.state.requests:
                continue
            looks = {r.id: outlook(n.state, r) for r in n.state.requests}
            kept = set(admit(n.state, looks))
            for r in n.state.requests:
                if r.id in kept or started(r) or not looks[r.id].alive:
                    continue
                others = [v for i, v in views.items() if i != n.index]
                dst = self.route(r, others)
                if dst is not None:
                    out.append(Move(r.id, n.index, dst))
                    views[n.index] = views[n.index].without(r.id)
                    views[dst] = views[dst].with_request(r)
        return out


ROUTERS = {"round-robin": RoundRobin, "least-work": LeastWork, "deadline-aware": DeadlineAware}


def make_router(name: str) -> Router:
    try:
        return ROUTERS[name]()
    except KeyError:
        raise InputError("router", name, f"unknown router; known: {', '.join(ROUTERS)}") from None


def router_names() -> Iterable[str]:
    return tuple(ROUTERS)
