"""CP-SAT's fast paths (policies/backends.solve_cpsat's quick slice without presolve, then the
full search from its incumbent) keep the exact optimum of the formulation: checked against the
brute force on the random small rounds, with a slice long enough to prove most of them and one
too short to prove any (so the full search must finish the proof)."""

from __future__ import annotations

import pytest

from tetriopt.policies.backends import solve_cpsat
from tetriopt.policies.formulation import build, complete
from tetriopt.policies.greedy import greedy_decisions

from .test_bruteforce import brute_force, random_state


@pytest.mark.parametrize("quick_s", [1e-7, 0.005])
def test_quick_slice_keeps_the_optimum(quick_s):
    for seed in range(0, 60, 2):
        st = random_state(seed)
        rm = build(st)
        dec, kept = greedy_decisions(st)
        hint = complete(rm, dec, kept)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1, hint=hint, quick_s=quick_s,
                         max_deterministic_time=10.0)
        assert cp.status == "OPTIMAL", seed
        assert cp.objective == brute_force(st), seed
        assert rm.model.feasible(cp.solution) and rm.model.value(cp.solution) == cp.objective, seed


def test_quick_slice_reports_the_hint_when_nothing_is_left():
    """Out of deterministic time after the quick slice, the answer is still CP-SAT's incumbent,
    never below the warm start (rounds fell back to greedy when a presolve ran out of time)."""
    for seed in range(1, 60, 2):
        st = random_state(seed)
        rm = build(st)
        dec, kept = greedy_decisions(st)
        hint = complete(rm, dec, kept)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1, hint=hint, quick_s=1e-9, max_deterministic_time=1e-9)
        assert cp.solution is not None and cp.objective >= rm.model.value(hint), seed


def test_overrun_learnt_shortens_the_search_limit():
    """CP-SAT loads a model before it looks at its clock: the policy learns that overrun per
    variable (at once when worse, slowly when better or when the search ended early) and gives
    the next search that much less; `--deterministic` never looks at it."""
    from dataclasses import replace

    from tetriopt.policies.backends import SolveOutcome
    from tetriopt.policies.mip import MipPolicy

    rm = build(random_state(1))
    nv = len(rm.model.names)
    pol = MipPolicy("cpsat", time_limit_ms=180)
    before = pol._search_limit(rm, 0.1)
    ran = SolveOutcome([0] * nv, "FEASIBLE", 0.0, 0.0)
    pol._observe_overrun(rm, replace(ran, overrun_s=0.5 * nv * 1e-3))  # 0.5 ms per variable
    assert pol._overrun_rate == pytest.approx(0.5e-3)
    assert pol._search_limit(rm, 0.1) == pytest.approx(before - (0.5e-3 - 1e-5) * nv)
    pol._observe_overrun(rm, replace(ran, overrun_s=0.0))  # the limit bound, no overrun: decays
    assert 0 < pol._overrun_rate < 0.5e-3
    pol._observe_overrun(rm, ran)  # the limit did not bind (overrun_s None): relaxes by 10%
    assert pol._overrun_rate == pytest.approx(0.405e-3)
    det = MipPolicy("cpsat", time_limit_ms=180, deterministic=True)
    det._observe_overrun(rm, replace(ran, overrun_s=1.0))
    assert det._search_limit(rm, 0.1) == 0.1


@pytest.mark.parametrize("min_gain,proves", [(0.0, True), (1e18, False)])
def test_improvement_slices(min_gain, proves):
    """Slices of CP-SAT's deterministic clock, doubling: with no gain required the search goes on
    until it proves the optimum; with an unreachable gain it stops after the first slice, with an
    incumbent never below the hint."""
    for seed in range(0, 60, 3):
        st = random_state(seed)
        rm = build(st)
        dec, kept = greedy_decisions(st)
        hint = complete(rm, dec, kept)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1, hint=hint, stall_s=1e-5, min_gain=min_gain)
        assert cp.solution is not None and rm.model.feasible(cp.solution), seed
        assert cp.objective >= (rm.model.value(hint) if hint else float("-inf")), seed
        if proves:
            assert cp.status == "OPTIMAL" and cp.objective == brute_force(st), seed


def test_overrun_estimate_recovers():
    """One enormous overrun (a process that lost the CPU) counts as at most half the limit, and
    the searches that end before their limit relax it, so the search gets its time back."""
    from dataclasses import replace

    from tetriopt.policies.backends import SolveOutcome
    from tetriopt.policies.mip import MipPolicy

    rm = build(random_state(1))
    nv = len(rm.model.names)
    pol = MipPolicy("cpsat", time_limit_ms=180)
    ran = SolveOutcome([0] * nv, "FEASIBLE", 0.0, 0.0)
    pol._observe_overrun(rm, replace(ran, overrun_s=5.0))
    assert pol._overrun_rate == pytest.approx(0.09 / nv)
    for _ in range(40):
        pol._observe_overrun(rm, ran)
    assert pol._overrun_rate * nv < 0.002


def test_lazy_tetriserve_warm_start_changes_no_plan(monkeypatch):
    """TetriServe's warm start is computed only when the certificate loop reaches it
    (MipPolicy._warm_starts(lazy=True)); the candidates keep their order, so every round's plan is
    the one the eager order gives. Checked over a whole
    simulated workload with rounds both certified and searched."""
    import tetriopt
    from tetriopt.policies import mip

    inst = tetriopt.load_instance("instances/flux-h100-skewed-slo1.0.json")

    def plans():
        pol = mip.MipPolicy("cpsat", time_limit_ms=500, deterministic=True, seed=0, workers=1)
        res = tetriopt.solve(inst, pol)
        return ([(r.backend, r.status, r.note, r.objective) for r in res.rounds], res.assignments), res.summary["met"]

    lazy, met = plans()
    eager_starts = mip.MipPolicy._warm_starts
    monkeypatch.setattr(mip.MipPolicy, "_warm_starts", lambda self, st, t0, stop, reserve, lazy=False:
                        eager_starts(self, st, t0, stop, reserve, False))
    eager, met_eager = plans()
    assert lazy == eager and met == met_eager
    rounds = lazy[0]
    assert any(b == "cpsat" and s == "OPTIMAL" and not n for b, s, n, _ in rounds)  # searched rounds
    assert any("tetriserve plan" in n for _, _, n, _ in rounds)  # rounds certified by the lazy warm start


def test_no_slice_once_no_gain_can_be_reached(monkeypatch):
    """A slice is started only while CP-SAT's proven bound leaves room for the gain the stall rule
    asks (backends.solve_cpsat): with an unreachable gain only the quick slice runs (it does not
    prove these rounds: 1e-7 s), with none required the search goes on to the proof."""
    from ortools.sat.python import cp_model

    calls = []
    solve = cp_model.CpSolver.solve
    monkeypatch.setattr(cp_model.CpSolver, "solve", lambda self, *a, **k: calls.append(1) or solve(self, *a, **k))
    unproved = 0
    for seed in range(0, 60, 3):
        st = random_state(seed)
        rm = build(st)
        dec, kept = greedy_decisions(st)
        hint = complete(rm, dec, kept)
        for min_gain in (1e18, 0.0):
            calls.clear()
            cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1, hint=hint, quick_s=1e-7, stall_s=1e-5,
                             min_gain=min_gain)
            assert cp.solution is not None, seed
            if min_gain:
                unproved += cp.status != "OPTIMAL"
                assert len(calls) == 1 or cp.status == "OPTIMAL", seed
            else:
                assert cp.status == "OPTIMAL" and cp.objective == brute_force(st), seed
    assert unproved >= 5  # the rule is exercised


def test_greedy_plan_leaves_nothing_to_fill():
    """MipPolicy skips the leftover fill after a plan that is greedy's own: greedy tried every
    request on loads that only grew since, so the fill adds nothing (random backlogs of 40-1,000
    requests on 8 and 64 GPUs)."""
    import random
    import sys
    from pathlib import Path

    from tetriopt.plan import members
    from tetriopt.policies.greedy import fill_leftover

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from round_solve import random_state as backlog

    for gpus, pending in ((8, 40), (8, 300), (64, 300), (8, 1000)):
        rng = random.Random(gpus + pending)
        for _ in range(3):
            st = backlog(rng, gpus, pending)
            dec, _ = greedy_decisions(st)
            held = {i for d in dec for i in members(d[0])}
            assert fill_leftover(st, dec, [r for r in st.requests if r.id not in held], ordered=True) == dec


def test_lone_request_kept_by_a_proved_plan_is_not_rolled_out():
    """A round of one request whose plan is proved optimal and keeps it skips the rollout
    (TetriServe's plan of the round is never computed); rounds of two requests are still rolled out."""
    from tetriopt.policies.mip import MipPolicy

    from .test_rollout import MID, SMALL, state

    skipped = 0
    for reqs in [(MID,), (SMALL,), (SMALL, MID)]:
        st = state(*reqs)
        pol = MipPolicy("cpsat", time_limit_ms=500, deterministic=True)
        plan = pol.plan(st)
        lone = len(reqs) == 1 and plan.status == "OPTIMAL" and set(plan.kept) == {r.id for r in reqs}
        assert (pol._forward.cached(st) is None) == lone, reqs
        skipped += lone
    assert skipped == 2


def test_no_slice_starts_without_time_for_the_model_load():
    """CP-SAT loads the model into its worker before it first looks at its clock (55-90 ms for
    4,000 variables, whatever the limit): with less left than `load_s`, no slice starts and no
    solution comes back; with room, the same call solves and reports its quickest slice."""
    for seed in range(0, 20, 4):
        st = random_state(seed)
        rm = build(st)
        dec, kept = greedy_decisions(st)
        hint = complete(rm, dec, kept)
        for quick_s in (None, 0.005):
            kw = dict(seed=0, workers=1, hint=hint, quick_s=quick_s, stall_s=1e-3)
            off = solve_cpsat(rm.model, 20.0, load_s=30.0, **kw)
            assert off.solution is None and off.slice_s is None and off.load_s is None, seed
            on = solve_cpsat(rm.model, 20.0, load_s=0.0, **kw)
            assert on.solution is not None and on.slice_s is not None, seed
            assert on.load_s is None, seed  # no slice ran past its 20 s limit: no load measured


def test_model_load_learnt():
    """The load per variable: up at once from a slice that ran past its own limit (one observation
    at most half the limit), down slowly from a quicker slice, relaxed by 10% on a round where no
    slice fitted but never below the least measured; `--deterministic` never looks at it."""
    from dataclasses import replace

    from tetriopt.policies.backends import SolveOutcome
    from tetriopt.policies import mip
    from tetriopt.policies.mip import MipPolicy

    rm = build(random_state(1))
    nv = len(rm.model.names)
    pol = MipPolicy("cpsat", time_limit_ms=180)
    none = SolveOutcome(None, "NO_SOLUTION", None, None)
    for _ in range(100):
        pol._observe_load(rm, none)  # nothing measured yet: relaxes down to the prior only
    assert pol._load_rate == pytest.approx(mip.LOAD_PRIOR)
    pol._observe_load(rm, replace(none, load_s=0.01 * nv, slice_s=0.01 * nv))
    assert pol._load_rate == pytest.approx(0.09 / nv)  # capped at half the limit
    pol._observe_load(rm, replace(none, load_s=1e-3 * nv, slice_s=1e-3 * nv))
    assert pol._load_rate == pytest.approx(0.9 * 0.09 / nv + 0.1e-3) and pol._load_floor == pytest.approx(1e-3)
    before = pol._load_rate
    pol._observe_load(rm, replace(none, slice_s=1.0))  # a slower slice that did not overrun: no news
    assert pol._load_rate == before
    for _ in range(100):
        pol._observe_load(rm, none)  # no slice fitted: relaxes, down to the least measured
    assert pol._load_rate == pytest.approx(1e-3)
    det = MipPolicy("cpsat", time_limit_ms=180, deterministic=True)
    rate = det._load_rate
    det._observe_load(rm, replace(none, load_s=1.0, slice_s=1.0))
    assert det._load_rate == rate


def test_policy_skips_a_search_whose_model_load_does_not_fit():
    """In the policy: with a learnt load that cannot fit (however long the limit), rounds that
    CP-SAT proves otherwise answer their best warm start without a slice; `--deterministic` plans
    never depend on it."""
    from tetriopt.policies.mip import MipPolicy

    for seed in (8, 14, 15, 18):  # rounds that reach CP-SAT (no certificate before it)
        st = random_state(seed)
        assert MipPolicy("cpsat", time_limit_ms=20000).plan(st).status == "OPTIMAL", seed
        slow = MipPolicy("cpsat", time_limit_ms=20000)
        slow._load_rate = slow._load_floor = 1e3
        got = slow.plan(st)
        assert got.status == "FALLBACK" and got.note == "time limit before a solution", seed
        det = MipPolicy("cpsat", time_limit_ms=20000, deterministic=True)
        det._load_rate = det._load_floor = 1e3
        assert det.plan(st).status == "OPTIMAL", seed
