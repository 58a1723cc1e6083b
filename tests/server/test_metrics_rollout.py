"""The server's metrics count the rollout's choice of TetriServe's plan apart from solver fallbacks:
a FALLBACK round whose note starts with plan.ROLLOUT_CHOICE is one where CP-SAT did answer."""

from __future__ import annotations

import pytest

from tetriopt.plan import ROLLOUT_CHOICE, PlanStatus
from tetriopt.server.metrics import Metrics

pytestmark = pytest.mark.server


def test_rollout_rounds_are_counted_apart_from_solver_fallbacks():
    m = Metrics(gpus=8)
    m.round_done(1.0, 2.0, 0.0, PlanStatus.OPTIMAL)
    m.round_done(1.0, 2.0, 0.0, PlanStatus.FALLBACK, note="time limit while building the model")
    m.round_done(1.0, 2.0, 0.0, PlanStatus.FALLBACK, note=f"{ROLLOUT_CHOICE} 3 vs 2")
    m.round_done(1.0, 2.0, 0.0, PlanStatus.FEASIBLE, note="rollout: giving up r1 meets 4 vs 3")
    st = m.stats(now_us=10**6)
    assert (st["rounds"], st["fallback_rounds"], st["rollout_rounds"]) == (4, 2, 1)
    assert m.rollouts._value.get() == 1 and m.fallbacks._value.get() == 2
