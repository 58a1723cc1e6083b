"""RSSP: resolution-specific static sequence parallelism (the paper's "oracle static" baseline).

Every resolution always runs at one SP degree (a mapping such as 256->1, 512->1, 1024->2,
2048->8). Requests are served first come first served on any free aligned GPU set of their
degree, non-preemptively: once started, a request keeps its set until it finishes (sticky, like
fixed-sp-K, no migration, no change of degree). A set that frees up inside a round starts the
next request straight away.

Queueing: arrival order with one reservation (EASY-style backfilling). The oldest request that
cannot start reserves the set of its degree that frees first; younger requests may start on
other GPUs but not on the reserved ones, so wide (SP8) requests are not starved by a stream of
small ones, and small ones are not blocked behind a wide one when GPUs are idle elsewhere.

The default mapping without a workload (`make_policy("rssp")`) is the profile's "doubling rule":
per resolution, keep doubling the degree while one step gets at least 25% faster. The paper's
baseline instead picks the mapping with hindsight on the workload; `bench.oracle_mapping` does
that by coordinate descent on simulated SLO attainment (`tetriopt bench` uses it for "rssp").
An explicit mapping is given as `rssp:256=1,512=1,1024=2,2048=8` (keys: square size in pixels;
a request maps to the key nearest in token count).
"""

from __future__ import annotations

import math
import time
from typing import Mapping

from ..errors import InputError
from ..plan import PlanStatus, RoundPlan, make_plan
from ..state import RequestState, RoundState

PAPER_FLUX_H100 = {256: 1, 512: 1, 1024: 2, 2048: 8}


def parse_mapping(text: str) -> dict[int, int]:
    """'256=1,512=1,1024=2,2048=8' -> {256: 1, ...}."""
    try:
        out = {int(a): int(b) for a, b in (p.split("=") for p in text.split(",") if p.strip())}
    except ValueError:
        raise InputError("policy", f"rssp:{text}", "mapping must be SIZE=DEGREE,... e.g. rssp:256=1,1024=2") from None
    if not out:
        raise InputError("policy", f"rssp:{text}", "empty mapping")
    for s, d in out.items():
        if s <= 0 or d <= 0 or d & (d - 1):
            raise InputError("policy", f"rssp:{text}", f"size {s} -> degree {d}: sizes positive, degrees powers of two")
    return out


def mapping_name(mapping: Mapping[int, int]) -> str:
    return "rssp:" + ",".join(f"{s}={d}" for s, d in sorted(mapping.items()))


def doubling_rule(profile, degrees, round_us: int) -> dict[int, int]:
    """Per profiled resolution: double the degree while one step gets >= 25% faster."""
    out = {}
    for p in profile.points:
        size = int(round(math.sqrt(p.tokens * profile.pixels_per_token)))
        usable = [k for k in sorted(degrees) if profile.step_us(p.width, p.height, k) <= round_us]
        if not usable:
            usable = [min(degrees, key=lambda k: profile.step_us(p.width, p.height, k))]
        k = usable[0]
        for k2 in usable[1:]:
            if profile.step_us(p.width, p.height, k2) <= 0.75 * profile.step_us(p.width, p.height, k):
                k = k2
            else:
                break
        out[size] = k
    return out


class RSSP:
    def __init__(self, mapping: Mapping[int, int] | None = None, name: str | None = None):
        self.mapping = dict(mapping) if mapping else None
        self.name = name or (mapping_name(self.mapping) if self.mapping else "rssp")
        self.bound: dict[str, tuple[int, ...]] = {}  # request -> its set (sticky until done)
        self._degree_cache: dict[tuple[int, int], int] = {}

    def degree(self, state: RoundState, r: RequestState) -> int:
        key = (r.width, r.height)
        if key in self._degree_cache:
            return self._degree_cache[key]
        if self.mapping is None:
            self.mapping = doubling_rule(state.profile, state.degrees, state.round_us)
        t = r.width * r.height
        size = min(self.mapping, key=lambda s: (abs(math.log(s * s / t)), s))
        k = self.mapping[size]
        fits = [d for d in state.degrees if state.sets.get(d) and state.step_us(r, d) + max(state.aux_us(r, 1), state.decode_us(r)) <= state.round_us]
        if not fits:
            raise InputError("policy", self.name, f"request {r.id}: no degree runs one step within a round")
        if k not in fits:  # mapped degree unusable here: the nearest usable one (smaller first)
            k = min(fits, key=lambda d: (abs(math.log2(d / k)), d))
        self._degree_cache[key] = k
        return k

    def plan(self, state: RoundState) -> RoundPlan:
        t0 = time.perf_counter()
        R = state.round_us
        pending = {r.id: r for r in state.requests}
        self.bound = {rid: g for rid, g in self.bound.items() if rid in pending}
        load = [0] * state.cluster.gpus
        busy_until = [0] * state.cluster.gpus  # estimated time (from now) each GPU frees up
        decisions = []
        # running requests continue from the round start on their own set
        for rid, g in sorted(self.bound.items(), key=lambda x: (pending[x[0]].arrival_us, x[0])):
            r = pending[rid]
            step = state.step_us(r, len(g))
            n = state.max_steps(r, len(g))
            decisions.append((rid, g, n))
            for x in g:
                load[x] = n * step + state.aux_us(r, n)
                busy_until[x] = r.remaining_steps * step
        reserved: set[int] = set()
        queue = sorted((r for r in state.requests if r.id not in self.bound), key=lambda r: (r.arrival_us, r.id))
        holders = {x: rid for rid, g in self.bound.items() for x in g}
        for r in queue:
            k = self.degree(state, r)
            step = state.step_us(r, k)
            best = None
            for g in state.sets[k]:
                if reserved.intersection(g) or any(x in holders for x in g):
                    continue
                start = max(load[x] for x in g)
                n = state.fit_steps(r, k, R - start)
                if n <= 0:
                    continue
                # earliest start, then the set inside the busiest larger block (less fragmentation)
                key = (start, -sum(1 for x in range(state.cluster.gpus) if load[x] > 0 and x not in g), g)
                if best is None or key < best[0]:
                    best = (key, g, start, n)
            if best is None:
                if not reserved:  # the oldest blocked request reserves the set that frees first
                    g = min(state.sets[k], key=lambda g: (max(busy_until[x] for x in g), g))
                    reserved.update(g)
                continue
            _, g, start, n = best
            decisions.append((r.id, g, n))
            for x in g:
                load[x] = start + n * step + state.aux_us(r, n)
                busy_until[x] = start + r.remaining_steps * step
            if n < r.remaining_steps:
                self.bound[r.id] = g
                for x in g:
                    holders[x] = r.id
        return make_plan(state, decisions, backend=self.name, status=PlanStatus.HEURISTIC, keep_order=True,
                         solve_ms=(time.perf_counter() - t0) * 1e3)
