"""Translations of the shared LinearModel to OR-Tools CP-SAT and to PuLP/CBC."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from ..plan import PlanStatus
from .formulation import LinearModel


@dataclass(frozen=True)
class SolveOutcome:
    solution: list[int] | None
    status: str  # PlanStatus.OPTIMAL / FEASIBLE when a solution came back, else the solver's word
    objective: float | None
    bound: float | None
    setup_s: float = 0.0  # the translation into the solver's model (what a caller's cost estimate needs)
    overrun_s: float | None = None  # how far the call ran past its limit when the limit bound (None: it did not)
    load_s: float | None = None  # wall s of the quickest slice past its own limit without a search: the model load
    slice_s: float | None = None  # wall seconds of the quickest slice (None: no slice ran)


class _Proto:
    """What CpSolver.solve reads of a model: its proto. cp_model.CpModel() costs about 1.5 ms
    to create (it wraps every method for pre-PEP8 names), as much as solving a small round."""

    def __init__(self):
        from ortools.sat.python import cp_model_helper

        self.proto = cp_model_helper.CpModelProto()


LOAD_DET_S = 1e-3  # deterministic seconds below which a slice did no search (loading 4,000 variables: 2.5e-5)
QUICK_PARAMS = dict(cp_model_presolve=False, linearization_level=0, cp_model_probing_level=0, symmetry_level=0)


def _set_hint(proto, values) -> None:
    proto.clear_solution_hint()
    proto.solution_hint.vars.extend(range(len(values)))
    proto.solution_hint.values.extend(values)


def solve_cpsat(m: LinearModel, time_limit_s: float, seed: int = 0, workers: int = 1,
                hint: list[int] | None = None, stall_s: float | None = None, min_gain: float = 0.0,
                quick_s: float | None = None, double: bool = True,
                load_s: float = 0.0, **params) -> SolveOutcome:
    """Time limit covers the translation too: what is left after it goes to the search.

    With `quick_s`, a first slice of that much deterministic time (CP-SAT's own clock, about
    seconds) runs without presolve, LP, probing or symmetry detection (QUICK_PARAMS): on the small
    models of a lightly loaded round it proves optimality in about a ms where the full set-up
    (presolve, probing, LP) costs 5-15 ms, and it reports the hint at once, so that a later slice
    whose presolve runs out of time still leaves CP-SAT's incumbent (never less than the hint).
    Unproven, the search goes on with `params`.

    With `stall_s`, the search (after the quick slice) runs in slices of deterministic time,
    stall_s, then twice that, and so on; when a slice neither proves optimality nor improves on
    what came before it (the first: the hint, or the quick slice's incumbent) by `min_gain`, its
    incumbent answers; so does one whose proven bound is less than `min_gain` above it. Without
    `double`, a slice that gained is followed by one for the rest of the limit (each slice
    reloads the model: tens of ms for thousands of variables). Small rounds
    then end in a few ms instead of at the limit (their hint is usually optimal or nearly, but
    proving the lower objective tiers takes long). Slices are not capped on the wall clock (only
    the limit is), so where the search ends does not depend on the machine's load: capped at 25%
    of the limit, reruns of `tetriopt solve` under a load average of 10 differed.

    `load_s` is the caller's estimate of what a slice costs before CP-SAT first looks at its wall
    clock (loading the model into its search worker: 55-90 ms for 4,000 variables, whatever the
    limit): no slice starts with less than that left (later slices: less than the quickest took)."""
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    model = _Proto()
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
        _set_hint(proto, hint)
    setup = time.perf_counter() - t0
    det_left = params.pop("max_deterministic_time", float("inf"))

    def run(extra: dict, det_s: float):
        """One slice: (status code, solver) with what is left of the wall and deterministic limits."""
        solver = cp_model.CpSolver()
        p = solver.parameters
        p.max_time_in_seconds = max(0.0, time_limit_s - (time.perf_counter() - t0))
        p.random_seed = seed
        p.num_workers = workers
        p.log_search_progress = False
        for k, v in {**params, **extra}.items():
            setattr(p, k, v)
        p.max_deterministic_time = min(det_left, det_s)
        return solver.solve(model), solver

    if time_limit_s - setup <= 0:
        return SolveOutcome(None, "NO_SOLUTION", None, None, setup)
    best: SolveOutcome | None = None  # the best slice so far
    last = "NO_SOLUTION"
    cheapest = 0.0  # wall seconds of the quickest slice so far: what loading the model costs at most
    loaded = None  # wall seconds of the quickest slice past its own limit without a search: the model's load

    def took(since: float, solver) -> None:
        nonlocal cheapest, loaded
        d = time.perf_counter() - since
        cheapest = d if cheapest == 0.0 else min(cheapest, d)
        if d > solver.parameters.max_time_in_seconds and solver.deterministic_time < LOAD_DET_S:
            # past its limit without searching: CP-SAT stopped at its first look at the clock,
            # after loading the model (a slice that searched to its limit is no measure of that)
            loaded = d if loaded is None else min(loaded, d)

    def slice_(extra: dict, det_s: float) -> bool:
        """Run one slice and keep its incumbent if better; True when it proved its answer."""
        nonlocal best, det_left, last
        t_slice = time.perf_counter()
        code, solver = run(extra, det_s)
        took(t_slice, solver)
        det_left -= solver.deterministic_time
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if best is None or solver.objective_value >= best.objective:
                status = PlanStatus.OPTIMAL if code == cp_model.OPTIMAL else PlanStatus.FEASIBLE
                best = SolveOutcome(list(solver.response_proto.solution)[:n], status, float(solver.objective_value),
                                    float(solver.best_objective_bound), setup)
                _set_hint(proto, best.solution)
        elif code != cp_model.UNKNOWN:
            last = solver.status_name(code)
        return code not in (cp_model.FEASIBLE, cp_model.UNKNOWN)

    def time_left() -> bool:
        """Room for another slice: CP-SAT loads the model (about 30 ms for 1,600 variables) before
        it looks at its clock, so a slice started with less left than the quickest one took runs
        past the limit."""
        return time_limit_s - (time.perf_counter() - t0) > max(0.002, cheapest or load_s) and det_left > 0

    def answer() -> SolveOutcome:
        out = best or SolveOutcome(None, last, None, None, setup)
        spent = time.perf_counter() - t0
        # CP-SAT checks its clock only once the model is loaded: the load of a large model on a
        # busy machine runs past a short limit (the caller learns it, MipPolicy._overrun)
        return replace(out, overrun_s=max(0.0, spent - time_limit_s) if spent > 0.8 * time_limit_s else None,
                       load_s=loaded, slice_s=cheapest or None)

    if load_s > 0 and not time_left():  # not even the model's load fits
        return answer()
    if quick_s is not None and slice_(QUICK_PARAMS, quick_s):
        return answer()
    if stall_s is None:
        if time_left():
            slice_({}, float("inf"))
        return answer()
    # slices on CP-SAT's deterministic clock, each twice the last: the search goes on only while
    # a slice improves on what came before it by `min_gain` (the first: on the hint), so small
    # rounds stop once the lower objective tiers are all that is left, and a stall is decided the
    # same way every run
    before = m.value(hint) if hint is not None else None
    if best is not None and (before is None or best.objective > before):
        before = best.objective  # what the quick slice found counts as that slice's gain
    det = stall_s

    def hopeless() -> bool:
        """CP-SAT's proven bound leaves less than `min_gain` above the incumbent: no slice can
        gain that much, so the stall rule would end the search after the next one anyway (a
        5-request round on skewed-slo1.5 spent 90 ms of CPU on such a slice, 8% of the run)."""
        return best is not None and best.bound is not None and best.bound - best.objective < min_gain

    while time_left() and not hopeless() and not slice_({}, det):
        if best is not None and before is not None and best.objective - before < min_gain:
            break  # a slice that found nothing yet does not stop the search
        before, det = (best.objective if best else None), (2 * det if double else float("inf"))
    return answer()


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
