"""The one plan checker: each rule refuses the plan that breaks it, and policies' plans pass."""

from __future__ import annotations

import pytest

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.plan import Assignment, RoundPlan, check_plan

PROF = tetriopt.load_profile("flux.1-dev-h100")
R = 900_000
T1 = PROF.step_us(512, 512, 1)
T2 = PROF.step_us(512, 512, 2)
E, D = PROF.text_encode_us, PROF.vae_decode_us(512, 512)  # a new request's encode, a finishing one's decode

# both started (their latents on GPU 0): only a finishing assignment carries its decode
STATE = RoundState(now_us=R, round_us=R, cluster=tetriopt.make_cluster(4, [[0, 1], [2, 3]]), profile=PROF,
                   degrees=(1, 2), round_index=1,
                   requests=(RequestState("a", 512, 512, remaining_steps=4, deadline_us=9_000_000, location=(0,)),
                             RequestState("b", 512, 512, remaining_steps=2, deadline_us=9_000_000, location=(0,))))


def plan(*assignments) -> RoundPlan:
    return RoundPlan(assignments=tuple(Assignment(*a) for a in assignments), backend="test")


def test_a_valid_plan_passes():
    # a runs twice in a row (a batch-free split over two sets), b shares GPU 0 after it
    p = plan(("a", (0,), 2, R, R + 2 * T1), ("a", (2, 3), 2, R + 2 * T1, R + 2 * T1 + 2 * T2 + D),
             ("b", (0, 1), 1, R + 2 * T1, R + 2 * T1 + T2))
    assert check_plan(STATE, p) is None


def test_encode_and_decode_are_charged_to_the_assignment_that_runs_them():
    """A new request's first assignment holds its set for the text encode too, the one that finishes
    it for the VAE decode too (what the runtime's set leader runs inside those tasks)."""
    new = RoundState(now_us=0, round_us=R, cluster=tetriopt.make_cluster(2), profile=PROF, degrees=(1, 2),
                     requests=(RequestState("n", 512, 512, remaining_steps=3, deadline_us=9_000_000),))
    split = plan(("n", (0,), 1, 0, T1 + E), ("n", (0, 1), 2, T1 + E, T1 + E + 2 * T2 + D))
    assert check_plan(new, split) is None
    assert "encode/decode" in check_plan(new, plan(("n", (0,), 1, 0, T1), ("n", (0, 1), 2, T1, T1 + 2 * T2 + D)))
    assert "encode/decode" in check_plan(new, plan(("n", (0, 1), 3, 0, 3 * T2 + E)))
    assert check_plan(new, plan(("n", (0, 1), 3, 0, 3 * T2 + E + D))) is None
    # make_plan lays decisions out with the same durations, and the planner's loads count them
    made = tetriopt.plan.make_plan(new, [("n", (0, 1), 3)], "test")
    assert [(a.start_us, a.end_us) for a in made.assignments] == [(0, 3 * T2 + E + D)]
    assert check_plan(new, made) is None
    assert new.max_steps(new.requests[0], 2) == 3
    tight = RoundState(now_us=0, round_us=3 * T2 + E + D - 1, cluster=tetriopt.make_cluster(2), profile=PROF,
                       degrees=(1, 2), requests=new.requests)
    assert tight.max_steps(tight.requests[0], 2) == 2  # its decode does not fit after the last step


@pytest.mark.parametrize("assignments, why", [
    ([("x", (0,), 1, R, R + T1)], "unknown request 'x'"),
    ([("a", (0, 0), 1, R, R + T2)], "repeat a GPU"),
    ([("a", (0, 1, 2, 3), 1, R, R + PROF.step_us(512, 512, 4))], "degree 4 not allowed"),
    ([("a", (1, 2), 1, R, R + T2)], "not an aligned set"),
    ([("a", (0,), 0, R, R)], "0 steps"),
    ([("a", (0,), 5, R, R + 5 * T1)], "5 steps, 4 remaining"),
    ([("a", (0,), 1, R - 1, R - 1 + T1)], "outside the round"),
    ([("a", (0,), 1, 2 * R - T1 + 1, 2 * R + 1)], "outside the round"),
    ([("a", (0,), 2, R, R + T1)], "the profile says 2 x"),
    ([("a", (0,), 3, R, R + 3 * T1), ("a", (1,), 2, R + 3 * T1, R + 3 * T1 + 2 * T1 + D)], "5 steps over"),
    ([("a", (0,), 1, R, R + T1), ("a", (1,), 1, R, R + T1)], "two assignments at once"),
    ([("a", (0,), 1, R, R + T1), ("b", (0, 1), 1, R + T1 - 1, R + T1 - 1 + T2)], "GPU 0 double-booked"),
])
def test_each_rule_refuses(assignments, why):
    got = check_plan(STATE, plan(*assignments))
    assert got is not None and why in got, got


@pytest.mark.parametrize("policy", ["cpsat", "greedy", "tetriserve", "fixed-sp-2", "rssp"])
def test_policies_plans_pass(policy):
    state = RoundState(now_us=0, round_us=R, cluster=tetriopt.make_cluster(8), profile=PROF, degrees=(1, 2, 4, 8),
                       requests=tuple(RequestState(f"r{i}", s, s, remaining_steps=20, deadline_us=d)
                                      for i, (s, d) in enumerate([(256, 800_000), (512, 2_000_000),
                                                                  (1024, 3_000_000), (2048, 6_000_000),
                                                                  (1024, 1_500_000), (512, 900_000)])))
    p = tetriopt.solve_round(state, policy, **({"workers": 1, "time_limit_ms": 200} if policy == "cpsat" else {}))
    assert p.assignments and check_plan(state, p) is None


def test_a_late_request_does_not_go_before_one_due_in_the_round():
    # L missed its deadline already and finishes here; U, kept, is due 100 ms into the round: U
    # goes first on the GPU they share (by deadline order alone L would, and U would miss)
    from tetriopt.plan import make_plan
    prof = tetriopt.load_profile("flux.1-dev-h100")
    late = RequestState("L", 256, 256, remaining_steps=5, deadline_us=500_000, location=(0,))
    due = RequestState("U", 512, 512, remaining_steps=1, deadline_us=1_000_000, location=(0,))
    st = RoundState(now_us=900_000, round_us=900_000, cluster=tetriopt.make_cluster(1), profile=prof,
                    degrees=(1,), requests=(late, due))
    p = make_plan(st, [("L", (0,), 5), ("U", (0,), 1)], backend="test", kept=("U",))
    by = {a.request: a for a in p.assignments}
    assert by["U"].start_us == 900_000 and by["U"].end_us <= due.deadline_us
    assert check_plan(st, p) is None
