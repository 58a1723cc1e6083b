"""Deadlines shown early: a policy wrapper that plans each round against earlier deadlines.

The hindsight plans of docs/bound.md (fifth round) met more by showing some deadlines to the
policy earlier (every 1024 px deadline 225 ms early took tetriserve on the 64 / 64 LP set from 174
to 178): a request planned to finish sooner gives its GPUs back before later arrivals need them.
This is the online analogue: every round, each request of a resolution with a margin is shown its
deadline that much earlier, but only if it can still make the earlier deadline alone (its fastest
useful degree from now, `lookahead.steps_possible`); otherwise the planner sees the true deadline.
So the margin alone never turns a request that can still be met into one the planner must give
up. The simulator (and the server) judge met on the true deadline; the plan itself does not refer
to deadlines, so the wrapped policy's plan runs as is.

Written as a suffix of any policy name: `cpsat[margin=1024:225]`, `cpsat[forced=1;margin=1024:225/2048:100]`,
`tetriserve[margin=1024:225]` (resolution in px : margin in ms, `/` between resolutions).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..errors import InputError
from ..lookahead import steps_possible, useful_degrees
from ..plan import RoundPlan
from ..state import RequestState, RoundState
from ..units import ms_to_us
from .base import Policy

Margins = tuple[tuple[int, int], ...]  # (width px, margin us), sorted by width


def parse(name: str, spec: str) -> Margins:
    """`1024:225/2048:100` -> ((1024, 225000), (2048, 100000)); a clear error otherwise."""
    out: dict[int, int] = {}
    for item in filter(None, spec.split("/")):
        m = re.fullmatch(r"(\d+):(\d+(?:\.\d+)?)", item)
        if not m or int(m.group(1)) <= 0:
            raise InputError("policy", name, f"margin item '{item}' is not WIDTH:MS (e.g. margin=1024:225/2048:100)")
        out[int(m.group(1))] = ms_to_us(float(m.group(2)))
    return tuple(sorted(out.items()))


def split(name: str) -> tuple[str, Margins]:
    """The policy name without its `margin=` item, and the margins (empty: none)."""
    m = re.fullmatch(r"([^\[\]]+)\[(.*)\]", name)
    if not m:
        return name, ()
    items = m.group(2).split(";")
    rest = [i for i in items if not i.startswith("margin=")]
    given = [i[len("margin="):] for i in items if i.startswith("margin=")]
    if not given:
        return name, ()
    if len(given) > 1:
        raise InputError("policy", name, "one margin= item at most")
    inner = m.group(1) + (f"[{';'.join(rest)}]" if any(rest) else "")
    return inner, parse(name, given[0])


def can_make(state: RoundState, r: RequestState) -> bool:
    """Whether r, alone on the cluster from this round's boundary at its fastest useful degree,
    still finishes by its (shown) deadline, encode and decode included."""
    step = useful_degrees(state, r)
    if not step:
        return False
    return steps_possible(state, r, min(step.values()), state.now_us, None, step.values()) >= r.remaining_steps


def shown(state: RoundState, margins: Margins) -> RoundState:
    """The round state with each request of a resolution with a margin shown that much earlier,
    where it can still make the earlier deadline alone (the state itself when nothing moves)."""
    by = dict(margins)
    reqs, moved = [], False
    for r in state.requests:
        d = by.get(r.width, 0)
        if d > 0:
            early = dataclasses.replace(r, deadline_us=r.deadline_us - d)
            if can_make(state, early):
                r, moved = early, True
        reqs.append(r)
    return dataclasses.replace(state, requests=tuple(reqs)) if moved else state


class ShownEarly:
    """A policy that plans every round on `shown(state, margins)`; its plan runs on the true state."""

    def __init__(self, inner: Policy, margins: Margins, name: str):
        self.inner = inner
        self.margins = margins
        self.name = name

    def plan(self, state: RoundState) -> RoundPlan:
        return self.inner.plan(shown(state, self.margins))

    def __getattr__(self, attr: str) -> Any:  # the wrapped policy's knobs (time limit, ...) for benchmarks
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)
