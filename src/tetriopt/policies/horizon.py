"""Looking past the round: room for the arrivals a wide request would shut out (docs/solver.md, 4).

The round model's joint test admits a request when the GPU-time of everything kept and due by
its due time fits in the cluster's GPU-time until then, as a fluid. For a wide request (one that
needs at least half the cluster to meet its deadline) that is most optimistic: its steps need
that many GPUs free at once for whole rounds, while the arrivals of the next rounds (small
requests whose deadlines are a round or two away) need GPUs in every round. Under load the model
admitted such requests, gave the round to them, then dropped them a few rounds later when the
arrivals they blocked could no longer wait: on 8 GPUs every kept 2048 px request was missed and
about 1 in 3 of the 1024 px ones too.

So a wide request is admitted only if it also leaves room, before its due time, for the arrivals
a forecast expects that are cheaper than its remaining work (serving them instead meets as many
requests or more). The forecast replays the arrivals of the last few rounds one window later.
A request kept in the previous round is not re-tested (the forecast moves every round: re-testing
dropped requests mid-way and wasted the GPU-time spent on them).
"""

from __future__ import annotations

import random
from collections import deque

from ..lookahead import steps_possible, useful_degrees
from ..state import RequestState, RoundState
from .formulation import RoundModel, joint_cap_ms


class Forecast:
    """The arrivals seen in the last `window_rounds` rounds (as first seen at a boundary), replayed
    one window later as the forecast of what arrives next."""

    def __init__(self, window_rounds: int = 4):
        self.window_rounds = window_rounds
        self.pending: set[str] = set()  # ids pending at the last boundary (a request stays pending until done)
        self.recent: deque = deque()  # (arrival_us, width, height, steps, deadline - arrival)

    def observe(self, state: RoundState) -> None:
        for r in state.requests:
            if r.id not in self.pending:
                self.recent.append((r.arrival_us, r.width, r.height, r.remaining_steps, r.deadline_us - r.arrival_us))
        self.pending = {r.id for r in state.requests}
        horizon = state.now_us - self.window_rounds * state.round_us
        while self.recent and self.recent[0][0] < horizon:
            self.recent.popleft()

    def arrivals(self, state: RoundState) -> list[tuple[int, int]]:
        """(due us, least GPU-us to meet it from its first boundary) of each forecast arrival that
        could meet its deadline alone."""
        shift = self.window_rounds * state.round_us
        out = []
        for a, w, h, steps, slo in self.recent:
            a2 = max(a + shift, state.end_us)
            r = RequestState(id="~", width=w, height=h, remaining_steps=steps, deadline_us=a2 + slo, arrival_us=a2)
            least = _least(state, r)
            if least is not None:
                out.append((state.due_us(r), least[0]))
        return out


    def sample(self, state: RoundState, rounds: int, seed: int) -> list[RequestState]:
        """One sampled future: Poisson arrivals over the next `rounds` rounds from the end of this
        one, at the rate seen over the window, each a copy (size, steps, SLO) of a recent arrival
        drawn at random; the same `seed` gives the same future (common to the plans compared)."""
        if not self.recent:
            return []
        rng = random.Random(seed)
        rate = len(self.recent) / (self.window_rounds * state.round_us)  # arrivals per us
        t, end, out = state.now_us, state.end_us + rounds * state.round_us, []
        while True:
            t += max(1, int(rng.expovariate(rate)))
            if t >= end:
                return out
            _, w, h, steps, slo = self.recent[rng.randrange(len(self.recent))]
            out.append(RequestState(id=f"~{seed}.{len(out)}", width=w, height=h, remaining_steps=steps,
                                    deadline_us=t + slo, arrival_us=t))


def _least(state: RoundState, r: RequestState) -> tuple[int, int] | None:
    """(least GPU-us of steps, its degree) for r, not started, to meet its deadline from its first
    boundary (None: it cannot)."""
    first = -(-r.arrival_us // state.round_us) * state.round_us
    useful = useful_degrees(state, r)
    costs = [(k * t * r.remaining_steps, k) for k, t in useful.items()
             if steps_possible(state, r, t, first, None, useful.values()) >= r.remaining_steps]
    return min(costs) if costs else None


def wide(rm: RoundModel, rid: str) -> bool:
    """Needs at least half the cluster at once to meet its deadline."""
    k = rm.looks[rid].cheapest_degree
    return 2 * k >= rm.state.cluster.gpus


def add_forecast(rm: RoundModel, forecast: Forecast, committed: frozenset[str] = frozenset()) -> dict[str, int]:
    """For each wide request i not in `committed`: work_due[due_i] + F_i keep_i <= capacity(due_i),
    F_i = GPU-ms of the forecast arrivals due by due_i that cost less than i's remaining work.
    Returns {i: F_i} (also kept in rm.extra_need, so that warm starts respect it)."""
    st, m = rm.state, rm.model
    need: dict[str, int] = {}
    gated = [r for r in st.requests if r.id in rm.keep and m.ub[rm.keep[r.id]] > 0 and r.id not in committed
             and wide(rm, r.id)]
    ahead = forecast.arrivals(st) if gated else []  # (most rounds gate no request: no forecast to compute)
    if not ahead:
        return need
    acc_of = {u: acc for acc, group, _ in rm.running for u in group}
    for r in gated:
        due = st.due_us(r)
        mine = rm.joint_us(r.id) * r.remaining_steps
        f_ms = sum(c for d, c in ahead if d <= due and c < mine) // 1000
        if f_ms <= 0:
            continue
        acc = acc_of[rm.left[r.id]]
        m.add({acc: 1, rm.keep[r.id]: f_ms}, ub=min(joint_cap_ms(st, due), m.ub[acc]))
        need[r.id] = f_ms
    rm.extra_need = need
    return need
