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

import math
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

    def arrivals(self, state: RoundState, only=None) -> list[tuple[int, int]]:
        """(due us, least GPU-us to meet it from its first boundary) of each forecast arrival that
        could meet its deadline alone (`only`: those of them only(state, r) accepts)."""
        shift = self.window_rounds * state.round_us
        out = []
        for a, w, h, steps, slo in self.recent:
            a2 = max(a + shift, state.end_us)
            r = RequestState(id="~", width=w, height=h, remaining_steps=steps, deadline_us=a2 + slo, arrival_us=a2)
            least = _least(state, r) if only is None or only(state, r) else None
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


class Quota:
    """Admission by cost density when the arrivals outrun the cluster (`MipPolicy(quota=True)`).

    Under overload the most deadlines are met by serving the cheapest requests: over a window, a
    cost class (resolution) is served whole while the GPU-time of it and of every cheaper class
    fits in the cluster's, the marginal class in part, costlier ones not at all (a fractional
    knapsack on the arrival rates). The round model's joint test sees only the requests known now,
    so it admits an expensive request into room that the next rounds' cheap arrivals then take,
    and gives it up after GPU-time was spent on it (docs/solver.md 4: at 64 GPUs / 64 pending, 27
    drops of 2048 px requests under way). So each round the number of new admissions (requests
    never kept before) of a class served in part is capped by its share of the window's arrivals
    less its admissions in the window. At light load (the window's demand fits) it is a no-op.
    Off by default: over issue 12's grid net +1 deadline, one point below TetriServe (section 4)."""

    def __init__(self, window_rounds: int = 8, capacity: float = 1.0):
        self.seen = Forecast(window_rounds)
        self.capacity = capacity  # share of the cluster's GPU-time the classes are fitted into
        self.admitted: deque = deque()  # (us first kept, class) within the window
        self.ever: set[str] = set()  # requests kept at some round (their later keeps are free)
        self.cost: dict[tuple, int | None] = {}  # a seen arrival's least GPU-us (computed once)

    def observe(self, state: RoundState) -> None:
        self.seen.observe(state)
        horizon = state.now_us - self.seen.window_rounds * state.round_us
        while self.admitted and self.admitted[0][0] < horizon:
            self.admitted.popleft()

    def record(self, state: RoundState, kept: tuple[str, ...]) -> None:
        by_id = {r.id: r for r in state.requests}
        for i in kept:
            if i not in self.ever and i in by_id:
                self.ever.add(i)
                self.admitted.append((state.now_us, (by_id[i].width, by_id[i].height)))
        self.ever.intersection_update(by_id)

    def shares(self, state: RoundState) -> dict[tuple[int, int], float]:
        """Admissions allowed in the window per class served in part (absent: no limit)."""
        demand: dict[tuple[int, int], list[int]] = {}
        for seen in self.seen.recent:
            if seen not in self.cost:
                a, w, h, steps, slo = seen
                r = RequestState(id="~", width=w, height=h, remaining_steps=steps, deadline_us=a + slo, arrival_us=a)
                least = _least(state, r)  # its GPU-time with its encode and decode on its set
                self.cost[seen] = None if least is None else least[0] + least[1] * (
                    state.profile.text_encode_us + state.decode_us(r))
            if self.cost[seen] is not None:
                demand.setdefault(seen[1:3], []).append(self.cost[seen])
        for gone in set(self.cost).difference(self.seen.recent):
            del self.cost[gone]
        # over the whole window even before it has filled: a rate read from a round or two of
        # arrivals is noise (two 2048 px arrivals in the first round "overloaded" 64 GPUs)
        left = self.capacity * state.cluster.gpus * self.seen.window_rounds * state.round_us
        if sum(map(sum, demand.values())) <= left:
            return {}
        out = {}
        for key, costs in sorted(demand.items(), key=lambda kv: sum(kv[1]) / len(kv[1])):
            if sum(costs) <= left:
                left -= sum(costs)
                continue
            out[key] = len(costs) * max(0.0, left) / sum(costs)
            left = 0
        return out

    def add(self, rm: RoundModel, committed: frozenset[str] = frozenset()) -> None:
        """Rows sum(keep of the class's new candidates) <= its allowance left (rm.caps)."""
        shares = self.shares(rm.state)
        if not shares:
            return
        used: dict[tuple[int, int], int] = {}
        for _, key in self.admitted:
            used[key] = used.get(key, 0) + 1
        groups: dict[tuple[int, int], list[str]] = {}
        for r in rm.state.requests:
            key = (r.width, r.height)
            if (key in shares and r.id in rm.keep and rm.model.ub[rm.keep[r.id]] > 0
                    and r.id not in self.ever and r.id not in committed):
                groups.setdefault(key, []).append(r.id)
        for key, ids in groups.items():
            allow = max(0, math.ceil(shares[key] - 1e-9) - used.get(key, 0))
            if len(ids) > allow:
                rm.model.add({rm.keep[i]: 1 for i in ids}, ub=allow)
                rm.caps.append((tuple(ids), allow))


def wide(rm: RoundModel, rid: str, blocks: bool = False) -> bool:
    """Needs at least half the cluster at once to meet its deadline; with `blocks`, also where that
    is the cluster's widest block (a 2,048 px request on 8 GPUs of 32 or 64)."""
    k = rm.looks[rid].cheapest_degree
    return 2 * k >= rm.state.cluster.gpus or (blocks and k == rm.state.widest)


def add_forecast(rm: RoundModel, forecast: Forecast, committed: frozenset[str] = frozenset(),
                 only_wide: bool = True, blocks: bool = False) -> dict[str, int]:
    """For each wide request i (`blocks`: wide as `wide` says with it; with `only_wide=False`: every
    request; ablations, docs/solver.md section 4) not in `committed`: work_due[due_i] + F_i keep_i <= capacity(due_i),
    F_i = GPU-ms of the forecast arrivals due by due_i that cost less than i's remaining work.
    Returns {i: F_i} (also kept in rm.extra_need, so that warm starts respect it)."""
    st, m = rm.state, rm.model
    need: dict[str, int] = {}
    gated = [r for r in st.requests if r.id in rm.keep and m.ub[rm.keep[r.id]] > 0 and r.id not in committed
             and not (only_wide and not wide(rm, r.id, blocks))]
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
