"""Admission by cost density under overload (policies/horizon.py `Quota`, `cpsat[quota=1]`): a no-op
at light load; under overload the cheap classes are served whole and new admissions of the
marginal class are capped by its share, in the model and in its warm starts (real CP-SAT,
deterministic clock, pinned seeds)."""

from __future__ import annotations

import math

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.plan import decisions_of
from tetriopt.policies.formulation import build, complete
from tetriopt.policies.horizon import Quota
from tetriopt.policies.mip import MipPolicy
from tetriopt.policies.tetriserve import TetriServe
from tetriopt.workload import generate

PROF = tetriopt.load_profile("flux.1-dev-h100")
R = 900_000
BIG = (2048, 2048)


def state(*reqs, now=0, gpus=16):
    return RoundState(now_us=now, round_us=R, cluster=tetriopt.make_cluster(gpus), profile=PROF, degrees=(1, 2, 4, 8),
                      requests=reqs, round_index=now // R)


def arrivals(k: int, big: int, small: int) -> list[RequestState]:
    """Round k's arrivals: `big` 2048 px (5 s) and `small` 256 px (1.5 s) requests of 20 steps."""
    now = k * R
    return ([RequestState(f"b{k}.{i}", 2048, 2048, 20, arrival_us=now - 1000 * i - 1, deadline_us=now + 5_000_000 - 1000 * i)
             for i in range(big)]
            + [RequestState(f"s{k}.{i}", 256, 256, 20, arrival_us=now - 1000 * i - 1, deadline_us=now + 1_500_000)
               for i in range(small)])


def overloaded(q: Quota, rounds: int = 8, gpus: int = 16) -> RoundState:
    """Feed `rounds` rounds of 2 big and 4 small arrivals (each pending one round); the last state."""
    for k in range(rounds):
        s = state(*arrivals(k, 2, 4), now=k * R, gpus=gpus)
        q.observe(s)
    return s


def test_at_light_load_it_is_a_no_op():
    q = Quota()
    for k in range(8):
        q.observe(state(*arrivals(k, 0, 2) + (arrivals(k, 1, 0) if k % 4 == 0 else []), now=k * R))
    assert q.shares(state(now=8 * R)) == {}
    # a light workload plays the very same plans with and without the quota
    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 16, 30, 60.0, seed=1), name="light")
    runs = [tetriopt.solve(inst, tetriopt.make_policy(p, time_limit_ms=50, seed=0, workers=1, deterministic=True))
            for p in ("cpsat", "cpsat[quota=1]")]
    assert runs[0].assignments == runs[1].assignments


def test_under_overload_cheap_classes_are_served_whole_and_the_marginal_one_in_part():
    q = Quota()
    s = overloaded(q)
    shares = q.shares(s)
    # 16 GPUs x 8 rounds hold every 256 px arrival (about 0.9 GPU-s each) but a fraction of the
    # 2048 px ones (about 26 GPU-s each on 8 GPUs): 32 GPU-s of small, 115 GPU-s of room
    assert set(shares) == {BIG}
    assert 0 < shares[BIG] < 16 * 0.3
    small_only = Quota(capacity=0.1)
    overloaded(small_only)
    got = small_only.shares(s)
    assert got[BIG] == 0.0 and (256, 256) in got  # even the cheap class in part: the big one not at all


def test_new_admissions_of_the_marginal_class_are_capped_in_the_model_and_its_warm_starts():
    """Four new 2048 px requests on 16 GPUs after 8 overloaded rounds in which 3 were admitted: the
    quota allows ceil(share) - 3 more. Without it the model keeps three (the fluid joint test: the
    cluster has two 8-GPU blocks); with it the allowance, and TetriServe's plan completed as a warm start respects the cap too."""
    reqs = tuple(RequestState(f"n{i}", 2048, 2048, 20, arrival_us=8 * R - 1, deadline_us=8 * R + 5_000_000 + i)
                 for i in range(4))
    s = state(*reqs, now=8 * R)
    free = MipPolicy(time_limit_ms=100, deterministic=True)
    assert len(set(free.plan(s).kept) & {r.id for r in reqs}) == 3

    pol = MipPolicy(time_limit_ms=100, deterministic=True, quota=True)
    overloaded(pol._quota)
    past = state(*arrivals(7, 3, 0), now=7 * R)
    pol._quota.record(past, tuple(r.id for r in past.requests))  # 3 admitted in the window
    allow = math.ceil(pol._quota.shares(s)[BIG]) - 3
    assert 0 <= allow < 2
    rm = build(s)
    pol._quota.add(rm)
    assert rm.caps == [(tuple(r.id for r in reqs), allow)]
    ts = TetriServe().plan(s)
    assert len(ts.kept) > allow  # TetriServe keeps more: completed, the cap drops the rest
    sol = complete(rm, decisions_of(ts), ts.kept)
    assert sol is not None and sum(sol[rm.keep[r.id]] for r in reqs) == allow

    plan = pol.plan(s)
    assert len(set(plan.kept) & {r.id for r in reqs}) == allow
