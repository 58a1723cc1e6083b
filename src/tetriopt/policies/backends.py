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


def solve_cpsat(m: LinearModel, time_limit_s: float, seed: int = 0, workers: int = 1,
                hint: list[int] | None = None, **params) -> SolveOutcome:
    """Time limit covers the translation too: what is left after it goes to the search."""
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    model = cp_model.CpModel()
    xs = [model.new_int_var(lo, hi, n) for n, lo, hi in zip(m.names, m.lb, m.ub)]
    ws = cp_model.LinearExpr.weighted_sum
    for co, lo, hi in m.cons:
        model.add_linear_constraint(ws([xs[v] for v in co], list(co.values())),
                                    int(lo) if math.isfinite(lo) else cp_model.INT_MIN,
                                    int(hi) if math.isfinite(hi) else cp_model.INT_MAX)
    model.maximize(ws([xs[v] for v in m.objective], list(m.objective.values())))
    if hint is not None:
        for x, h in zip(xs, hint):
            model.add_hint(x, h)
    left = time_limit_s - (time.perf_counter() - t0)
    if left <= 0:
        return SolveOutcome(None, "NO_SOLUTION", None, None)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = left
    p.random_seed = seed
    p.num_workers = workers
    p.log_search_progress = False
    for k, v in params.items():
        setattr(p, k, v)
    code = solver.solve(model)
    name = {cp_model.OPTIMAL: PlanStatus.OPTIMAL, cp_model.FEASIBLE: PlanStatus.FEASIBLE}.get(code)
    if name is None:
        return SolveOutcome(None, "NO_SOLUTION" if code == cp_model.UNKNOWN else solver.status_name(code), None, None)
    sol = [int(solver.value(x)) for x in xs]
    return SolveOutcome(sol, name, float(solver.objective_value), float(solver.best_objective_bound))


def solve_pulp(m: LinearModel, time_limit_s: float, seed: int = 0, workers: int = 1,
               hint: list[int] | None = None, **_cpsat_params) -> SolveOutcome:
    import pulp

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
    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=max(time_limit_s, 0.01), threads=workers,
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
