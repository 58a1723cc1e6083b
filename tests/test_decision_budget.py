"""The whole decision of a round is bounded by its stop time (MipPolicy: the limit less the
layout's reserve): greedy is anytime, TetriServe and the rollout abort, the fill stops. No
wall-clock asserts: stop times already past, and a clock that jumps an hour per look."""

from __future__ import annotations

import itertools
import types

import pytest

from tetriopt.plan import check_plan, make_plan
from tetriopt.policies import greedy as greedy_mod
from tetriopt.policies import mip
from tetriopt.policies.formulation import OutOfTime
from tetriopt.policies.greedy import CHECK_EVERY, greedy_decisions
from tetriopt.policies.tetriserve import TetriServe

from .test_round_regressions import _backlog_state


def _outlooks(state) -> int:
    return sum(1 for k in state.memo if k[0] == "outlook")


def test_greedy_is_anytime():
    """Without a stop and with one far ahead: the same plan. With one already past: a valid plan
    of the most urgent requests (its kept ids a prefix of the full scan's), having looked at a
    few dozen of 2,000 requests."""
    full = greedy_decisions(_backlog_state(64, 2000))
    assert greedy_decisions(_backlog_state(64, 2000), stop=float("inf")) == full
    st = _backlog_state(64, 2000)
    dec, kept = greedy_decisions(st, stop=0.0)
    assert dec and check_plan(st, make_plan(st, dec, backend="greedy", kept=tuple(kept))) is None
    assert kept == full[1][:len(kept)]
    assert _outlooks(st) <= 4 * CHECK_EVERY


def test_greedy_past_its_stop_still_places_a_request():
    """A stopped scan goes on until one request is placed (a round always makes progress: the
    simulator stops after 1,000 rounds that ran nothing)."""
    st = _backlog_state(8, 300)
    # every request before the first check is hopeless or not kept: placement still happens
    dec, _ = greedy_decisions(st, stop=0.0)
    assert dec


def test_tetriserve_aborts_at_its_stop():
    st = _backlog_state(8, 1000)
    with pytest.raises(OutOfTime):
        TetriServe().plan(st, stop=0.0)
    assert TetriServe().plan(st, stop=float("inf")).assignments == TetriServe().plan(st).assignments


@pytest.mark.parametrize("gpus,pending", [(8, 1000), (64, 2000)])
def test_huge_backlog_with_a_tiny_budget(gpus, pending):
    """A fallback-only round: the stop is past before greedy's first look at the clock, so the
    decision is greedy's first requests in EDF order, valid, and nothing else ran (TetriServe,
    the model and the rollout would each have looked at every request)."""
    st = _backlog_state(gpus, pending)
    pol = mip.MipPolicy("cpsat", time_limit_ms=0.001, seed=0, workers=1)
    plan = pol.plan(st)
    assert check_plan(st, plan) is None and plan.assignments
    assert plan.status == "FALLBACK" and plan.backend == "greedy" and "warm starts" in plan.note
    assert _outlooks(st) <= 4 * CHECK_EVERY


class _JumpingClock:
    """time's stand-in: every look at the clock is an hour after the last (a process that loses
    the CPU between any two looks)."""

    def __init__(self):
        self._t = itertools.count()
        self.process_time = __import__("time").process_time

    def perf_counter(self) -> float:
        return 3600.0 * next(self._t)


def _patch_clock(monkeypatch) -> None:
    clock = _JumpingClock()
    fake = types.SimpleNamespace(perf_counter=clock.perf_counter, process_time=clock.process_time)
    for mod in (mip, greedy_mod):
        monkeypatch.setattr(mod, "time", fake)


@pytest.mark.parametrize("gpus,pending", [(8, 6), (8, 60), (64, 400)])
def test_every_stage_stops_when_the_clock_jumps(monkeypatch, gpus, pending):
    """Each stage looks at the clock and stops: with an hour between any two looks the policy
    still answers at once with a valid plan, round after round (its stage estimates learn from
    absurd measurements)."""
    _patch_clock(monkeypatch)
    pol = mip.MipPolicy("cpsat", time_limit_ms=180, seed=0, workers=1)
    for _ in range(3):
        st = _backlog_state(gpus, pending)
        plan = pol.plan(st)
        assert check_plan(st, plan) is None and plan.assignments
    # every decision ended hours late: the lateness kept back is capped (else it would eat the limit)
    assert pol._late == pytest.approx(mip.LATE_SHARE * pol.limit_s)


@pytest.mark.parametrize("gpus,pending", [(8, 6), (8, 60), (64, 300)])
def test_deterministic_mode_never_looks_at_the_clock(monkeypatch, gpus, pending):
    """--deterministic: the same plans whatever the wall clock does (no stop time, no reserve,
    no skipped stage)."""
    def plans():
        pol = mip.MipPolicy("cpsat", time_limit_ms=40, seed=0, workers=1, deterministic=True)
        out = []
        for _ in range(2):
            p = pol.plan(_backlog_state(gpus, pending))
            out.append((p.assignments, p.status, p.kept, p.backend, p.note))
        return out

    calm = plans()
    _patch_clock(monkeypatch)
    assert plans() == calm


def test_the_limit_counts_from_the_wrappers_start():
    """The default `cpsat` is MipPolicy behind its admission gate (margins.ShownEarly, gate.py): the
    time the gate takes counts against the limit. A decision that started (`started`) a limit ago
    has no time left: the same fallback as a tiny limit, not a full search."""
    import time

    from tetriopt.policies import make_policy
    st = _backlog_state(8, 64)
    pol = mip.MipPolicy("cpsat", time_limit_ms=500, seed=0, workers=1)
    late = pol.plan(st, started=time.perf_counter() - 0.5)
    assert check_plan(st, late) is None and late.status == "FALLBACK" and "warm starts" in late.note
    fresh = mip.MipPolicy("cpsat", time_limit_ms=500, seed=0, workers=1).plan(st)
    assert fresh.status != "FALLBACK" or "warm starts" not in fresh.note
    wrapped = make_policy("cpsat", time_limit_ms=500, seed=0, workers=1)
    asked = []
    inner = wrapped.inner.plan
    wrapped.inner.plan = lambda s, **kw: (asked.append(kw), inner(s, **kw))[1]
    wrapped.plan(st)
    assert asked and asked[0]["started"] <= time.perf_counter()
