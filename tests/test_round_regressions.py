"""Rounds that once broke the simulation: a fallback round under a backlog assigned requests the
heuristic plan already held a second time (remaining steps went negative, then the simulator
stopped with "ran nothing for 1001 rounds")."""

from __future__ import annotations

from pathlib import Path

import pytest

import tetriopt
from tetriopt.validate import validate_result
from tetriopt.workload import generate

ROOT = Path(__file__).resolve().parents[1]
REPRO = next((p for p in (ROOT / "shared" / "repro", ROOT.parent / "shared" / "repro") if p.is_dir()), None)


def test_fallback_rounds_under_a_backlog_assign_each_request_once():
    # issue 12's repro: 8 GPUs, ~33 pending, a 1 ms limit so that every round falls back
    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 8, 320, 142.2, seed=0), name="backlog")
    res = tetriopt.solve(inst, "cpsat", time_limit_ms=1, seed=0, workers=1)
    assert not validate_result(inst, res.to_json())
    for rd in {rd for rd, _ in res.assignments}:
        ids = [a.request for r, a in res.assignments if r == rd]
        assert len(ids) == len(set(ids)), rd


@pytest.mark.slow
@pytest.mark.skipif(REPRO is None, reason="shared/repro not in this checkout")
def test_server_overload_repro_solves():
    inst = tetriopt.load_instance(REPRO / "overload-loadgen-r5.json")
    res = tetriopt.solve(inst, "cpsat", time_limit_ms=180, seed=0, workers=1)
    assert not validate_result(inst, res.to_json())


def _backlog_state(gpus: int, pending: int):
    """A round under a backlog: random sizes, progress, deadlines and latent locations (seeded)."""
    import random

    from tetriopt import RequestState, RoundState, load_profile, make_cluster
    rng, cluster, now = random.Random(7), make_cluster(gpus), 60_000_000
    reqs = []
    for i in range(pending):
        s = rng.choice([256, 512, 1024, 2048])
        k = rng.choice([1, 2, 4, 8])
        reqs.append(RequestState(f"r{i}", s, s, remaining_steps=rng.randint(1, 20),
                                 deadline_us=now + rng.randint(500_000, 20_000_000), arrival_us=now - 1_000_000,
                                 location=rng.choice(cluster.sets(k)) if rng.random() < 0.5 else ()))
    prof = load_profile("flux.1-dev-h100")
    return RoundState(now_us=now, round_us=prof.default_round_us, cluster=cluster, profile=prof,
                      degrees=(1, 2, 4, 8), requests=tuple(reqs))


def test_model_building_stops_at_its_deadline():
    from tetriopt.policies.formulation import OutOfTime, build
    st = _backlog_state(8, 64)
    with pytest.raises(OutOfTime):
        build(st, deadline=0.0)  # a deadline long past: no wall-clock measurement involved
    assert build(st, deadline=None).model.names  # and without one it builds


@pytest.mark.parametrize("gpus,pending", [(8, 300), (64, 400)])
def test_a_limit_too_short_for_anything_still_gives_a_valid_plan(gpus, pending):
    from tetriopt.plan import check_plan
    from tetriopt.policies.mip import MipPolicy
    st = _backlog_state(gpus, pending)
    pol = MipPolicy("cpsat", time_limit_ms=0.001, seed=0, workers=1)
    for _ in range(2):  # the second round runs on the stage costs the first one measured
        plan = pol.plan(st)
        assert check_plan(st, plan) is None
        assert plan.assignments  # greedy always answers
