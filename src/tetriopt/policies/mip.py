"""The round MIP as a policy: build the shared model, warm-start it from the fast heuristics,
solve on CP-SAT or PuLP within the time limit, and fall back to the best heuristic plan."""

from __future__ import annotations

import time

from ..lookahead import outlook
from ..immediate import reserve_idle
from ..plan import Decision, PlanStatus, RoundPlan, decisions_of, make_plan
from ..state import RoundState
from ..units import ms_to_s
from .backends import BACKENDS
from .formulation import build, complete
from .greedy import fill_leftover, greedy_decisions
from .tetriserve import TetriServe

LARGE_MODEL = 2000  # variables
SHORT_S = 0.1  # seconds of search left
# TetriServe's plan joins the warm starts only while the greedy one took less than this part of the limit
TETRISERVE_WARM_FRACTION = 0.2
# warm starts that took more than this part of the limit leave too little for the model: greedy answers
MODEL_FRACTION = 0.5


class MipPolicy:
    def __init__(self, backend: str = "cpsat", time_limit_ms: float = 500.0, seed: int = 0,
                 workers: int = 1, hints: bool = True, core_per_gpu: int = 4, min_core: int = 32,
                 joint_capacity: float = 1.0, deterministic: bool = False, batching: bool = False,
                 immediate_start: bool = False):
        self.backend = backend
        self.name = backend
        self.limit_s = ms_to_s(time_limit_ms)  # the time limit, kept once, in seconds (what solvers take)
        self.seed = seed
        self.workers = workers
        self.hints = hints
        self.core_per_gpu = core_per_gpu
        self.min_core = min_core
        self.joint_capacity = joint_capacity
        self.batching = batching  # batch options in the model, and the batching greedy as a warm start
        # the executor starts arrivals at once on idle GPUs: leave them idle rather than fill them with
        # work already given up (immediate.reserve_idle)
        self.immediate_start = immediate_start
        # deterministic: CP-SAT stops on its deterministic clock and no decision looks at the wall
        # clock, so reruns give the same plans even when the limit binds (wall time may overrun)
        self.deterministic = deterministic
        self._tetriserve = TetriServe()
        self._last: dict[str, tuple[int, ...]] = {}  # request -> GPUs in the previous round's plan
        self._last_kept: tuple[str, ...] = ()
        if backend == "cpsat":  # pay the solver's import now, not inside the first round's limit
            from ortools.sat.python import cp_model  # noqa: F401

    def core(self, state: RoundState) -> set[str] | None:
        """Requests that get placement variables: all, or under a backlog the most urgent ones
        that can still make it, then the oldest of the rest (None: all)."""
        cap = max(self.min_core, self.core_per_gpu * state.cluster.gpus)
        if len(state.requests) <= cap:
            return None
        alive = {r.id: outlook(state, r).alive for r in state.requests}
        ranked = sorted(state.requests, key=lambda r: (not alive[r.id],
                                                       r.deadline_us if alive[r.id] else r.arrival_us, r.id))
        return {r.id for r in ranked[:cap]}

    def plan(self, state: RoundState) -> RoundPlan:
        plan = self._plan_round(state)
        return reserve_idle(state, plan) if self.immediate_start else plan

    def _plan_round(self, state: RoundState) -> RoundPlan:
        t0 = time.perf_counter()
        if not state.requests:
            return make_plan(state, [], backend=self.backend, status=PlanStatus.OPTIMAL, objective=0.0, bound=0.0)
        placed = self.core(state)
        plan = self._plan(state, t0, placed)
        self._last = {i: a.gpus for a in plan.assignments for i in a.requests}
        self._last_kept = plan.kept or ()
        if placed is None:
            return plan
        kept = set(plan.kept or ())
        # a heuristic plan that answered for the model may already hold requests outside `placed`
        held = {a.request for a in plan.assignments}
        outside = sorted((r for r in state.requests if r.id not in placed and r.id not in held),
                         key=lambda r: (r.id not in kept, r.deadline_us if r.id in kept else r.arrival_us, r.id))
        decisions = fill_leftover(state, decisions_of(plan), outside, ordered=True)
        return make_plan(state, decisions, backend=plan.backend, status=plan.status, objective=plan.objective,
                         bound=plan.bound, kept=plan.kept, solve_ms=(time.perf_counter() - t0) * 1e3,
                         note=plan.note or f"placement for the {len(placed)} most urgent of {len(state.requests)}")

    def _warm_starts(self, state: RoundState, t0: float) -> list[tuple[str, list[Decision], tuple[str, ...]]]:
        """(name, decisions, kept) of the fast plans the MIP starts from and falls back to."""
        g_dec, g_kept = greedy_decisions(state)
        out = [("greedy", g_dec, tuple(g_kept))]
        if self.batching:
            b_dec, b_kept = greedy_decisions(state, batching=True)
            out.append(("greedy-batching", b_dec, tuple(b_kept)))
        if self.deterministic or time.perf_counter() - t0 < TETRISERVE_WARM_FRACTION * self.limit_s:
            ts = self._tetriserve.plan(state)
            out.append(("tetriserve", decisions_of(ts), ts.kept or ()))
        if self._last:  # the previous round's placement, continued
            prev = [(r.id, self._last[r.id], state.max_steps(r, len(self._last[r.id]))) for r in state.requests
                    if r.id in self._last and len(self._last[r.id]) in state.degrees]
            prev = [d for d in prev if d[2] > 0]
            out.append(("previous-round", prev, tuple(i for i in self._last_kept if any(d[0] == i for d in prev))))
        return out

    def _plan(self, state: RoundState, t0: float, placed: set[str] | None) -> RoundPlan:
        heuristics = self._warm_starts(state, t0)
        if not self.deterministic and time.perf_counter() - t0 > MODEL_FRACTION * self.limit_s:
            _, dec, kept = heuristics[0]
            return make_plan(state, dec, backend="greedy", status=PlanStatus.FALLBACK, kept=kept,
                             solve_ms=(time.perf_counter() - t0) * 1e3, note="time limit before the model")
        hinted: dict[str, tuple] = {}
        for _, dec, _ in heuristics:
            for rid, g, _ in dec:
                if isinstance(rid, str):
                    hinted[rid] = hinted.get(rid, ()) + (g,)
        rm = build(state, placed=placed, hinted=hinted, joint_capacity=self.joint_capacity, batching=self.batching)
        best = None
        for name, dec, kept in heuristics:
            sol = complete(rm, dec, kept, self.joint_capacity)
            if sol is not None and (best is None or rm.model.value(sol) > best[1]):
                best = (name, rm.model.value(sol), sol, dec, kept)
        left_s = self.limit_s - (time.perf_counter() - t0)
        if self.deterministic:
            left_s = self.limit_s
        outcome, error = None, ""
        if left_s > 0:
            try:
                params = {}
                if self.deterministic and self.backend == "cpsat":
                    params["max_deterministic_time"] = left_s
                    left_s = 60.0 + 20 * left_s  # the wall clock only as a safety net
                if self.backend == "cpsat" and (len(rm.model.names) > LARGE_MODEL or left_s < SHORT_S):
                    # big rounds or short limits: presolve and LP linearisation eat the whole limit
                    # before the first improving move; plain search from the hint does better
                    # (benchmarks/round_solve.py; presolve helps proofs when there is time)
                    params = {"cp_model_presolve": False, "linearization_level": 0}
                outcome = BACKENDS[self.backend](rm.model, left_s, seed=self.seed, workers=self.workers,
                                                 hint=best[2] if (best and self.hints) else None, **params)
            except Exception as e:  # a solver error must never lose the round: fall back below
                outcome, error = None, f"solver error: {type(e).__name__}: {e}"
        if outcome is None or outcome.solution is None or (best and rm.model.value(outcome.solution) < best[1]):
            if best is None:  # nothing expressible in the model: plain greedy, still valid
                name, dec, kept = heuristics[0]
                val = None
            else:  # the keep flags the model allows for this plan
                name, val, sol, dec, _ = best
                kept = tuple(i for i, v in rm.keep.items() if sol[v])
            note = error or ("time limit before a solution" if outcome is None or outcome.solution is None
                             else "heuristic better")
            return make_plan(state, dec, backend=name, status=PlanStatus.FALLBACK, objective=val,
                             bound=outcome.bound if outcome else None, kept=tuple(kept),
                             solve_ms=(time.perf_counter() - t0) * 1e3, note=note)
        sol = outcome.solution
        kept = tuple(i for i, v in rm.keep.items() if sol[v])
        status, bound, note = outcome.status, outcome.bound, ""
        if rm.restricted:  # optimal among the capped candidate sets only: no proof for the full round
            status, bound, note = PlanStatus.FEASIBLE, None, "restricted model (capped sets or unplaced backlog)"
        return make_plan(state, rm.decisions(sol), backend=self.backend, status=status,
                         objective=outcome.objective, bound=bound, kept=kept, note=note,
                         solve_ms=(time.perf_counter() - t0) * 1e3)
