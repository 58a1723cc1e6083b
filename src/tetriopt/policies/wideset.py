"""The price of the kept set of wide requests (`cpsat[wide_set=1]`, docs/solver.md section 4).

The convex price values each kept 2,048 px request's future at what it needs alone (7 steps at
degree 4 over two rounds: cheap), not at the blocks it will share with the other kept wide
requests. Where several of them reach their last rounds together they need more block-rounds
than the blocks hold, and the model drops them together a round or two later (helper EB's
diagnosis at 32 / 8, 16 / 8 and 64 / 32 s2).

So, for each coming horizon of h rounds (t_h = the round's end + h rounds), an EDF demand test
in GPU-ms over the set:

    sum over kept wide i of  unit_i * v_i(h)            (v_i(h) = ceil((u_i - A_i(h)) / s_i):
                                                         its steps that cannot wait past t_h, in
                                                         whole half-block-rounds, A_i(h) being what
                                                         it can still run after t_h at its fastest
                                                         degree; unit_i the GPU-ms of one)
  + sum over other kept j due by t_h of  cost_j * u_j   (their remaining work, joint-test cost)
  + the forecast arrivals that are not wide, due by t_h (recent arrivals replayed, horizon.Forecast)
  <= GPUs x h rounds  +  z

with one overflow z >= 0 over all horizons, priced in the objective at `price` keep weights per
whole-request's block-rounds (a 2,048 px request's fresh steps at its fastest degree): an
overflow of one wide request's block-rounds costs about the request it will lose. With
`committed` (MipPolicy's `wide_set_sunk`), a wide request kept in the previous round counts with
what it leaves after this round's steps whether it is kept or not (its block-rounds are sunk: the
price decides admissions, and how fast the kept ones run now, not which kept ones to drop mid-way;
horizon.py's forecast gate has the same rule). Soft, unlike
the block-round rows of `formulation.add_blocks` (hard, wide requests only, -3 / -4 over the
grid): the model may still keep a request that overflows a little, and it chooses which of the
set to keep by what each adds to the overflow.

Off: on seeds 3-4 at 16-64 GPUs (500 ms) -3 over 12 workloads, and its variants (`wide_set_sunk`,
`wide_set_forecast=0`, `wide_set_tier`: MipPolicy) no better (docs/solver.md section 4).
"""

from __future__ import annotations

from ..lookahead import steps_possible
from ..state import RequestState, RoundState
from .burst import wide
from .formulation import RoundModel, _forced_var, _kept_later, gpu_ms, joint_cap_ms


def add_wide_set(rm: RoundModel, ahead: list[tuple[int, int]] = (), price: float = 1.0,
                 committed: frozenset[str] = frozenset(), deadline: float | None = None,
                 below_keep: bool = False) -> int | None:
    """The set's overflow variable z and its rows (module doc); `ahead`: (due us, least GPU-us) of
    the forecast arrivals that are not wide. A wide request in `committed` (kept in the previous
    round) counts what it leaves after this round's steps whether kept or not: giving it up does
    not lower the overflow (re-testing kept requests every round drops them mid-way, horizon.py),
    running it faster now does. `below_keep`: the whole overflow costs less than half a keep weight,
    so it never outweighs a kept request: among plans keeping as many it prefers the set and the
    pace with the least overflow. None where no kept wide request can be short of blocks.
    OutOfTime past `deadline` (perf_counter seconds)."""
    st, m = rm.state, rm.model
    b = st.widest
    if not b:
        return None
    R = st.round_us
    by_h: dict[int, dict[int, int]] = {}
    others: list[tuple[int, int, int]] = []  # (due us, u var, GPU-ms per step)
    fresh = 0  # GPU-ms of the largest wide request's whole block-rounds (the price's unit)
    derived = []  # (v, {var: coef} of what it leaves, c, d): v = max(0, ceil((left - c) / d))
    for r, o, top in _kept_later(rm, deadline):
        if o.fastest != b:  # not wide: its fastest degree is not the widest block (as add_blocks tests)
            others.append((st.due_us(r), rm.left[r.id], gpu_ms(rm.joint_us(r.id))))
            continue
        half = b // 2 if b // 2 in o.step else b  # the finest block share that keeps the block's pace
        s_u = R // o.step[half]
        if s_u <= 0:
            continue
        unit = half * gpu_ms(R)
        fresh = max(fresh, -(-r.remaining_steps // (R // o.step[b])) * b * gpu_ms(R))
        rounds = -(-(r.deadline_us - st.end_us) // R)
        sunk = r.id in committed
        # what it leaves: u (0 when given up), or for a committed one its steps less this round's
        steps = {s: 1 for _, _, _, s in rm.cand.get(r.id, ())}
        most = r.remaining_steps if sunk else top
        made: dict[int, int] = {}
        for h in range(1, rounds + 1):
            t = st.end_us + h * R
            after = steps_possible(st, r, o.step[b], t, True, o.step.values()) if t < r.deadline_us else 0
            if after >= most:
                continue
            v = made.get(after)
            if v is None:
                ub = -(-(most - after) // s_u)
                if sunk:
                    v = m.var(f"wide_set[{r.id},{h}]", 0, ub)
                    m.add({v: s_u, **steps}, lb=r.remaining_steps - after)  # s_u v >= rem - steps - after
                    derived.append((v, {s: -1 for s in steps}, after - r.remaining_steps, s_u))
                else:
                    v = _forced_var(rm, f"wide_set[{r.id},{h}]", r.id, after, ub, s_u)
                made[after] = v
            by_h.setdefault(h, {})[v] = unit
    if not by_h:
        return None
    rows, excess = [], []  # excess: the most each kept row can overflow (z's upper bound)
    for h, terms in sorted(by_h.items()):
        t = st.end_us + h * R
        row = dict(terms)
        for due, u, cost in others:
            if due <= t:
                row[u] = row.get(u, 0) + cost
        load = sum(c for d, c in ahead if d <= t) // 1000
        cap = joint_cap_ms(st, t) - load
        most = sum(c * m.ub[v] for v, c in row.items())
        if most > cap:  # (rows that can never overflow are left out)
            rows.append((row, cap))
            excess.append(most - cap)
    if not rows:
        return None
    z = m.var("wide_set_over", 0, max(excess))
    for row, cap in rows:
        m.add({**row, z: -1}, ub=cap)
    rm.over.append((z, rows, derived))
    if below_keep:
        m.objective[z] = -max(1, rm.weights.keep // (2 * max(1, m.ub[z])))
    else:
        m.objective[z] = -max(1, int(price * rm.weights.keep / max(1, fresh)))
    return z


def not_wide(state: RoundState, r: RequestState) -> bool:
    """A forecast arrival the set's rows count as load (horizon.Forecast.arrivals' `only`)."""
    return wide(state, r) is None
