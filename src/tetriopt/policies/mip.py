"""The round MIP as a policy: build the shared model, warm-start it from the fast heuristics,
solve on CP-SAT or PuLP within the time limit, and fall back to the best heuristic plan."""

from __future__ import annotations

import time

from dataclasses import replace

from ..lookahead import outlook
from ..plan import Decision, decisions_of, make_plan
from ..state import RoundPlan, RoundState
from .backends import BACKENDS
from .formulation import RoundModel, build
from .greedy import fill_leftover, greedy_decisions
from .tetriserve import TetriServe


def complete(rm: RoundModel, decisions: list[Decision], kept: list[str] | tuple[str, ...]) -> list[int] | None:
    """A full model solution from a heuristic's decisions (None if the model cannot express them).

    Keep flags start from the heuristic's own and are dropped, latest deadline first, until the
    individual and joint tests hold.
    """
    m = rm.model
    sol = [0] * len(m.names)
    want = {rid: (g, n) for rid, g, n in decisions}
    for rid, (g, n) in want.items():
        hit = [(x, s) for gg, _, x, s in rm.cand.get(rid, []) if gg == g]
        if not hit or n > m.ub[hit[0][1]]:
            return None
        sol[hit[0][0]], sol[hit[0][1]] = 1, n
    by_id = {r.id: r for r in rm.state.requests}
    order = sorted(by_id, key=lambda i: (by_id[i].deadline_us, i))
    keep = {i: i in set(kept) and m.ub[rm.keep[i]] == 1 for i in order}

    def fill() -> None:
        for i in order:
            r = by_id[i]
            n = want.get(i, (None, 0))[1]
            sol[rm.done[i]] = int(n == r.remaining_steps)
            sol[rm.keep[i]] = int(keep[i])
            sol[rm.left[i]] = (r.remaining_steps - n) if keep[i] else 0

    fill()
    for i in reversed(order):
        if m.feasible(sol):
            return sol
        if keep[i]:
            keep[i] = False
            fill()
    return sol if m.feasible(sol) else None


class MipPolicy:
    def __init__(self, backend: str = "cpsat", time_limit_ms: float = 500.0, seed: int = 0,
                 workers: int = 1, hints: bool = True, core_per_gpu: int = 4, min_core: int = 32):
        self.backend = backend
        self.name = backend
        self.time_limit_ms = time_limit_ms
        self.seed = seed
        self.workers = workers
        self.hints = hints
        self.core_per_gpu = core_per_gpu
        self.min_core = min_core
        self._tetriserve = TetriServe()
        if backend == "cpsat":  # pay the solver's import now, not inside the first round's limit
            from ortools.sat.python import cp_model  # noqa: F401

    def core(self, state: RoundState) -> tuple[RoundState, list]:
        """The requests the MIP decides: all of them, or under overload the `max_core` most urgent
        that can still make it (then the oldest of the rest); the others fill leftover time after."""
        cap = max(self.min_core, self.core_per_gpu * state.cluster.gpus)
        if len(state.requests) <= cap:
            return state, []
        ranked = sorted(state.requests, key=lambda r: (not outlook(state, r).alive,
                                                       r.deadline_us if outlook(state, r).alive else r.arrival_us, r.id))
        return replace(state, requests=tuple(ranked[:cap])), ranked[cap:]

    def plan(self, state: RoundState) -> RoundPlan:
        t0 = time.perf_counter()
        if not state.requests:
            return make_plan(state, [], backend=self.backend, status="OPTIMAL", objective=0.0, bound=0.0)
        full = state
        state, outside = self.core(state)
        plan = self._plan(state, t0)
        if not outside:
            return plan
        decisions = fill_leftover(full, decisions_of(plan), outside)
        return make_plan(full, decisions, backend=plan.backend, status="FEASIBLE" if plan.status == "OPTIMAL" else
                         plan.status, objective=plan.objective, bound=None, kept=plan.kept,
                         solve_ms=(time.perf_counter() - t0) * 1e3,
                         note=f"MIP over the {len(state.requests)} most urgent of {len(full.requests)} pending")

    def _plan(self, state: RoundState, t0: float) -> RoundPlan:
        rm = build(state)
        heuristics = []
        g_dec, g_kept = greedy_decisions(state)
        heuristics.append(("greedy", g_dec, g_kept))
        if time.perf_counter() - t0 < 0.2 * self.time_limit_ms / 1e3:  # second hint only when cheap enough
            ts = self._tetriserve.plan(state)
            heuristics.append(("tetriserve", [(a.request, a.gpus, a.steps) for a in ts.assignments], ts.kept or ()))
        best = None
        for name, dec, kept in heuristics:
            sol = complete(rm, dec, kept)
            if sol is not None and (best is None or rm.model.value(sol) > best[1]):
                best = (name, rm.model.value(sol), sol, dec, kept)
        left_s = self.time_limit_ms / 1e3 - (time.perf_counter() - t0)
        outcome = None
        if left_s > 0:
            try:
                outcome = BACKENDS[self.backend](rm.model, left_s, seed=self.seed, workers=self.workers,
                                                 hint=best[2] if (best and self.hints) else None)
            except Exception:  # a solver error must never lose the round: fall back below
                outcome = None
        if outcome is None or outcome.solution is None or (best and rm.model.value(outcome.solution) < best[1]):
            if best is None:  # nothing expressible in the model: plain greedy, still valid
                best = ("greedy", None, None, g_dec, g_kept)
            name, val, _, dec, kept = best
            note = "time limit before a solution" if outcome is None or outcome.solution is None else "heuristic better"
            return make_plan(state, dec, backend=name, status="FALLBACK", objective=val,
                             bound=outcome.bound if outcome else None, kept=tuple(kept),
                             solve_ms=(time.perf_counter() - t0) * 1e3, note=note)
        sol = outcome.solution
        kept = tuple(i for i, v in rm.keep.items() if sol[v])
        status, bound, note = outcome.status, outcome.bound, ""
        if rm.restricted:  # optimal among the capped candidate sets only: no proof for the full round
            status, bound, note = "FEASIBLE", None, "candidate sets capped (large round)"
        return make_plan(state, rm.decisions(sol), backend=self.backend, status=status,
                         objective=outcome.objective, bound=bound, kept=kept, note=note,
                         solve_ms=(time.perf_counter() - t0) * 1e3)
