"""Batching and immediate starts (issue 13): plans stay valid, the checker catches broken batches,
the round model with batch options is never worse than without, and the bound of the extended
model stays above every policy with the features on (and the old bound above the old model)."""

from __future__ import annotations

import json
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import tetriopt
from tetriopt.bound import upper_bound
from tetriopt.instance import parse_instance, make_cluster
from tetriopt.plan import Assignment, RoundPlan, batch_error, check_plan
from tetriopt.policies import make_policy
from tetriopt.policies.formulation import build
from tetriopt.policies.formulation import complete
from tetriopt.state import RequestState, RoundState
from tetriopt.validate import validate_result
from tetriopt.workload import generate

from .conftest import refused

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ["cpsat", "greedy", "tetriserve", "tetriserve-placement", "fixed-sp-1", "rssp"]


def gen(model="sd3-medium-h200", gpus=8, n=40, rate=60.0, mix="uniform", scale=1.0, seed=0, steps=28):
    return parse_instance(generate(model, gpus, n, rate, mix=mix, slo_scale=scale, steps=steps, seed=seed),
                          name=f"{model}-{seed}")


def run(inst, policy, batching=True, immediate=True):
    opts = {"time_limit_ms": 100, "deterministic": True} if policy == "cpsat" else {}
    try:
        res = tetriopt.solve(inst, make_policy(policy, batching=batching, **opts), immediate_start=immediate)
    except tetriopt.InputError as e:
        if refused(policy, e):
            return None
        raise
    errs = validate_result(inst, res.to_json())
    assert not errs, f"{policy}: {errs[:3]}"
    return res


@pytest.mark.parametrize("policy", ["cpsat", "greedy", "tetriserve"])
def test_batching_policies_batch_small_same_size_requests_validly(policy):
    # SD3 on H200 is launch-bound up to 1024 px: under load, same-size requests share steps
    inst = gen(rate=120.0, n=50)
    res = run(inst, policy)
    assert res.summary.get("batched_assignments", 0) > 0
    assert res.summary.get("immediate_starts", 0) > 0
    for _, a in res.assignments:
        if a.batch:
            r = {q.id: q for q in inst.requests}
            assert len({(r[i].width, r[i].height) for i in a.requests}) == 1
            if policy == "tetriserve":  # selective batching: small resolutions only
                assert r[a.request].width * r[a.request].height <= 512 * 512


def test_old_output_unchanged_without_the_features():
    inst = gen(n=15, rate=30.0)
    out = run(inst, "cpsat", batching=False, immediate=False).to_json()
    assert not any("batch" in a or "immediate" in a for a in out["assignments"])
    assert "batched_assignments" not in out["summary"] and "immediate_starts" not in out["summary"]


def test_immediate_start_begins_at_arrival_on_an_idle_cluster():
    inst = parse_instance({"model": "flux.1-dev-h100", "cluster": {"gpus": 8}, "round_ms": 900, "requests": [
        {"id": "a", "arrival_ms": 450, "deadline_ms": 1950, "width": 256, "height": 256, "steps": 28}]})
    late = run(inst, "cpsat", batching=False, immediate=False)
    assert not late.requests[0].met  # waits for the 900 ms boundary: 900 + 28 x 40 + 5.3 > 1950
    res = run(inst, "cpsat", batching=False, immediate=True)
    first = res.assignments[0][1]
    assert first.immediate and first.start_us == 450_000 and first.degree == 1
    assert res.requests[0].met


def state_with(reqs, gpus=2, profile="sd3-medium-h200"):
    return RoundState(now_us=0, round_us=250_000, cluster=make_cluster(gpus), profile=tetriopt.load_profile(profile),
                      degrees=(1, 2), requests=tuple(reqs))


def test_checker_rejects_broken_batches():
    reqs = [RequestState("a", 1024, 1024, 10, 5_000_000), RequestState("b", 1024, 1024, 10, 5_000_000),
            RequestState("c", 512, 512, 10, 5_000_000)]
    st_ = state_with(reqs)
    t2 = st_.step_us(reqs[0], 1, 2)
    enc = st_.profile.text_encode_us  # neither has started: each member's text encode runs in the batch's task
    ok = Assignment("a", (0,), 3, 0, 3 * t2 + 2 * enc, batch=("b",))
    assert batch_error(st_, ok) is None
    assert "mixes resolutions" in batch_error(st_, Assignment("a", (0,), 3, 0, 3 * t2, batch=("c",)))
    assert "twice" in batch_error(st_, Assignment("a", (0,), 3, 0, 3 * t2, batch=("a",)))
    assert "profile says" in batch_error(st_, Assignment("a", (0,), 3, 0, 3 * st_.step_us(reqs[0], 1), batch=("b",)))
    assert "not pending" in batch_error(st_, Assignment("a", (0,), 3, 0, 3 * t2, batch=("zz",)))
    # the one plan checker applies the batch rules, and counts a member's steps like its own
    assert check_plan(st_, RoundPlan((ok,), "test")) is None
    assert "mixes" in check_plan(st_, RoundPlan((Assignment("a", (0,), 3, 0, 3 * t2, batch=("c",)),), "test"))
    alone_b = Assignment("b", (1,), 3, 1, 1 + 3 * st_.step_us(reqs[1], 1))  # b encoded in the batch, before it
    assert "two assignments at once" in check_plan(st_, RoundPlan((ok, alone_b), "test"))
    # the independent validator: a batch priced as one request, and a mid-round start not marked immediate
    inst = gen(n=12, rate=120.0)
    out = run(inst, "greedy").to_json()
    bad = json.loads(json.dumps(out))
    a = next(a for a in bad["assignments"] if a.get("batch"))
    a["end_ms"] = a["start_ms"] + (a["end_ms"] - a["start_ms"]) / 2
    assert any("profile says" in e for e in validate_result(inst, bad))
    bad = json.loads(json.dumps(out))
    a = next(a for a in bad["assignments"] if a.get("immediate"))
    del a["immediate"]
    assert any("began before" in e for e in validate_result(inst, bad))


def test_round_model_with_batches_is_never_worse_than_without():
    # four 512 px SD3 requests that each need all 6 steps that fit in a 250 ms round at batch 1
    # but only two GPUs: unbatched, two must wait; batched, all four progress
    reqs = [RequestState(f"r{i}", 512, 512, 28, 1_300_000 + 10_000 * i) for i in range(4)]
    st_ = state_with(reqs)
    plain = make_policy("cpsat", time_limit_ms=2000, deterministic=True).plan(st_)
    batched = make_policy("cpsat", time_limit_ms=2000, deterministic=True, batching=True).plan(st_)
    assert batched.status == "OPTIMAL" and plain.status == "OPTIMAL"
    assert len(batched.kept) > len(plain.kept)
    assert any(a.batch for a in batched.assignments)
    # and the unbatched optimum is a solution of the batched model with the same objective value
    rm_b = build(st_, batching=True)
    rm_p = build(st_)
    dec = [(a.request, a.gpus, a.steps) for a in plain.assignments]
    sol_b, sol_p = complete(rm_b, dec, plain.kept), complete(rm_p, dec, plain.kept)
    assert sol_b is not None and rm_b.model.value(sol_b) == rm_p.model.value(sol_p)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seed=st.integers(0, 10_000), n=st.integers(8, 25), rate=st.sampled_from([12.0, 60.0, 120.0]),
       mix=st.sampled_from(["uniform", "skewed"]), scale=st.sampled_from([1.0, 1.2]),
       model=st.sampled_from(["flux.1-dev-h100", "sd3-medium-h200"]))
def test_extended_bound_never_below_any_policy_with_the_features(seed, n, rate, mix, scale, model):
    inst = gen(model=model, n=n, rate=rate, mix=mix, scale=scale, seed=seed)
    old = upper_bound(inst, time_limit_s=10)
    new = upper_bound(inst, time_limit_s=10, arrival_visible=True, batching=True)
    assert old.met_bound <= new.met_bound
    for p in POLICIES:
        plain, both = run(inst, p, batching=False, immediate=False), run(inst, p)
        assert plain is None or plain.summary["met"] <= old.met_bound, p
        assert both is None or both.summary["met"] <= new.met_bound, p


def test_cli_switches():
    f = ROOT / "instances" / "quickstart.json"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tetriopt.cli", *args], capture_output=True, text=True, cwd=ROOT)

    out = cli("solve", str(f), "--batching", "--immediate-start", "--deterministic", "--time-limit-ms", "50",
              "--json", "-")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert not validate_result(tetriopt.load_instance(str(f)), res)
    b_old = json.loads(cli("bound", str(f), "--no-immediate-start", "--no-batching", "--json", "-").stdout)
    b_new = json.loads(cli("bound", str(f), "--json", "-").stdout)  # the default: the extended model
    assert b_old["met_bound"] <= b_new["met_bound"] and res["summary"]["met"] <= b_new["met_bound"]
    # the switches are on by default: solve without them runs the same plan as with them
    plain = cli("solve", str(f), "--deterministic", "--time-limit-ms", "50", "--no-timings", "--json", "-")
    feats = cli("solve", str(f), "--batching", "--immediate-start", "--deterministic", "--time-limit-ms", "50",
                "--no-timings", "--json", "-")
    paper = cli("solve", str(f), "--no-batching", "--no-immediate-start", "--deterministic", "--time-limit-ms", "50",
                "--no-timings", "--json", "-")
    assert plain.stdout == feats.stdout and any(a.get("immediate") for a in json.loads(plain.stdout)["assignments"])
    assert not any(a.get("immediate") for a in json.loads(paper.stdout)["assignments"])


def test_reserve_idle_ends_hopeless_work_by_mid_round():
    """cpsat with immediate starts: work of a request that can no longer meet its deadline ends by
    the middle of the round (at least one step), so a 2048 px arrival finds a whole set idle; a
    given-up request that can still make it runs in full, and none runs beside kept work."""
    from tetriopt.immediate import reserve_idle
    from tetriopt.lookahead import outlook
    from tetriopt.plan import make_plan

    prof = tetriopt.load_profile("sd3-medium-a40")
    late = RequestState("late", 2048, 2048, 20, deadline_us=1_000_000, arrival_us=0, location=(0, 1))
    live = RequestState("live", 512, 512, 28, deadline_us=60_000_000, arrival_us=0)
    st_ = RoundState(now_us=0, round_us=1_850_000, cluster=make_cluster(4, [[0, 1], [2, 3]]), profile=prof,
                     degrees=(1, 2, 4), requests=(late, live))
    assert not outlook(st_, late).alive and outlook(st_, live).alive
    plan = make_plan(st_, [("late", (0, 1), 3), ("live", (2,), 28)], backend="cpsat", kept=())
    assert max(a.end_us for a in plan.assignments if a.request == "late") > 925_000
    out = reserve_idle(st_, plan)
    assert check_plan(st_, out) is None
    got = {a.request: a for a in out.assignments}
    assert got["late"].steps == 1 and got["late"].gpus == (0,)  # 1 step at its cheapest degree, 1: 1.08 s
    assert got["live"].steps == 28
    only_kept = reserve_idle(st_, replace(plan, kept=("live",)))
    assert [a.request for a in only_kept.assignments] == ["live"]


def test_reserve_idle_serves_hopeless_work_oldest_first():
    """In a round without kept work, requests that can no longer make it run in arrival order at
    their cheapest degree, one step where it ends past mid-round, whatever the model picked: the
    model valued them all alike, and the oldest waited to the end of the workload (p99 latency
    943 s on A40 skewed SLO 1.0, docs/evaluation.md E6)."""
    from tetriopt.immediate import reserve_idle
    from tetriopt.plan import make_plan

    prof = tetriopt.load_profile("sd3-medium-a40")
    lost = tuple(RequestState(f"l{i}", 2048, 2048, 20, deadline_us=100_000 * i + 1, arrival_us=100_000 * i,
                              location=(0, 1, 2, 3)) for i in range(6))
    st_ = RoundState(now_us=2_000_000, round_us=1_850_000, cluster=make_cluster(4, [[0, 1], [2, 3]]), profile=prof,
                     degrees=(1, 2, 4), requests=lost[::-1])
    plan = make_plan(st_, [("l5", (0, 1, 2, 3), 2)], backend="cpsat", kept=())
    out = reserve_idle(st_, plan)
    assert check_plan(st_, out) is None
    # degree 1 is the cheapest (1.08 s a step against 2 x 0.57 and 4 x 0.36): the four oldest, one step each
    assert sorted((a.request, a.gpus, a.steps) for a in out.assignments) == [
        ("l0", (0,), 1), ("l1", (1,), 1), ("l2", (2,), 1), ("l3", (3,), 1)]


def test_pack_idle_leaves_a_whole_block_idle():
    """Immediate starts' tie-break: two 512 px requests planned on GPUs 0 and 2 (each 2-GPU block
    and the 4-GPU set busy) tie on the round objective with both on one 2-GPU block; pack_idle
    picks the latter, so a mid-round arrival finds the other block idle from the round's start. A move to
    or from a request's location (its stay bonus) is never made, and the real cpsat plan with it
    has the same objective as without and leaves at least as much whole-block time idle."""
    from tetriopt.immediate import idle_blocks_us, pack_idle
    from tetriopt.plan import make_plan
    from tetriopt.policies.mip import MipPolicy

    prof = tetriopt.load_profile("sd3-medium-a40")
    a = RequestState("a", 512, 512, 5, deadline_us=60_000_000, arrival_us=0)
    b = RequestState("b", 512, 512, 5, deadline_us=60_000_000, arrival_us=0)
    st_ = RoundState(now_us=0, round_us=1_850_000, cluster=make_cluster(4, [[0, 1], [2, 3]]), profile=prof,
                     degrees=(1, 2, 4), requests=(a, b))
    plan = make_plan(st_, [("a", (0,), 5), ("b", (2,), 5)], backend="cpsat", kept=("a", "b"))
    out = pack_idle(st_, plan)
    assert check_plan(st_, out) is None
    used = {g for x in out.assignments for g in x.gpus}
    assert used in ({0, 1}, {2, 3}) and idle_blocks_us(st_, out) > idle_blocks_us(st_, plan)
    assert sorted(x.steps for x in out.assignments) == [5, 5]
    held = replace(st_, requests=(a, replace(b, location=(2,))))
    kept_put = pack_idle(held, make_plan(held, [("a", (0,), 5), ("b", (2,), 5)], backend="cpsat", kept=("a", "b")))
    assert {x.request: x.gpus for x in kept_put.assignments}["b"] == (2,)
    plans = [MipPolicy(time_limit_ms=2000, seed=0, workers=1, deterministic=True, immediate_start=True,
                       pack=p).plan(st_) for p in (True, False)]
    assert plans[0].objective == plans[1].objective
    assert idle_blocks_us(st_, plans[0]) >= idle_blocks_us(st_, plans[1])
    assert len({g for x in plans[0].assignments for g in x.gpus}) <= 2
