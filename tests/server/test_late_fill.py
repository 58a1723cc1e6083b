"""Requests that arrive while a round is being planned go on the GPU time its plan leaves free
(`planner.fill_late`), after the plan's own work on each GPU; the plan's assignments stand."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tetriopt.instance import make_cluster
from tetriopt.plan import Assignment, RoundPlan, check_plan
from tetriopt.profile import load_profile
from tetriopt.server.planner import fill_late
from tetriopt.state import RequestState, RoundState

from serverkit import FAST_PROFILE

pytestmark = pytest.mark.server

NOW = 600_000  # round 10 of 60 ms


def _state(reqs):
    return RoundState(now_us=NOW, round_us=60_000, cluster=make_cluster(4), profile=load_profile(FAST_PROFILE),
                      degrees=(1, 2, 4), requests=tuple(reqs), round_index=10)


def _req(rid, size=1024, steps=20, deadline_us=NOW + 400_000):
    return RequestState(id=rid, width=size, height=size, remaining_steps=steps, deadline_us=deadline_us)


def test_a_late_request_starts_on_the_gpus_the_plan_leaves_free():
    planned = _req("a")
    # a on GPUs 0-1 for 4 steps of 13 ms (52 of the 60 ms), nothing on 2-3
    plan = RoundPlan(assignments=(Assignment("a", (0, 1), 4, NOW, NOW + 52_000),), backend="test")
    late = _req("late", size=512, steps=5)
    merged, full = fill_late(_state([planned]), plan, (late,))
    assert check_plan(merged, full) is None
    assert full.assignments[0] == plan.assignments[0]
    extra = full.assignments[1:]
    assert [a.request for a in extra] == ["late"]
    assert set(extra[0].gpus) <= {2, 3} and extra[0].start_us == NOW and extra[0].steps == 5


def test_a_late_request_waits_when_the_plan_fills_the_round():
    planned = _req("a")
    plan = RoundPlan(assignments=(Assignment("a", (0, 1, 2, 3), 7, NOW, NOW + 56_000),), backend="test")
    merged, full = fill_late(_state([planned]), plan, (_req("late", size=512, steps=5),))
    assert full.assignments == plan.assignments and check_plan(merged, full) is None


def test_late_same_size_arrivals_batch_when_batching_is_on(tmp_path):
    """Issue 13: with batching on, two same-size late arrivals share steps (greedy's rule), the
    merged plan passes the checker, and without it they run apart."""
    data = json.loads(Path(FAST_PROFILE).read_text())
    for p in data["points"]:
        p["batches"] = {"2": {"step_ms": {k: v * 1.1 for k, v in p["step_ms"].items()}}}
    (tmp_path / "b.json").write_text(json.dumps(data))
    prof = load_profile(str(tmp_path / "b.json"))
    late = (_req("l1", size=256, steps=5), _req("l2", size=256, steps=5))
    empty = RoundPlan(assignments=(), backend="test")
    for batching, want in ((True, [("l1", ("l2",))]), (False, [("l1", ()), ("l2", ())])):
        merged, full = fill_late(replace(_state([]), profile=prof), empty, late, batching=batching)
        assert sorted((a.request, a.batch) for a in full.assignments) == want
        assert check_plan(merged, full) is None


def test_a_late_request_takes_the_time_of_work_the_plan_gave_up_on():
    # "gone" misses its deadline whatever happens (not kept): its steps fill GPUs 2-3 for 52 ms, and
    # a + b fill GPUs 0-1; a late 1024 px request fits nowhere else, so it runs on 2-3 instead and
    # "gone" waits for the next round
    a, b, gone = _req("a"), _req("b", size=512), _req("gone", deadline_us=NOW + 10_000)
    plan = RoundPlan(assignments=(Assignment("a", (0, 1), 4, NOW, NOW + 52_000),
                                  Assignment("b", (0,), 1, NOW + 52_000, NOW + 60_000),
                                  Assignment("gone", (2, 3), 4, NOW, NOW + 52_000)),
                     backend="test", kept=("a", "b"))
    late = _req("late", steps=5)
    merged, full = fill_late(_state([a, b, gone]), plan, (late,))
    assert check_plan(merged, full) is None
    assert [x.request for x in full.assignments] == ["a", "b", "late"]
    assert full.assignments[:2] == plan.assignments[:2] and set(full.assignments[2].gpus) <= {2, 3}
    # without the plan saying who is kept, nothing is displaced
    merged, full = fill_late(_state([a, b, gone]), replace(plan, kept=None), (late,))
    assert [x.request for x in full.assignments] == ["a", "b", "gone"]


def test_admission_counts_a_late_arrival_placed_by_displacing_given_up_work():
    """Admission's prediction (`admission.late_arrivals_fit`) is fill_late's outcome: where fill_late
    places a late arrival by displacing work of a request the plan gave up on, the plan is rebuilt
    (its assignments no longer a prefix), and the arrival's steps still count."""
    from tetriopt.server.admission import late_arrivals_fit

    a, b, gone = _req("a"), _req("b", size=512), _req("gone", deadline_us=NOW + 10_000)
    plan = RoundPlan(assignments=(Assignment("a", (0, 1), 4, NOW, NOW + 52_000),
                                  Assignment("b", (0,), 1, NOW + 52_000, NOW + 60_000),
                                  Assignment("gone", (2, 3), 4, NOW, NOW + 52_000)),
                     backend="test", kept=("a", "b"))
    # due at the round's end: it needs all 4 steps now (4 x 13 ms + its 4 ms decode on GPUs 2-3)
    late = _req("late", steps=4, deadline_us=NOW + 64_000)
    merged, full = fill_late(_state([a, b, gone]), plan, (late,))
    assert [(x.request, x.steps) for x in full.assignments][2:] == [("late", 4)]
    assert late_arrivals_fit(_state([a, b, gone]), plan, (late,))
    # one step more does not fit on the free or given-up time; greedy on the whole round does (all 4
    # GPUs for 44 ms, a and b keep running after it) and keeps everyone: promised, and so planned
    more = replace(late, remaining_steps=5)
    merged, full = fill_late(_state([a, b, gone]), plan, (more,))
    assert full.backend == "greedy" and check_plan(merged, full) is None
    assert ("late", (0, 1, 2, 3), 5) in [(x.request, x.gpus, x.steps) for x in full.assignments]
    assert late_arrivals_fit(_state([a, b, gone]), plan, (more,))
    # ... not where that costs a kept request the steps it needs now (a due with the round too)
    tight = replace(a, remaining_steps=4, deadline_us=NOW + 64_000)
    plan_tight = replace(plan, assignments=(replace(plan.assignments[0], end_us=NOW + 56_000),) + plan.assignments[1:])
    assert not late_arrivals_fit(_state([tight, b, gone]), plan_tight, (more,))


def test_admission_predicts_late_arrivals_with_the_servers_batching(tmp_path):
    """Two same-size late arrivals that each need the round: batched (the loop's fill_late with the
    server's switch on) both get their steps on the one free GPU; run apart only one does. The
    prediction follows the switch, as the loop's fill_late does."""
    from tetriopt.server.admission import late_arrivals_fit

    data = json.loads(Path(FAST_PROFILE).read_text())
    for p in data["points"]:
        p["batches"] = {"2": {"step_ms": {k: v * 1.1 for k, v in p["step_ms"].items()}}}
    (tmp_path / "b.json").write_text(json.dumps(data))
    st = replace(_state([_req("a", steps=40, deadline_us=NOW + 2_000_000)]), profile=load_profile(str(tmp_path / "b.json")))
    # GPUs 0-2 full; GPU 3 has 60 ms free: 256 px steps of 4 ms (4.4 ms batched), 1 ms decode each
    plan = RoundPlan(assignments=(Assignment("a", (0, 1, 2), 1, NOW, NOW + 60_000),), backend="test")
    late = tuple(_req(f"l{i}", size=256, steps=10, deadline_us=NOW + 62_000) for i in range(2))
    assert late_arrivals_fit(st, plan, late, batching=True)
    assert not late_arrivals_fit(st, plan, late, batching=False)
