"""Deadlines shown early (`NAME[margin=PX:MS/...]`, policies/margins.py): the planner sees some
deadlines earlier, never one a request can no longer make alone, never one that makes the joint
test give up a request it keeps with the true deadlines; met is judged on the true deadlines
(real CP-SAT, deterministic clock, pinned seeds)."""

from __future__ import annotations

import dataclasses

import pytest

import tetriopt
from tetriopt.errors import InputError
from tetriopt.lookahead import outlook
from tetriopt.policies import gate
from tetriopt.policies.greedy import admitted
from tetriopt.policies.margins import Shown, ShownEarly, _fits, can_make, shown
from tetriopt.policies.mip import MipPolicy
from tetriopt.policies.tetriserve import TetriServe
from tetriopt.workload import generate

CPSAT = dict(time_limit_ms=200, seed=0, workers=1, deterministic=True)


def _instance(reqs):
    return tetriopt.parse_instance({"model": "flux.1-dev-h100", "cluster": {"gpus": 8}, "requests": [
        {"id": f"q{i}", "arrival_ms": a, "deadline_ms": d, "width": px, "height": px, "steps": 20}
        for i, (px, a, d) in enumerate(reqs)]})


def test_names_parse_and_wrap():
    p = tetriopt.make_policy("cpsat[rollout=0;margin=1024:225/2048:100]", **CPSAT)
    assert isinstance(p, ShownEarly) and isinstance(p.inner, MipPolicy) and not p.inner.rollout
    assert p.how == Shown(((1024, 225_000), (2048, 100_000)), True, gate=gate.parse("cpsat", gate.DEFAULT))
    assert p.name == "cpsat[rollout=0;margin=1024:225/2048:100]"
    t = tetriopt.make_policy("tetriserve[margin=2048:450/joint=0]")
    assert isinstance(t.inner, TetriServe) and t.how == Shown(((2048, 450_000),), False)
    q = tetriopt.make_policy("cpsat[rollout=0;gate=0]", **CPSAT)  # the MIP policies' default gate off
    assert isinstance(q, MipPolicy) and not q.rollout
    for bad in ("cpsat[margin=1024]", "cpsat[margin=x:5]", "tetriserve[margin=1024:1;margin=2048:1]"):
        with pytest.raises(InputError):
            tetriopt.make_policy(bad)


def _states(policy, inst):
    """Every round state `policy` is asked to plan in a simulation of `inst`."""
    seen = []
    inner = policy.plan

    def plan(s):
        seen.append(s)
        return inner(s)
    policy.plan = plan
    tetriopt.solve(inst, policy)
    return seen


def test_shown_never_takes_a_makeable_deadline_or_a_kept_request():
    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 16, 60, 256.4, seed=3), name="g16-s3")
    how = Shown(((512, 56_000), (1024, 225_000), (2048, 450_000)))
    moved = reverted = 0
    for s in _states(TetriServe(), inst):
        out = shown(s, how)
        kept_true = {r.id for r in admitted(s, lambda r: outlook(s, r))}
        for r, q in zip(s.requests, out.requests):
            assert q.id == r.id and dataclasses.replace(q, deadline_us=r.deadline_us) == r
            assert q.deadline_us in (r.deadline_us, r.deadline_us - dict(how.margins).get(r.width, 0))
            if can_make(s, r):  # makeable with its true deadline: still makeable as shown
                assert can_make(s, q)
            moved += q.deadline_us < r.deadline_us
            reverted += q.deadline_us == r.deadline_us and r.width in (1024, 2048)
        assert _fits(s, [q for q in out.requests if q.id in kept_true])  # the guard
    assert moved > 20 and reverted > 0  # the test exercises both sides


def test_met_is_judged_on_the_true_deadline():
    # one 1,024 px request due 100 ms after its earliest finish alone: it cannot make a deadline
    # 225 ms earlier, so it is planned on its true one, finishes within the margin, and is met
    alone = _instance([(1024, 0.0, 10_000.0)])
    finish = tetriopt.solve(alone, "tetriserve").requests[0].finish_us
    tight = _instance([(1024, 0.0, (finish + 100_000) / 1e3)])
    for name in ("tetriserve[margin=1024:225]", "cpsat[margin=1024:225]"):
        res = tetriopt.solve(tight, tetriopt.make_policy(name, **CPSAT))
        o = res.requests[0]
        assert o.met and tight.requests[0].deadline_us - 225_000 < o.finish_us <= tight.requests[0].deadline_us
        assert res.instance.requests[0].deadline_us == tight.requests[0].deadline_us


def test_margin_on_1024_px_frees_the_block_for_a_2048_px_request():
    # 8 GPUs: q1 (1,024 px) shown 225 ms early finishes its last steps a round sooner beside the
    # others, so in round 4 the 2,048 px q0 gets the whole block for its last two steps: 5 met, not 4
    inst = _instance([(2048, 0.0, 4414), (1024, 0.0, 3539), (512, 1800.0, 4875), (2048, 2700.0, 9614),
                      (1024, 2700.0, 6471)])
    met = {}
    # (the round model before remaining steps were valued convexly: the margin's effect on its own)
    for name in ("cpsat[convex=0]", "cpsat[convex=0;margin=1024:225]"):
        res = tetriopt.solve(inst, tetriopt.make_policy(name, **CPSAT))
        met[name] = {o.id for o in res.requests if o.met}
    assert met["cpsat[convex=0]"] == {"q1", "q2", "q3", "q4"}
    assert met["cpsat[convex=0;margin=1024:225]"] == {"q0", "q1", "q2", "q3", "q4"}


def test_no_margin_where_the_fastest_degree_is_the_whole_cluster():
    inst = _instance([(2048, 0.0, 9000.0), (1024, 0.0, 9000.0)])
    s = _states(TetriServe(), inst)[0]
    out = {q.id: q.deadline_us for q in shown(s, Shown(((1024, 225_000), (2048, 450_000)))).requests}
    assert out == {"q0": 9_000_000, "q1": 8_775_000}  # 2048 px: one 8-GPU block, not shown early
    solo = {q.id: q.deadline_us for q in shown(s, Shown(((2048, 450_000),), solo=True)).requests}
    assert solo["q0"] == 8_550_000


def test_burst_admits_what_the_blocks_carry_and_gives_up_the_rest():
    from tetriopt import RequestState, RoundState
    from tetriopt.policies import burst
    # 16 GPUs = two 8-GPU blocks; four new 2,048 px requests due in 4.5 s need 4 block-rounds each
    # (6 steps a round at degree 8): the blocks carry two of them
    wide = tuple(RequestState(f"w{i}", 2048, 2048, remaining_steps=20, deadline_us=4_500_000 + i * 1000) for i in range(4))
    s = RoundState(now_us=0, round_us=900_000, cluster=tetriopt.make_cluster(16), profile=tetriopt.load_profile("flux.1-dev-h100"),
                   degrees=(1, 2, 4, 8), requests=wide + (RequestState("s0", 512, 512, remaining_steps=20, deadline_us=1_900_000),))
    ids = {r.id for r in s.requests}
    assert burst.give_up(s, ids, set()) == {"w2", "w3"}  # the latest deadlines go
    assert burst.give_up(s, {"w0", "s0"}, set()) == set()  # one new wide request is no burst
    assert burst.give_up(s, {"w2", "w3"}, {"w0", "w1"}) == {"w2", "w3"}  # the kept ones hold the blocks
    shown_late = burst.late(s, {"w2", "w3"})
    assert [r.deadline_us for r in shown_late.requests] == [4_500_000, 4_501_000, 0, 0, 1_900_000]
    p = tetriopt.make_policy("tetriserve[burst=1]")
    p.plan(s)
    assert p._given_up == {"w2", "w3"} and set(p._kept) == {"w0", "w1", "s0"}
