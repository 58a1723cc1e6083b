"""xDiT-style serving: N/K fixed groups of K GPUs, each request at degree K, first come first served.

A request bound to a group stays there until it finishes (no preemption, no migration); a group
that frees up inside a round starts the next request in arrival order straight away.
"""

from __future__ import annotations

import time

from ..errors import InputError
from ..plan import PlanStatus, RoundPlan, make_plan
from ..state import RoundState


class FixedSP:
    def __init__(self, degree: int):
        self.degree = degree
        self.name = f"fixed-sp-{degree}"
        self.bound: dict[str, tuple[int, ...]] = {}  # request -> its group

    def plan(self, state: RoundState) -> RoundPlan:
        t0 = time.perf_counter()
        k = self.degree
        groups = state.sets.get(k) if k in state.degrees else None
        if not groups:
            raise InputError("policy", self.name, f"degree {k} is not usable on this cluster/profile "
                             f"(degrees {list(state.degrees)})")
        pending = {r.id: r for r in state.requests}
        self.bound = {rid: g for rid, g in self.bound.items() if rid in pending}
        queue = sorted((r for r in state.requests if r.id not in self.bound), key=lambda r: (r.arrival_us, r.id))
        for r in queue:
            need = state.step_us(r, k) + max(state.aux_us(r, 1), state.decode_us(r))  # its worst one-step task
            if need > state.round_us:
                raise InputError("policy", self.name, f"request {r.id}: one step with its encode / VAE decode at "
                                 f"degree {k} takes {need / 1e3:.1f} ms, longer than the round")
        decisions = []
        qi = 0
        for g in groups:
            clock = 0
            current = next((rid for rid, gg in self.bound.items() if gg == g), None)
            while True:
                if current is None:
                    if qi >= len(queue):
                        break
                    current = queue[qi].id
                    qi += 1
                    self.bound[current] = g
                r = pending[current]
                n = state.fit_steps(r, k, state.round_us - clock)
                if n <= 0:
                    break
                decisions.append((current, g, n))
                clock += n * state.step_us(r, k) + state.aux_us(r, n)
                if n < r.remaining_steps:
                    break
                current = None  # finished inside the round: take the next in line
        return make_plan(state, decisions, backend=self.name, status=PlanStatus.HEURISTIC, keep_order=True,
                         solve_ms=(time.perf_counter() - t0) * 1e3)
