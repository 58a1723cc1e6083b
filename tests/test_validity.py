"""Every policy's plan passes the independent validator, on shipped and on random instances."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tetriopt
from tetriopt.validate import validate_result

from .conftest import HEURISTICS, INSTANCES, solve_checked

MIP = [("cpsat", {"time_limit_ms": 200, "workers": 1}), ("pulp", {"time_limit_ms": 300})]


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.stem)
def test_shipped_instances_heuristics(path):
    inst = tetriopt.load_instance(path)
    for policy in HEURISTICS:
        solve_checked(inst, policy)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if "overload" in p.stem else p
                                  for p in INSTANCES], ids=lambda p: p.stem)
def test_shipped_instances_cpsat(path):
    solve_checked(tetriopt.load_instance(path), "cpsat", time_limit_ms=200, workers=1)


def test_quickstart_pulp():
    solve_checked(tetriopt.load_instance(INSTANCES[-1].parent / "quickstart.json"), "pulp", time_limit_ms=500)


@st.composite
def instances(draw):
    model = draw(st.sampled_from(["flux.1-dev-h100", "sd3-medium-a40", "sd3-medium-h200"]))
    prof = tetriopt.load_profile(model)
    gpus = draw(st.sampled_from([g for g in (1, 2, 4, 8) if g >= 1]))
    islands = None
    if gpus >= 4 and draw(st.booleans()):
        islands = [list(range(i, i + 2)) for i in range(0, gpus, 2)]
    sizes = [256, 512, 1024, 2048]
    n = draw(st.integers(1, 10))
    reqs = []
    for i in range(n):
        arr = draw(st.integers(0, 6000))
        s = draw(st.sampled_from(sizes))
        w = draw(st.sampled_from([s, s // 2])) if s > 256 else s
        reqs.append({"id": f"x{i}", "arrival_ms": arr, "deadline_ms": arr + draw(st.integers(0, 12000)),
                     "width": w, "height": s, "steps": draw(st.integers(1, 30))})
    data = {"model": model, "cluster": {"gpus": gpus}, "requests": reqs}
    if islands:
        data["cluster"]["islands"] = islands
    # from just long enough for every size's fastest last step + encode + decode to long (the profile's
    # round is too short for 2048 px on one or two GPUs: its step and decode take 1277 ms on FLUX H100)
    shortest = max(min(v for k, v in p.step_us.items() if k <= gpus) + p.vae_decode_us + prof.text_encode_us
                   for p in prof.points) / 1000
    if draw(st.booleans()) or shortest > prof.default_round_us / 1000:
        data["round_ms"] = shortest + draw(st.integers(0, 1200))
    return tetriopt.parse_instance(data, name="random")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_random_instances_every_policy(inst):
    for policy in ["greedy", "tetriserve", "tetriserve-schedule", "tetriserve-placement"]:
        solve_checked(inst, policy)
    for k in (1, 2, 4, 8):
        if k in inst.degrees and inst.cluster.sets(k):
            try:
                solve_checked(inst, f"fixed-sp-{k}")
            except tetriopt.InputError as e:  # a step longer than the round: refused, clearly
                assert "longer than the round" in str(e)
    solve_checked(inst, "cpsat", time_limit_ms=100, workers=1)


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(instances())
def test_random_instances_pulp(inst):
    solve_checked(inst, "pulp", time_limit_ms=300)


def test_short_rounds_where_big_images_need_several_gpus_per_step():
    """600 ms rounds: a 2048 px step fits only on 2+ GPUs; late requests must still run."""
    from tetriopt.workload import generate

    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 8, 60, 24.0, mix="skewed", seed=5, round_ms=600),
                                   name="round600")
    for policy in ["tetriserve", "tetriserve-schedule", "greedy", "fixed-sp-2", "fixed-sp-8"]:
        solve_checked(inst, policy)
    solve_checked(inst, "cpsat", time_limit_ms=100, workers=1)


def test_round_shorter_than_any_step_is_refused():
    data = {"model": "flux.1-dev-h100", "cluster": {"gpus": 2}, "round_ms": 300,
            "requests": [{"id": "a", "arrival_ms": 0, "deadline_ms": 9000, "width": 2048, "height": 2048, "steps": 5}]}
    with pytest.raises(tetriopt.InputError, match="round_ms"):
        tetriopt.parse_instance(data)


def test_one_ms_time_limit_falls_back_and_stays_valid():
    inst = tetriopt.load_instance(INSTANCES[-1].parent / "quickstart.json")
    res = solve_checked(inst, "cpsat", time_limit_ms=1)
    busy = [r for r in res.rounds if r.pending]
    assert busy and all(r.status == "FALLBACK" for r in busy)
    assert all(r.backend in ("greedy", "tetriserve", "previous-round") for r in busy)


def test_validator_catches_broken_plans():
    inst = tetriopt.load_instance(INSTANCES[-1].parent / "quickstart.json")
    out = tetriopt.solve(inst, "greedy").to_json()
    assert validate_result(inst, out) == []
    bad = json.loads(json.dumps(out))
    bad["assignments"][0]["end_ms"] += 1  # wrong duration
    assert any("lasts" in e for e in validate_result(inst, bad))
    bad = json.loads(json.dumps(out))
    a = bad["assignments"][0]
    twin = dict(a, request=bad["assignments"][1]["request"])
    bad["assignments"].append(twin)  # double booking + extra steps
    errs = validate_result(inst, bad)
    assert any("double-booked" in e for e in errs) and any("steps done" in e for e in errs)
    bad = json.loads(json.dumps(out))
    bad["requests"][0]["met"] = not bad["requests"][0]["met"]
    assert any("met=" in e for e in validate_result(inst, bad))
    bad = json.loads(json.dumps(out))
    bad["assignments"][0]["gpus"] = [1, 2]
    assert any("aligned" in e or "lasts" in e for e in validate_result(inst, bad))
