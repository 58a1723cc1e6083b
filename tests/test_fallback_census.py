"""benchmarks/fallback_census.py: a FALLBACK round is the rollout's choice only by plan.rollout_choice
(status FALLBACK and the rollout's note); every other FALLBACK round is listed with its round and note."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from tetriopt.plan import ROLLOUT_CHOICE, PlanStatus
from tetriopt.result import RoundRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fallback_census import census  # noqa: E402


def _round(i: int, status: PlanStatus, note: str = "") -> RoundRecord:
    return RoundRecord(round=i, start_us=i * 900_000, pending=3, kept=3, backend="cpsat", status=status,
                       solve_ms=1.0, objective=None, bound=None, note=note)


def test_rollout_rounds_apart_from_real_fallbacks():
    res = SimpleNamespace(rounds=(
        _round(0, PlanStatus.OPTIMAL),
        _round(1, PlanStatus.FALLBACK, ROLLOUT_CHOICE + " 3 vs 2"),
        _round(2, PlanStatus.FALLBACK, "time limit: greedy"),
        _round(3, PlanStatus.FEASIBLE, ROLLOUT_CHOICE + " 2 vs 1"),  # not a FALLBACK round: not counted
        _round(4, PlanStatus.FALLBACK),
    ))
    assert census(res) == (1, [(2, "FALLBACK", "time limit: greedy"), (4, "FALLBACK", "")])
