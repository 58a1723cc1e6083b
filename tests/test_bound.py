"""The hindsight upper bound (tetriopt.bound) is never below what a valid plan achieves.

1. Tiny instances: an exhaustive search over the simulator's plan space (rounds, aligned GPU
   sets, whole steps inside a round, one set per request per round, any order of the tasks inside
   a round) finds the true maximum of met deadlines; the bound must be >= it, and every policy's
   result must be <= it (which checks the search covers the policies' plan space).
2. Generated workloads (hypothesis): the bound is >= every policy's met count.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import json
import random
import subprocess
import sys
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import tetriopt
from tetriopt.bound import upper_bound
from tetriopt.instance import parse_instance
from tetriopt.workload import generate

from .conftest import solve_or_refused

TINY_PROFILE = {
    "name": "tiny", "model": "tiny", "gpu": "test", "degrees": [1, 2], "default_round_ms": 100,
    "points": [
        {"width": 256, "height": 256, "step_ms": {"1": 30, "2": 24}, "vae_decode_ms": 4},
        {"width": 512, "height": 512, "step_ms": {"1": 70, "2": 40}, "vae_decode_ms": 9},
    ],
}


TINY4_PROFILE = {
    "name": "tiny4", "model": "tiny4", "gpu": "test", "degrees": [1, 2, 4], "default_round_ms": 100,
    "points": [
        {"width": 256, "height": 256, "step_ms": {"1": 30, "2": 24, "4": 22}, "vae_decode_ms": 4},
        {"width": 512, "height": 512, "step_ms": {"1": 90, "2": 50, "4": 30}, "vae_decode_ms": 9},
    ],
}


@pytest.fixture(scope="module")
def tiny4_profile(tmp_path_factory):
    p = tmp_path_factory.mktemp("prof4") / "tiny4.json"
    p.write_text(json.dumps(TINY4_PROFILE))
    return str(p)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    p = tmp_path_factory.mktemp("prof") / "tiny.json"
    p.write_text(json.dumps(TINY_PROFILE))
    return str(p)


def tiny_instance(profile_path: str, seed: int, gpus: int = 2):
    rng = random.Random(seed)
    reqs = []
    if gpus == 2:
        for i in range(rng.choice([3, 3, 4])):
            size = rng.choice([256, 512])
            arr = rng.choice([0, 0, 0, 60, 100])
            reqs.append({"id": f"q{i}", "arrival_ms": arr, "deadline_ms": arr + rng.randint(80, 300),
                         "width": size, "height": size, "steps": rng.randint(1, 4)})
        round_ms = rng.choice([80, 100])
    else:  # 4 GPUs, mostly wide requests competing for the same blocks
        for i in range(4):
            size = rng.choice([256, 512, 512])
            arr = rng.choice([0, 0, 50])
            reqs.append({"id": f"q{i}", "arrival_ms": arr, "deadline_ms": arr + rng.randint(70, 220),
                         "width": size, "height": size, "steps": rng.randint(1, 3)})
        round_ms = 100  # every degree fits (tetriserve stalls when a late request's SP1 step does not)
    data = {"model": profile_path, "cluster": {"gpus": gpus}, "round_ms": round_ms, "requests": reqs}
    return parse_instance(data, name=f"tiny{seed}")


def brute_force_max_met(inst, immediate: bool = False) -> int:
    """Most deadlines met over every plan the simulator accepts (met requests only need to run);
    an assignment lasts its steps plus the text encode in the request's first one and the VAE
    decode in the one that finishes it, inside the round (RoundState.aux_us). `immediate`: a
    request may also run in the round it arrives in, from its arrival on (a superset of what
    the simulator's immediate starts allow: any GPUs, not only idle ones)."""
    R = inst.round_us
    reqs = list(inst.requests)
    dec = [inst.profile.vae_decode_us(r.width, r.height) for r in reqs]
    enc = inst.profile.text_encode_us
    options_by_deg = [(g, k) for k in inst.degrees for g in inst.cluster.sets(k)]
    last = max(r.deadline_us for r in reqs) // R + 1

    def start(i: int, j: int) -> int:
        return max(j * R, reqs[i].arrival_us) if immediate else j * R

    def meetable(i: int, j: int) -> bool:
        r = reqs[i]
        t = min(inst.step_us(r, k) for k in inst.degrees)
        seen = r.arrival_us < (j + 1) * R if immediate else r.arrival_us <= j * R
        return seen and start(i, j) + t + dec[i] <= r.deadline_us

    @lru_cache(maxsize=None)
    def best(j: int, rem: tuple[int, ...]) -> int:
        if j > last:
            return 0
        active = [i for i in range(len(reqs)) if rem[i] > 0 and meetable(i, j)]
        per = []
        for i in active:
            opts = [None]
            for g, k in options_by_deg:
                t = inst.step_us(reqs[i], k)
                for n in range(1, min(rem[i], R // t) + 1):
                    d = n * t + (enc if rem[i] == reqs[i].steps else 0) + (dec[i] if n == rem[i] else 0)
                    if d <= (j + 1) * R - start(i, j):
                        opts.append((g, d, n))
            per.append(opts)
        top = 0
        for combo in itertools.product(*per):
            tasks = [(i, o) for i, o in zip(active, combo) if o is not None]
            load: dict[int, int] = {}
            for _, (g, d, _) in tasks:
                for x in g:
                    load[x] = load.get(x, 0) + d
            if any(v > R for v in load.values()):
                continue
            new = list(rem)
            for i, (_, _, n) in tasks:
                new[i] -= n
            done = [i for i, _ in tasks if new[i] == 0]
            now_met = 0
            if done:  # best order of this round's tasks for the requests finishing now
                for perm in itertools.permutations(tasks):
                    clock: dict[int, int] = {}
                    ok, met = True, 0
                    for i, (g, d, _) in perm:
                        s = max([clock.get(x, j * R) for x in g] + [start(i, j)])
                        for x in g:
                            clock[x] = s + d
                        if s + d > (j + 1) * R:
                            ok = False
                            break
                        if new[i] == 0 and s + d <= reqs[i].deadline_us:
                            met += 1
                    if ok:
                        now_met = max(now_met, met)
            top = max(top, now_met + best(j + 1, tuple(new)))
        return top

    return best(0, tuple(r.steps for r in reqs))


POLICIES = ["tetriserve", "tetriserve-schedule", "greedy", "fixed-sp-1", "fixed-sp-2", "rssp"]


@pytest.mark.parametrize("seed", range(30))
def test_bound_vs_brute_force(tiny_profile, seed):
    inst = tiny_instance(tiny_profile, seed)
    truth = brute_force_max_met(inst)
    b = upper_bound(inst, time_limit_s=10)
    assert b.met_bound >= truth, f"bound {b.met_bound} below the true optimum {truth}"
    for p in POLICIES + ["cpsat"]:
        res = solve_or_refused(inst, p, **({"time_limit_ms": 200} if p == "cpsat" else {}))
        assert res is None or res.summary["met"] <= truth, f"{p} met {res.summary['met']} > brute force {truth}"


@pytest.mark.parametrize("seed", range(12))
def test_bound_vs_brute_force_four_gpus(tiny4_profile, seed):
    """Three block levels (1, 2, 4 GPUs): the block cut (5) at b = 2 and b = 4."""
    inst = tiny_instance(tiny4_profile, seed, gpus=4)
    truth = brute_force_max_met(inst)
    assert upper_bound(inst, time_limit_s=10).met_bound >= truth
    for p in ["tetriserve", "greedy", "fixed-sp-4", "rssp", "cpsat"]:
        assert tetriopt.solve(inst, p).summary["met"] <= truth, p


@pytest.mark.parametrize("seed", range(12))
def test_pieces_vs_brute_force(tiny_profile, seed, monkeypatch):
    """Components cut into pieces of at most two requests (`_solve_pieces`, for components too big
    to model whole): the sum of the pieces' bounds stays at or above the true optimum."""
    from tetriopt import bound

    inst = tiny_instance(tiny_profile, seed)
    monkeypatch.setattr(bound, "PIECE_MAX", 2)
    monkeypatch.setattr(bound, "PIECE", 2)
    assert upper_bound(inst, time_limit_s=10).met_bound >= brute_force_max_met(inst)


def test_bound_is_tight_on_most_tiny_instances(tiny_profile):
    """Not a validity property, but a bound that is never tight would be useless."""
    tight = sum(upper_bound(tiny_instance(tiny_profile, s)).met_bound == brute_force_max_met(tiny_instance(tiny_profile, s))
                for s in range(30))
    assert tight >= 29  # measured: 30 of 30 (60 of 60 over seeds 0-59; 57 of 60 before cuts (6)-(9))


def test_bound_excludes_hopeless_and_counts_capacity(tiny_profile):
    # two 512 px requests of 4 steps due in 200 ms: each alone needs 160 ms on both GPUs (degree 2)
    # or 280 ms on one; together they need 2 x 4 x 40 ms x 2 GPUs = 640 GPU-ms > 2 x 200 - decode.
    reqs = [{"id": f"q{i}", "arrival_ms": 0, "deadline_ms": 200, "width": 512, "height": 512, "steps": 4}
            for i in range(2)]
    reqs.append({"id": "late", "arrival_ms": 1, "deadline_ms": 60, "width": 256, "height": 256, "steps": 1})
    inst = parse_instance({"model": tiny_profile, "cluster": {"gpus": 2}, "round_ms": 100, "requests": reqs})
    b = upper_bound(inst)
    assert b.feasible_alone == 2  # "late" is visible only at 100 ms, after its deadline
    assert b.met_bound == brute_force_max_met(inst) == 1
    assert b.to_json()["slo_attainment_bound"] == pytest.approx(1 / 3, abs=1e-6)


def test_a_set_busy_past_the_shortest_step_leaves_its_gpus_idle(tiny_profile):
    """Cut (12). On 4 GPUs (degrees 1, 2) two 512 px requests due at 150 ms must each run two steps
    on a pair of GPUs in round 0 (80 of its 100 ms; one step and the decode fit in round 1), and a
    256 px request due at 90 ms must run its step and decode (34 ms, or 28 ms on a pair) in round 0.
    In GPU-time and per block they fit (80 x 4 + 34 <= 400), but the 20 ms each GPU has left holds
    no step (the shortest any request has is 24 ms): at most two are met. Without the cut the
    bound was 3."""
    reqs = [{"id": f"a{i}", "arrival_ms": 0, "deadline_ms": 150, "width": 512, "height": 512, "steps": 3}
            for i in range(2)]
    reqs.append({"id": "b", "arrival_ms": 0, "deadline_ms": 90, "width": 256, "height": 256, "steps": 1})
    inst = parse_instance({"model": tiny_profile, "cluster": {"gpus": 4}, "round_ms": 100, "requests": reqs})
    assert brute_force_max_met(inst) == 2
    assert upper_bound(inst, time_limit_s=10).met_bound == 2
    assert upper_bound(inst, time_limit_s=10, one_set=False).met_bound == 3  # (12) needs one set a round


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seed=st.integers(0, 10_000), n=st.integers(5, 30), rate=st.sampled_from([12.0, 30.0, 60.0, 120.0]),
       mix=st.sampled_from(["uniform", "skewed"]), scale=st.sampled_from([0.8, 1.0, 1.2, 1.5]),
       gpus=st.sampled_from([4, 8]), round_ms=st.sampled_from([None, 1500.0]))
def test_bound_never_below_any_policy(seed, n, rate, mix, scale, gpus, round_ms):
    inst = parse_instance(generate("flux.1-dev-h100", gpus, n, rate, mix=mix, slo_scale=scale, seed=seed,
                                   round_ms=round_ms), name="gen")
    b = upper_bound(inst, time_limit_s=10)
    assert b.met_bound <= b.feasible_alone <= n
    for p in ["tetriserve", "tetriserve-placement", "greedy", "fixed-sp-1", "fixed-sp-4", f"fixed-sp-{gpus}",
              "rssp", "rssp:256=1,512=1,1024=2,2048=4", "cpsat"]:
        res = solve_or_refused(inst, p, **({"time_limit_ms": 100} if p == "cpsat" else {}))
        assert res is None or res.summary["met"] <= b.met_bound, f"{p}: met {res.summary['met']} > bound {b.met_bound}"


def test_window_keeps_room_for_the_decode_in_the_finishing_round():
    # 2048 px on 8 H100s, deadline 1.3 s: the second round's 400 ms cannot hold a step (143.9 ms)
    # and the decode (393.6 ms), so a met request finishes in the first, by 900 - 393.6 ms; before,
    # the window gave it the whole first round and 6.4 ms of the second
    from tetriopt.bound import window
    inst = parse_instance({"model": "flux.1-dev-h100", "cluster": {"gpus": 8}, "round_ms": 900,
                           "requests": [{"id": "b", "arrival_ms": 0, "deadline_ms": 1300, "width": 2048,
                                         "height": 2048, "steps": 3}]})
    assert window(inst, inst.requests[0]).caps == {0: 900_000 - 393_600}


AUX_PROFILE = {**TINY_PROFILE, "name": "tiny-aux", "model": "tiny-aux", "text_encode_ms": 6,
               "points": [{**TINY_PROFILE["points"][0], "vae_decode_ms": 14},
                          {**TINY_PROFILE["points"][1], "vae_decode_ms": 27}]}


@pytest.mark.parametrize("seed", range(20))
def test_bound_vs_brute_force_with_heavy_encode_and_decode(tmp_path, seed):
    """Cuts (6)-(10) charge the encode and decode on the first / last assignment's GPUs: with
    aux work a third of a step, the bound still never falls below the exhaustive optimum."""
    p = tmp_path / "aux.json"
    p.write_text(json.dumps(AUX_PROFILE))
    inst = tiny_instance(str(p), seed)
    truth = brute_force_max_met(inst)
    assert upper_bound(inst, time_limit_s=10).met_bound >= truth
    for pol in ["tetriserve", "greedy", "cpsat"]:
        res = solve_or_refused(inst, pol, **({"time_limit_ms": 200} if pol == "cpsat" else {}))
        assert res is None or res.summary["met"] <= truth, pol


@pytest.mark.parametrize("one_set", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_least_work_is_the_exhaustive_minimum(seed, one_set):
    """least_work_us (cut 10, and `feasible_alone`) equals the least GPU-time over every integer plan
    of the request alone that the model's per-request rows allow, found by enumeration (`one_set`:
    plans that run one degree per round, cut (11))."""
    from tetriopt.bound import Window, least_work_us
    from tetriopt.instance import Request

    rng = random.Random(seed)
    S = rng.randint(1, 5)
    t1 = rng.randint(20, 60)
    step = {1: t1, 2: rng.randint(t1 // 2 + 1, t1 - 1)}
    rounds = rng.randint(1, 3)
    caps = {j: rng.randint(10, 150) for j in range(rounds)}
    room = {j: c + rng.randint(0, 40) for j, c in caps.items()}
    enc, dec = rng.randint(0, 15), rng.randint(0, 30)
    r = Request(id="q", arrival_us=0, deadline_us=10**6, width=256, height=256, steps=S)
    w = Window(r, 0, 10**6, step, caps, {}, room, enc, dec)
    best = None
    per = [[(a, b) for a in range(S + 1) for b in range(S + 1) if a * step[1] + b * step[2] <= caps[j]
            and not (one_set and a and b)] for j in range(rounds)]
    for plan in itertools.product(*per):
        if sum(a + b for a, b in plan) != S:
            continue
        used = [j for j, (a, b) in enumerate(plan) if a + b]
        f, last = used[0], used[-1]
        own = [a * step[1] + b * step[2] for a, b in plan]
        kmin = [1 if a else 2 for a, _ in plan]
        if own[f] + enc > caps[f] or own[f] + enc + (dec if f == last else 0) > room[f] \
                or own[last] + dec + (enc if f == last else 0) > room[last]:
            continue
        cost = sum(a * step[1] + 2 * b * step[2] for a, b in plan) + kmin[f] * enc + kmin[last] * dec
        best = cost if best is None else min(best, cost)
    assert least_work_us(w, one_set=one_set) == (best or 0)
    # computed once per window: a window made from it with other caps gets its own answer
    half = dataclasses.replace(w, caps={j: c // 2 for j, c in caps.items()})
    assert least_work_us(half, one_set=one_set) == least_work_us(
        Window(r, 0, 10**6, step, half.caps, {}, room, enc, dec), one_set=one_set)


@pytest.mark.parametrize("seed", range(20))
def test_extended_bound_vs_brute_force_with_immediate_starts(tmp_path, seed):
    """The extended model's bound (arrival_visible) with cuts (6)-(10) against an exhaustive search
    in which a request may start inside the round it arrives in, after its arrival (heavy aux work,
    so the encode / decode charging is exercised in the arrival round too)."""
    p = tmp_path / "aux.json"
    p.write_text(json.dumps(AUX_PROFILE))
    inst = tiny_instance(str(p), seed)
    truth = brute_force_max_met(inst, immediate=True)
    assert truth >= brute_force_max_met(inst)
    assert upper_bound(inst, time_limit_s=10, arrival_visible=True).met_bound >= truth
    res = solve_or_refused(inst, "cpsat", time_limit_ms=200, immediate_start=True)
    assert res is None or res.summary["met"] <= truth


@pytest.mark.parametrize("policy", ["cpsat", "tetriserve", "tetriserve-stepgain", "greedy", "rssp", "fixed-sp-8"])
def test_policies_hold_one_set_per_request_per_round(policy):
    """The bound of TetriServe's model (`one_set`, cuts (11)-(12)) bounds plans in which a request
    holds one GPU set per round. The checkers accept two sets after one another, so this is what
    keeps it at or above every policy: none plans that (on a loaded 16-GPU grid workload, where
    2048 px requests would gain from a 4-GPU step after 8-GPU ones in one round)."""
    from collections import Counter

    inst = parse_instance(generate("flux.1-dev-h100", 16, 45, 256.4, seed=0), name="g16")
    res = solve_or_refused(inst, policy, **({"time_limit_ms": 100, "deterministic": True, "workers": 1}
                                           if policy == "cpsat" else {}))
    per = Counter((rd, i) for rd, a in res.assignments for i in a.requests)
    assert max(per.values()) == 1
    assert res.summary["met"] <= upper_bound(inst, time_limit_s=0.5).met_bound


def test_lp_bound_is_the_lp_optimum():
    """A fractional knapsack: the LP optimum 7/3, from GLOP's duals through weak duality."""
    from ortools.sat.python import cp_model

    from tetriopt.bound import lp_bound

    m = cp_model.CpModel()
    ys = [m.new_bool_var(f"y{i}") for i in range(3)]
    x = m.new_int_var(0, 5, "x")
    m.add(3 * sum(ys) + x <= 7)
    m.add_linear_constraint(x, 1, 4)  # a ranged row: its lower limit counts where its dual is negative
    m.maximize(sum(ys))
    assert lp_bound(m, 1.0) == pytest.approx(2.0)
    m.maximize(sum(ys) - x)  # x's lower limit binds through the duals too
    assert lp_bound(m, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(12))
def test_lp_bound_holds_for_any_multipliers(tiny_profile, seed):
    """lp_bound(model) is >= the integer optimum of the bound's model (CP-SAT, exact) and >= the
    exhaustive optimum of the plans, with GLOP's duals and with random multipliers of either sign
    (what a GLOP time-out may leave): weak duality, not GLOP's tolerances, makes it a bound."""
    from ortools.sat.python import cp_model

    from tetriopt.bound import build_model, components, least_work_us, lp_bound, window

    inst = tiny_instance(tiny_profile, seed)
    ws = [w for w in (window(inst, r) for r in inst.requests)
          if w.max_steps() >= w.request.steps and least_work_us(w, one_set=True) > 0]
    rng = random.Random(seed)
    total = 0
    for comp in components(ws):
        m, _ = build_model(inst, comp, one_set=True)
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        assert solver.solve(m) == cp_model.OPTIMAL
        rows = sum(1 for c in m.proto.constraints if c.has_linear())
        lp = lp_bound(m, 10.0)
        assert lp >= solver.objective_value - 1e-9
        for _ in range(5):
            duals = [rng.choice([0.0, rng.uniform(-1e-3, 1e-3), rng.uniform(-1, 1)]) for _ in range(rows)]
            assert lp_bound(m, 10.0, duals) >= solver.objective_value - 1e-9
        total += math.floor(lp + 1e-6)
    assert total >= brute_force_max_met(inst)


def test_lp_bound_answers_where_glop_default_is_imprecise():
    """The 168-request component of issue 12's grid at 64 GPUs / 32 pending, seed 0: at its default
    solution check GLOP ends IMPRECISE there with either simplex (no duals: the component then fell
    back to CP-SAT's bound or to all its requests); lp_bound's looser check gives the LP, 164.73
    (165.016 before cut (12))."""
    from tetriopt.bound import build_model, components, feasible_alone, lp_bound

    inst = parse_instance(generate("flux.1-dev-h100", 64, 179, 529.7, seed=0), name="g64")
    comp = max(components(feasible_alone(inst)), key=len)
    model, _ = build_model(inst, comp, one_set=True)
    assert len(comp) == 168
    assert lp_bound(model, 120.0) == pytest.approx(164.733, abs=0.01)


@pytest.mark.parametrize("seed", range(12))
def test_mip_bound_is_the_exact_optimum_on_tiny_instances(tiny_profile, seed):
    """`mip_bound` (HiGHS's branch and cut, floating point; docs/bound.md seventh round) on each
    component's model: its floored bound equals CP-SAT's exact optimum (with enough time) and is
    at or above it when cut short, from a start or not; the components' sum is at or above the
    exhaustive optimum."""
    pytest.importorskip("highspy")
    from ortools.sat.python import cp_model

    from tetriopt.bound import build_model, components, feasible_alone, mip_bound

    inst = tiny_instance(tiny_profile, seed)
    total = 0
    for comp in components(feasible_alone(inst)):
        m, _ = build_model(inst, comp, one_set=True)
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        assert solver.solve(m) == cp_model.OPTIMAL
        opt = round(solver.objective_value)
        v, inc = mip_bound(m, 10.0, list(solver.response_proto.solution))
        assert math.floor(v + 1e-6) == opt and inc == opt
        short, _ = mip_bound(m, 1e-6)
        assert short is None or math.floor(short + 1e-6) >= opt
        total += opt
    assert total >= brute_force_max_met(inst)


def test_mip_bound_cut_short_is_its_proven_bound():
    """HiGHS stopped by its time limit on the 35-request component of issue 12's grid at 8 GPUs /
    32 pending, seed 0 (optimum 25, proven by CP-SAT and by HiGHS in about 20 s), started from
    meeting none: what `mip_bound` returns is HiGHS's proven bound (27 after 2 s, load 9), never its
    incumbent (7 then), or nothing."""
    pytest.importorskip("highspy")
    from tetriopt.bound import build_model, components, feasible_alone, mip_bound

    inst = parse_instance(generate("flux.1-dev-h100", 8, 45, 133.9, seed=0), name="g8")
    comp = max(components(feasible_alone(inst)), key=len)
    model, _ = build_model(inst, comp, one_set=True)
    assert len(comp) == 35
    v, inc = mip_bound(model, 3.0, [0] * len(model.proto.variables))
    assert v is None or (math.floor(v + 1e-6) >= 25 and (inc is None or inc <= 25)), (v, inc)


def test_mip_nodes_gives_the_same_bound_on_any_cpu():
    """HiGHS stopped by a node limit and no time limit (`mip_bound(max_nodes=)`, `--mip-nodes`;
    docs/bound.md eighth round) on the same 35-request component (optimum 25): two runs give the
    same bound and incumbent, at or above the optimum; 30 nodes do not prove it (27 with HiGHS
    1.16: the limit is obeyed), 400 do (25, about 12 s at load 7)."""
    pytest.importorskip("highspy")
    # in a fresh process, as `tetriopt bound` runs: in one that ran other tests first (a full suite
    # run, 2026-11-30), 30 nodes once proved 25 (HiGHS keeps process-wide state between solves)
    script = """
import json, math
from tetriopt.bound import build_model, components, feasible_alone, mip_bound
from tetriopt.instance import parse_instance
from tetriopt.workload import generate
inst = parse_instance(generate("flux.1-dev-h100", 8, 45, 133.9, seed=0), name="g8")
comp = max(components(feasible_alone(inst)), key=len)
runs = [mip_bound(build_model(inst, comp, one_set=True)[0], math.inf, max_nodes=n) for n in (30, 30, 400)]
print(json.dumps([len(comp)] + runs))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    size, *runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert size == 35 and runs[0] == runs[1], runs
    v, inc = runs[0]
    assert v is not None and math.floor(v + 1e-6) > 25 and (inc is None or inc <= 25), runs
    v, inc = runs[2]
    assert math.floor(v + 1e-6) == 25 == inc, (v, inc)
