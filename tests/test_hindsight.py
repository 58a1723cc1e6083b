"""benchmarks/hindsight.py: plans found with hindsight are valid plans of the workload, between the
fast policies and the bound (docs/bound.md, "Issue 12, fifth round")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import grid  # noqa: E402
import hindsight  # noqa: E402

import tetriopt  # noqa: E402
from tetriopt.bound import upper_bound  # noqa: E402
from tetriopt.validate import validate_result  # noqa: E402


def test_deadlines_shown_early_are_judged_on_the_true_ones():
    """A policy shown earlier deadlines plans a plan of the true workload: validate.py accepts it on
    the true (cut-down) workload, and met is each finish against the true deadline (showing every
    deadline a round early loses requests the policy then gives up on, never validity)."""
    inst = grid.workload(8, grid.RATES[(8, 32)], 0, 0.15)
    keep = frozenset(r.id for r in inst.requests[:30])
    R = inst.round_us
    plain = hindsight.serve(inst, keep, "tetriserve")
    early = hindsight.serve(inst, keep, "tetriserve", frozenset((r, R) for r in keep))
    for res in (plain, early):
        assert not validate_result(res.instance, res.to_json())
        assert {r.id for r in res.instance.requests} == keep
        assert all(o.met == (o.finish_us <= inst.by_id[o.id].deadline_us) for o in res.requests)
    shown = hindsight.cut(inst, keep, frozenset((r, R) for r in keep))
    moved = tetriopt.solve(shown, "tetriserve")  # the same plan, judged on the shown deadlines
    assert sum(o.met for o in moved.requests) <= len(hindsight.met_of(early))
    assert [a for _, a in moved.assignments] == [a for _, a in early.assignments]


def test_hindsight_plan_is_valid_and_between_the_policies_and_the_bound():
    """The best plan is valid on its cut-down workload, meets at least what the fast policies meet
    on the whole workload (it starts there) and at most the bound."""
    inst = grid.workload(8, grid.RATES[(8, 32)], 0, 0.15)
    s = hindsight.hindsight(inst, budget_s=3.0, cpsat_s=0.0, lp_s=20.0, log=lambda _: None)
    res = s.best_res
    assert not validate_result(res.instance, res.to_json())
    met = len(hindsight.met_of(res))
    assert met == len(s.best)
    fast = max(tetriopt.solve(inst, p).summary["met"] for p in hindsight.FAST)
    assert fast <= met <= upper_bound(inst, time_limit_s=5.0).met_bound
