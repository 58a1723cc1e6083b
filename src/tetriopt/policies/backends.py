"""Translations of the shared LinearModel to OR-Tools CP-SAT and to PuLP/CBC."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..plan import PlanStatus
from .formulation import LinearModel


@dataclass(frozen=True)
class SolveOutcome:
    solution: list[int] | None
    status: str  # PlanStatus.OPTIMAL / FEASIBLE when a solution came back, else the solver's word
    objective: float | None
    bound: float | None
    setup_s: float = 0.0  # the translation into the solver's model (what a caller's cost estimate needs)


def solve_cpsat(m: LinearModel, time_limit_s: float, seed: int = 0, workers: int = 1,
                hint: list[int] | None = None, stall_s: float | None = None, min_gain: float = 0.0,
                **params) -> SolveOutcome:
    """Time limit covers the translation too: what is left after it goes to the search. With
    `stall_s`, the search first runs for that much deterministic time (CP-SAT's own clock,
    about seconds); if it neither proves optimality nor improves on the hint by `min_gain`
    there, its incumbent answers, else the search restarts from it for the rest of the limit. Small rounds
    then end in a few ms instead of at the limit (their hint is usually optimal or nearly, but
    proving the lower objective tiers takes long), and that early stop is reproducible."""
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    model = cp_model.CpModel()
    # written straight into the model's proto (variable i of the LinearModel is proto variable i):
    # twice as fast as building CP-SAT expressions, and translation is most of a large round's set-up
    proto = model.proto
    for lo, hi in zip(m.lb, m.ub):
        proto.variables.add().domain.extend((lo, hi))
    for j, (co, lo, hi) in enumerate(m.cons):
        if j % 256 == 255 and time.perf_counter() - t0 > time_limit_s:
            return SolveOutcome(None, "NO_SOLUTION", None, None, time.perf_counter() - t0)  # out of time translating
        lin = proto.constraints.add().linear
        lin.vars.extend(co.keys())
        lin.coeffs.extend(co.values())
        lin.domain.extend((int(lo) if math.isfinite(lo) else cp_model.INT_MIN,
                           int(hi) if math.isfinite(hi) else cp_model.INT_MAX))
    obj = proto.objective  # maximise: CP-SAT minimises the negation, scaled back by -1
    obj.vars.extend(m.objective.keys())
    obj.coeffs.extend(-c for c in m.objective.values())
    obj.scaling_factor = -1
    n = len(m.names)
    if hint is not None:
        proto.solution_hint.vars.extend(range(n))
        proto.solution_hint.values.extend(hint)
    setup = time.perf_counter() - t0
    left = time_limit_s - setup
    if left <= 0:
        return SolveOutcome(None, "NO_SOLUTION", None, None, setup)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = left
    p.random_seed = seed
    p.num_workers = workers
    p.log_search_progress = False
    for k, v in params.items():
        setattr(p, k, v)
    if stall_s is not None:
        p.max_deterministic_time = min(p.max_deterministic_time, stall_s)
    code = solver.solve(model)
    if stall_s is not None and code == cp_model.FEASIBLE:
        # the first slice ran on CP-SAT's deterministic clock; only if it improved on the hint is
        # the rest of the limit worth spending (a stall is then decided the same way every run)
        improved = hint is None or solver.objective_value - m.value(hint) >= min_gain
        left = time_limit_s - (time.perf_counter() - t0)
        if improved and left > 0.002:
            first = list(solver.response_proto.solution)[:n]
            proto.clear_solution_hint()
            proto.solution_hint.vars.extend(range(n))
            proto.solution_hint.values.extend(first)
            p.max_time_in_seconds = left
            p.max_deterministic_time = params.get("max_deterministic_time", float("inf"))
            code = solver.solve(model)
    name = {cp_model.OPTIMAL: PlanStatus.OPTIMAL, cp_model.FEASIBLE: PlanStatus.FEASIBLE}.get(code)
    if name is None:
        return SolveOutcome(None, "NO_SOLUTION" if code == cp_model.UNKNOWN else solver.status_name(code), None, None,
                            setup)
    sol = list(solver.response_proto.solution)[:n]
    return SolveOutcome(sol, name, float(solver.objective_value), float(solver.best_objective_bound), setup)


CBC_START_S = 0.03  # CBC runs as a process fed an MPS file: its start and read-back, measured
CBC_SHARE = 0.7  # CBC checks its clock between nodes only: it overshoots its limit by up to ~25%


def solve_pulp(m: LinearModel, time_limit_s: float, seed: int = 0, workers: int = 1,
               hint: list[int] | None = None, stall_s: float | None = None, min_gain: float = 0.0,
               **_cpsat_params) -> SolveOutcome:
    """Time limit covers the translation, CBC's process start and the read-back: CBC's own
    limit is CBC_SHARE of what is left after the translation less CBC_START_S (none is started
    when nothing is left)."""
    import pulp

    t0 = time.perf_counter()
    prob = pulp.LpProblem("round", pulp.LpMaximize)
    xs = [pulp.LpVariable(f"v{i}", lowBound=lo, upBound=hi, cat="Integer")
          for i, (lo, hi) in enumerate(zip(m.lb, m.ub))]
    prob += pulp.lpSum(c * xs[v] for v, c in m.objective.items())
    for i, (co, lo, hi) in enumerate(m.cons):
        expr = pulp.lpSum(c * xs[v] for v, c in co.items())
        if math.isfinite(lo) and math.isfinite(hi) and lo == hi:
            prob += (expr == lo, f"c{i}")
            continue
        if math.isfinite(lo):
            prob += (expr >= lo, f"c{i}l")
        if math.isfinite(hi):
            prob += (expr <= hi, f"c{i}u")
    warm = hint is not None
    if warm:
        for x, h in zip(xs, hint):
            x.setInitialValue(h)
    left = CBC_SHARE * (time_limit_s - (time.perf_counter() - t0)) - CBC_START_S
    if left < 0.01:
        return SolveOutcome(None, "NO_SOLUTION", None, None)
    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=left, threads=workers,
                               warmStart=warm, options=[f"randomSeed {seed + 1}", f"randomCbcSeed {seed + 1}"])
    try:
        prob.solve(solver)
    except pulp.PulpSolverError:
        return SolveOutcome(None, "ERROR", None, None)
    status = pulp.LpStatus.get(prob.status, "Undefined")
    sol_status = getattr(prob, "sol_status", None)
    if status != "Optimal" and sol_status not in (pulp.LpSolutionIntegerFeasible,):
        return SolveOutcome(None, "NO_SOLUTION", None, None)
    sol = [int(round(x.value() or 0)) for x in xs]
    if not m.feasible(sol):
        return SolveOutcome(None, "NO_SOLUTION", None, None)
    optimal = status == "Optimal" and sol_status == pulp.LpSolutionOptimal
    val = float(m.value(sol))
    return SolveOutcome(sol, PlanStatus.OPTIMAL if optimal else PlanStatus.FEASIBLE, val, val if optimal else None)


BACKENDS = {"cpsat": solve_cpsat, "pulp": solve_pulp}
