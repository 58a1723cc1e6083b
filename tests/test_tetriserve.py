"""TetriServe's work-conserving scale-up: idle GPUs go to requests whose steps get faster."""

from __future__ import annotations

from tetriopt import RequestState, RoundState, load_profile, make_cluster
from tetriopt.plan import overfull_gpus
from tetriopt.policies import make_policy


def one_round(requests, gpus=8):
    return RoundState(now_us=0, round_us=900_000, cluster=make_cluster(gpus),
                      profile=load_profile("flux.1-dev-h100"), degrees=(1, 2, 4, 8), requests=tuple(requests))


def test_idle_gpus_speed_up_a_request_that_gains_no_whole_step_from_doubling():
    # 2048 px: one step per round at degree 1 and at 2 (863 / 461 ms), so doubling gains no whole
    # step; the deadline is loose enough that the minimal allocation is degree 1
    st = one_round([RequestState("big", 2048, 2048, remaining_steps=20, deadline_us=60_000_000)])
    fair = make_policy("tetriserve").plan(st)
    assert [a.degree for a in fair.assignments] == [8]
    assert fair.assignments[0].steps == 900_000 // st.step_us(st.requests[0], 8)
    old = make_policy("tetriserve-stepgain").plan(st)
    assert [a.degree for a in old.assignments] == [1]


def test_waiting_survivors_are_seated_before_anyone_scales_up():
    reqs = [RequestState(f"s{i}", 512, 512, remaining_steps=20, deadline_us=30_000_000) for i in range(6)]
    reqs.append(RequestState("big", 2048, 2048, remaining_steps=20, deadline_us=60_000_000))
    plan = make_policy("tetriserve").plan(one_round(reqs))
    held = {a.request: a for a in plan.assignments}
    assert set(held) == {r.id for r in reqs}  # everyone has a seat
    assert not overfull_gpus(one_round(reqs), [(a.request, a.gpus, a.steps) for a in plan.assignments])
    assert sum(a.degree for a in plan.assignments) == 8  # and no GPU idles: the big one took the rest
    assert held["big"].degree == 2


def test_scale_up_re_places_onto_a_free_block_and_prefers_the_latent():
    # "big" holds GPU 1 of pair (0, 1); GPU 0 is busy with a small request, so every set of 2+
    # that keeps GPU 1 is blocked: it is re-placed onto the idle block (4, 5, 6, 7)
    reqs = [RequestState("small", 256, 256, remaining_steps=20, deadline_us=3_000_000, location=(0,)),
            RequestState("big", 2048, 2048, remaining_steps=20, deadline_us=60_000_000, location=(1,))]
    plan = make_policy("tetriserve").plan(one_round(reqs))
    held = {a.request: a for a in plan.assignments}
    assert held["small"].gpus == (0,)
    assert held["big"].gpus == (4, 5, 6, 7)
