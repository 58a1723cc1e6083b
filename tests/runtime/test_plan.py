"""Plan compilation: global order, hand-off routing, and rejection of plans the runtime cannot run."""

import pytest

pytestmark = pytest.mark.runtime
pytest.importorskip("torch")

from _plans import urgent_and_wide_plan  # noqa: E402
from tetriopt_runtime.plan import PlanError, aligned_blocks, compile_plan  # noqa: E402


def test_aligned_blocks_of_four_ranks():
    assert aligned_blocks(4) == ((0,), (1,), (2,), (3,), (0, 1), (2, 3), (0, 1, 2, 3))
    assert aligned_blocks(1) == ((0,),)


def test_order_routes_and_conditioning():
    rounds = [[("a", (0,), 2), ("b", (2, 3), 1)],
              [("a", (0, 1), 2), ("b", (2, 3), 1)],
              [("a", (0, 1, 2, 3), 1), ("b", (1,), 1)]]
    tasks = compile_plan(rounds, {"a": 5, "b": 3}, 4)
    # plain triples carry no start times: they run in the order given
    assert [(t.request, t.gpus) for t in tasks] == [
        ("a", (0,)), ("b", (2, 3)), ("a", (0, 1)), ("b", (2, 3)), ("a", (0, 1, 2, 3)), ("b", (1,))]
    a = [t for t in tasks if t.request == "a"]
    assert [t.step_start for t in a] == [0, 2, 4]
    assert a[0].prev_gpus is None and a[1].prev_gpus == (0,) and not a[0].is_last
    assert a[1].needs_cond == (1,) and a[2].needs_cond == (2, 3)
    assert a[2].is_last
    b = [t for t in tasks if t.request == "b"]
    assert b[1].prev_gpus == b[1].gpus == (2, 3) and b[1].needs_cond == ()
    assert b[2].needs_cond == (1,)


def test_accepts_tetriopt_round_plans():
    from tetriopt.plan import Assignment, RoundPlan

    plan = RoundPlan(assignments=(Assignment("a", (0, 1), 3, 0, 10),), backend="test")
    tasks = compile_plan([plan], {"a": 3}, 2)
    assert tasks[0].gpus == (0, 1) and tasks[0].steps == 3


def test_tasks_follow_the_plans_start_times():
    plan = urgent_and_wide_plan()
    tasks = compile_plan([plan], {"wide": 4, "urgent": 2}, 2)
    assert [t.request for t in tasks] == ["urgent", "wide"]
    # the order comes from the start times, not from the listing
    flipped = type(plan)(assignments=tuple(reversed(plan.assignments)), backend="test")
    assert [t.request for t in compile_plan([flipped], {"wide": 4, "urgent": 2}, 2)] == ["urgent", "wide"]


def test_mixed_timed_and_untimed_assignments_are_refused():
    with pytest.raises(PlanError, match="start times"):
        compile_plan([[{"request": "a", "gpus": (0,), "steps": 1, "start_us": 0}, ("b", (1,), 1)]],
                     {"a": 1, "b": 1}, 2)


@pytest.mark.parametrize("rounds,steps,msg", [
    ([[("a", (1, 2), 2)]], {"a": 2}, "aligned"),
    ([[("a", (0, 1, 2), 2)]], {"a": 2}, "aligned"),
    ([[("x", (0,), 2)]], {"a": 2}, "unknown request"),
    ([[("a", (0,), 1)]], {"a": 2}, "runs 1 steps"),
    ([[("a", (0,), 0)], [("a", (0,), 2)]], {"a": 2}, "must be positive"),
    ([[("a", (4,), 2)]], {"a": 2}, "aligned"),
])
def test_rejects_bad_plans(rounds, steps, msg):
    with pytest.raises(PlanError, match=msg):
        compile_plan(rounds, steps, 4)


def test_a_batch_compiles_to_consecutive_member_tasks():
    """A batched decision (the tuple of its members, as tetriopt's decisions) gives one task per
    member, consecutive, each with its own history; the steps run at the last member's task."""
    rounds = [[("a", (0,), 2), ("b", (1,), 1)],
              [(("a", "b"), (0, 1), 3)],
              [{"request": "b", "batch": ["a"], "gpus": [1], "steps": 1}]]
    tasks = compile_plan(rounds, {"a": 6, "b": 5}, 2)
    assert [(t.request, t.gpus, t.step_start, t.batch) for t in tasks] == [
        ("a", (0,), 0, ()), ("b", (1,), 0, ()),
        ("a", (0, 1), 2, ("a", "b")), ("b", (0, 1), 1, ("a", "b")),
        ("b", (1,), 4, ("b", "a")), ("a", (1,), 5, ("b", "a"))]
    assert [t.closes_batch for t in tasks] == [True, True, False, True, False, True]
    assert tasks[2].prev_gpus == (0,) and tasks[3].prev_gpus == (1,) and tasks[4].is_last and tasks[5].is_last
    assert tasks[2].needs_cond == (1,) and tasks[3].needs_cond == (0,)
    with pytest.raises(PlanError, match="lists a request twice"):
        compile_plan([[(("a", "a"), (0,), 1)]], {"a": 1}, 2)
    with pytest.raises(PlanError, match="would run 7 steps"):
        compile_plan([[(("a", "b"), (0,), 1)], [(("a", "b"), (0,), 6)]], {"a": 6, "b": 9}, 2)
