"""The round MIP as a policy: build the shared model, warm-start it from the fast heuristics,
solve on CP-SAT or PuLP within the time limit, and fall back to the best heuristic plan."""

from __future__ import annotations

import time

from ..lookahead import outlook
from ..plan import Decision, decisions_of, make_plan
from ..state import RoundPlan, RoundState
from .backends import BACKENDS
from .batching import set_batch
from .formulation import RoundModel, build, gpu_ms, joint_cap_ms, keep_allowed
from .greedy import fill_leftover, greedy_decisions
from .tetriserve import TetriServe


def complete(rm: RoundModel, decisions: list[Decision], kept: list[str] | tuple[str, ...],
             jc: float = 1.0) -> list[int] | None:
    """A full model solution from a heuristic's decisions (None if none is feasible).

    Decisions the model cannot express (a set outside a request's candidates) are left out. Keep
    flags start from the heuristic's own, minus those failing the individual test; where a
    deadline's joint test overflows, the kept request with the most remaining work is given up.
    """
    m = rm.model
    sol = [0] * len(m.names)
    want = {}
    for rid, g, n in decisions:
        if not isinstance(rid, str):  # a batch: expressible only in a model built with batching
            if set_batch(m, rm.batches, sol, rid, g, n):
                want.update({i: (g, n) for i in rid})
            continue
        hit = [(x, s) for gg, _, x, s in rm.cand.get(rid, []) if gg == g]
        if hit and n <= m.ub[hit[0][1]]:
            sol[hit[0][0]], sol[hit[0][1]] = 1, n
            want[rid] = (g, n)
    st = rm.state
    by_id = {r.id: r for r in st.requests}
    kept_in = set(kept)
    keep = {}
    for i, r in by_id.items():
        g, n = want.get(i, ((), 0))
        keep[i] = i in kept_in and keep_allowed(st, r, rm.looks[i], n, n * (st.step_us(r, len(g)) if g else 0))
    # requests due inside the round, in deadline order: their GPUs must get through it in time
    load: dict[int, int] = {}
    for r, _, budget in rm.urgent:
        g, n = want.get(r.id, ((), 0))
        for gpu in g:
            load[gpu] = load.get(gpu, 0) + n * st.step_us(r, len(g))
        if keep[r.id] and any(load[gpu] > budget for gpu in g):
            keep[r.id] = False
    # joint test, earliest deadline first: where a prefix overflows, give up its biggest remaining work
    due = lambda i: by_id[i].deadline_us - st.decode_us(by_id[i])  # noqa: E731
    work = {i: gpu_ms(rm.joint_us(i)) * (by_id[i].remaining_steps - want.get(i, ((), 0))[1])
            for i in by_id}
    prefix: list[str] = []
    total = 0
    for i in sorted((i for i in by_id if keep[i]), key=lambda i: (due(i), i)):
        prefix.append(i)
        total += work[i]
        cap = joint_cap_ms(st, due(i), jc)
        while total > cap:
            j = max(prefix, key=lambda j: (work[j], due(j), j))
            prefix.remove(j)
            total -= work[j]
            keep[j] = False
    for i, r in by_id.items():
        n = want.get(i, ((), 0))[1]
        sol[rm.done[i]] = int(n == r.remaining_steps)
        sol[rm.keep[i]] = int(keep[i])
        sol[rm.left[i]] = (r.remaining_steps - n) if keep[i] else 0
    rm.derive(sol)
    return sol if m.feasible(sol) else None


LARGE_MODEL = 2000  # variables
SHORT_S = 0.1  # seconds of search left


class MipPolicy:
    def __init__(self, backend: str = "cpsat", time_limit_ms: float = 500.0, seed: int = 0,
                 workers: int = 1, hints: bool = True, core_per_gpu: int = 4, min_core: int = 32,
                 joint_capacity: float = 1.0, deterministic: bool = False, batching: bool = False):
        self.backend = backend
        self.name = backend
        self.time_limit_ms = time_limit_ms
        self.seed = seed
        self.workers = workers
        self.hints = hints
        self.core_per_gpu = core_per_gpu
        self.min_core = min_core
        self.joint_capacity = joint_capacity
        self.batching = batching  # batch options in the model, and the batching greedy as a warm start
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
        t0 = time.perf_counter()
        if not state.requests:
            return make_plan(state, [], backend=self.backend, status="OPTIMAL", objective=0.0, bound=0.0)
        placed = self.core(state)
        plan = self._plan(state, t0, placed)
        self._last = {i: a.gpus for a in plan.assignments for i in a.requests}
        self._last_kept = plan.kept or ()
        if placed is None:
            return plan
        kept = set(plan.kept or ())
        outside = sorted((r for r in state.requests if r.id not in placed),
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
        if self.deterministic or time.perf_counter() - t0 < 0.2 * self.time_limit_ms / 1e3:  # when cheap enough
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
        if not self.deterministic and time.perf_counter() - t0 > 0.5 * self.time_limit_ms / 1e3:  # no time left
            _, dec, kept = heuristics[0]
            return make_plan(state, dec, backend="greedy", status="FALLBACK", kept=kept,
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
        left_s = self.time_limit_ms / 1e3 - (time.perf_counter() - t0)
        if self.deterministic:
            left_s = self.time_limit_ms / 1e3
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
            return make_plan(state, dec, backend=name, status="FALLBACK", objective=val,
                             bound=outcome.bound if outcome else None, kept=tuple(kept),
                             solve_ms=(time.perf_counter() - t0) * 1e3, note=note)
        sol = outcome.solution
        kept = tuple(i for i, v in rm.keep.items() if sol[v])
        status, bound, note = outcome.status, outcome.bound, ""
        if rm.restricted:  # optimal among the capped candidate sets only: no proof for the full round
            status, bound, note = "FEASIBLE", None, "restricted model (capped sets or unplaced backlog)"
        return make_plan(state, rm.decisions(sol), backend=self.backend, status=status,
                         objective=outcome.objective, bound=bound, kept=kept, note=note,
                         solve_ms=(time.perf_counter() - t0) * 1e3)
