"""SD3-Medium on 4x A40 (NVLink pairs), skewed mix, SLO scale 1.5 (docs/evaluation.md, section C):
the round model is decided every round. The rounds counted as FALLBACK there are the rollout's
(rollout.py: TetriServe's plan met more known requests when both were played forward), not rounds
where CP-SAT ran out of time or the budgeting skipped the model. Real CP-SAT, deterministic clock,
one worker."""

from __future__ import annotations

from tetriopt import bench as B
from tetriopt.plan import PlanStatus
from tetriopt.policies.mip import MipPolicy
from tetriopt.policies.tetriserve import TetriServe
from tetriopt.simulate import simulate

# 30 requests (seed 3): the rollout hands one round to TetriServe's plan and meets one more for it
INST = B.points(models=("sd3-medium-a40",), gpus=4, islands=2, mixes=("skewed",), slo_scales=(1.5,),
                rates=(12,), seeds=[3], n=30)[0].instance()


def _cpsat(**kw) -> MipPolicy:
    return MipPolicy("cpsat", time_limit_ms=200, deterministic=True, seed=0, workers=1, **kw)


def test_without_the_rollout_every_round_is_the_models():
    """No round falls back: each plan is CP-SAT's or a warm start the certificates prove optimal."""
    res = simulate(INST, _cpsat(rollout=False))
    assert res.summary["fallback_rounds"] == 0
    assert all(r.status in (PlanStatus.OPTIMAL, PlanStatus.FEASIBLE) for r in res.rounds)
    assert not any("time limit" in r.note for r in res.rounds)


def test_the_only_fallback_rounds_are_the_rollouts_and_they_meet_more():
    on = simulate(INST, _cpsat())
    fb = [r for r in on.rounds if r.status == PlanStatus.FALLBACK]
    assert fb, "the rollout chose TetriServe's plan in no round: the instance no longer shows it"
    assert all(r.backend == "tetriserve" and r.note.startswith("rollout: tetriserve's plan meets") for r in fb)
    assert on.summary["rollout_rounds"] == on.summary["fallback_rounds"] == len(fb)  # counted apart in the summary
    assert not any("time limit" in r.note for r in on.rounds)
    off = simulate(INST, _cpsat(rollout=False)).summary["met"]
    ts = simulate(INST, TetriServe()).summary["met"]
    assert on.summary["met"] > off >= ts, (on.summary["met"], off, ts)  # 26, 25, 22
