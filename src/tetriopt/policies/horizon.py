"""Looking past the round: commitments to requests already under way.

The round model counts kept requests and breaks ties by least remaining GPU-time. Round after
round that drops a large request that has been worked on for several rounds whenever a new
arrival of equal count needs its GPUs, so the GPU-time already spent on it is lost.
"""

from __future__ import annotations

import os

from .formulation import RoundModel


def commit_bonus(rm: RoundModel, committed: set[str], share: float) -> None:
    """Raise the keep weight of requests kept in the previous round by `share` of one kept request
    split over them, so that among plans keeping as many requests the committed ones stay."""
    ids = [i for i in committed if i in rm.keep and rm.model.ub[rm.keep[i]] > 0]
    if not ids or share <= 0:
        return
    bonus = int(share * rm.weights.keep / (len(ids) + 1))
    for i in ids:
        v = rm.keep[i]
        rm.model.objective[v] = rm.model.objective.get(v, 0) + bonus


def env_share() -> float:
    return float(os.environ.get("TETRIOPT_FORECAST", "0"))


# ---- forecast-aware joint test ----
from collections import deque

from ..lookahead import steps_possible, useful_degrees
from ..state import RequestState, RoundState
from .formulation import gpu_ms, joint_cap_ms


class Forecast:
    """The arrivals seen in the last `window_rounds` rounds (as first seen at a boundary), replayed
    one window later as the forecast of what will arrive next."""

    def __init__(self, window_rounds: int = 4):
        self.window_rounds = window_rounds
        self.seen: set[str] = set()
        self.recent: deque = deque()  # (arrival_us, width, height, steps, deadline - arrival)

    def observe(self, state: RoundState) -> None:
        for r in state.requests:
            if r.id not in self.seen:
                self.seen.add(r.id)
                self.recent.append((r.arrival_us, r.width, r.height, r.remaining_steps, r.deadline_us - r.arrival_us))
        horizon = state.now_us - self.window_rounds * state.round_us
        while self.recent and self.recent[0][0] < horizon:
            self.recent.popleft()

    def phantoms(self, state: RoundState) -> list[tuple[int, int]]:
        """(due us, least GPU-us to meet it from its first boundary) of each forecast arrival that
        could meet its deadline alone."""
        shift = self.window_rounds * state.round_us
        R = state.round_us
        out = []
        for a, w, h, steps, slo in self.recent:
            a2 = max(a + shift, state.end_us)
            r = RequestState(id="~", width=w, height=h, remaining_steps=steps, deadline_us=a2 + slo, arrival_us=a2)
            first = -(-a2 // R) * R
            due = state.due_us(r)
            costs = [k * t * steps for k, t in useful_degrees(state, r).items()
                     if steps_possible(state, t, first, due) >= steps]
            if costs:
                out.append((due, min(costs)))
        return out


def add_forecast(rm: RoundModel, forecast: Forecast, share: float = 1.0, committed: frozenset = frozenset()) -> None:
    """Kept request i must leave room, before its due time, for the forecast arrivals due by then
    that are cheaper than i's remaining work (serving them instead meets as many or more):
    work_due[due_i] + F_i * keep_i <= capacity(due_i)."""
    st, m = rm.state, rm.model
    ghosts = forecast.phantoms(st)
    if not ghosts:
        return
    acc_of = {}
    for acc, group, _ in rm.running:
        for u in group:
            acc_of[u] = acc
    need = {}
    for r in st.requests:
        if r.id not in rm.keep or m.ub[rm.keep[r.id]] == 0 or r.id in committed:
            continue
        due = st.due_us(r)
        mine = rm.joint_us(r.id) * r.remaining_steps
        f = sum(c for d, c in ghosts if d <= due and c < mine)
        if f <= 0:
            continue
        f_ms = int(share * f) // 1000
        cap = joint_cap_ms(st, due, 1.0)
        acc = acc_of[rm.left[r.id]]
        m.add({acc: 1, rm.keep[r.id]: f_ms}, ub=min(cap, m.ub[acc]))
        need[r.id] = f_ms
    rm.extra_need = need
