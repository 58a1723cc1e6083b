"""The separable bound (policies/certify.py) lets a round skip CP-SAT's search when a warm start
reaches it. Checked on the brute-force suite's random small rounds: it is never below the proven
optimum, and a round that skips the search gets the objective the search would have proven."""

from __future__ import annotations

import pytest

from tetriopt.policies.backends import solve_cpsat
from tetriopt.plan import decisions_of
from tetriopt.policies.certify import FEW_MAX, _joint_binds, request_options, beyond, separable, separable_bound
from tetriopt.policies.symmetry import swaps
from tetriopt.policies.formulation import build, complete
from tetriopt.policies.mip import MipPolicy
from tetriopt.policies.tetriserve import TetriServe

from .test_bruteforce import random_state

SEEDS = range(60)


@pytest.mark.parametrize("seed", SEEDS)
def test_separable_bound_is_an_upper_bound(seed):
    rm = build(random_state(seed))
    cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
    assert cp.status == "OPTIMAL"
    assert separable_bound(rm) >= cp.objective


def test_skipping_the_search_keeps_the_optimum():
    fired = 0
    for seed in SEEDS:
        st = random_state(seed)
        # the round model's optimum, without the rollout that may run TetriServe's plan instead (rollout.py)
        on = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False).plan(st)
        off = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, certify=False, rollout=False).plan(st)
        assert off.status == "OPTIMAL", seed
        assert on.objective == off.objective, seed
        assert on.kept == off.kept or len(on.kept) == len(off.kept), seed
        if "separable bound" in on.note:
            fired += 1
            assert on.status == "OPTIMAL" and on.bound == on.objective, seed
    assert fired >= 5  # the rule is exercised, not vacuous (it fires on 20-40% of these rounds)


def lone_request_state(seed: int):
    """One request on 8 GPUs: nothing couples it to anything, so the separable bound is exact."""
    import random

    from tetriopt import RequestState, RoundState, load_profile, make_cluster

    rng = random.Random(seed)
    prof = load_profile("flux.1-dev-h100")
    size = rng.choice([256, 512, 1024, 2048])
    loc = rng.choice([(), (0,), (0, 1), (4, 5, 6, 7)])
    req = RequestState(id="q", width=size, height=size, remaining_steps=rng.randint(1, 20),
                       deadline_us=rng.randint(300_000, 8_000_000), arrival_us=0, location=loc)
    return RoundState(now_us=0, round_us=900_000, cluster=make_cluster(8), profile=prof,
                      degrees=prof.degrees, requests=(req,))


def test_separable_plan_certifies_a_lone_request():
    """A lone request's round rarely needs CP-SAT: the plan with every request at its best alone
    fits, reaches the bound, and is the optimum CP-SAT proves (the warm starts often are not:
    TetriServe spreads the request over idle GPUs, the model prefers less GPU-time). The bound
    leaves out the joint test, which a lone request can fail alone (its decode still owed)."""
    below = certified = 0
    for seed in range(25):
        st = lone_request_state(seed)
        rm = build(st, convex=True)  # the policy's model
        ub, dec, kept = separable(rm)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
        assert cp.status == "OPTIMAL" and cp.objective <= ub, seed
        sol = complete(rm, dec, kept)
        if sol is None or rm.model.value(sol) < ub:
            continue
        certified += 1
        assert cp.objective == ub, seed
        plan = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False).plan(st)
        assert plan.status == "OPTIMAL" and "separable bound" in plan.note and plan.objective == ub, seed
        tp = TetriServe().plan(st)
        ts = complete(rm, decisions_of(tp), tp.kept or ())
        below += ts is None or rm.model.value(ts) < ub
    assert certified >= 20
    assert below >= 3  # the rule is needed: TetriServe's plan alone would not have certified these


def crowded_state(seed: int):
    """2-4 requests of the paper's mix on 2-8 GPUs at random progress, deadlines and latents:
    rounds where the separable plan often collides (a 2048 px image's best alone is the whole
    cluster), which `certify.beyond` is for."""
    import random

    from tetriopt import RequestState, RoundState, load_profile, make_cluster

    rng = random.Random(seed)
    prof = load_profile("flux.1-dev-h100")
    gpus = rng.choice([2, 4, 8, 8, 8])
    sets = {k: make_cluster(gpus).sets(k) for k in prof.degrees if k <= gpus}
    now, reqs = 10_000_000, []
    for i in range(rng.choice([2, 2, 3, 4])):
        size = rng.choice([256, 512, 1024, 2048, 2048])
        loc = rng.choice(sets[rng.choice(list(sets))]) if rng.random() < 0.5 else ()
        reqs.append(RequestState(id=f"r{i}", width=size, height=size, remaining_steps=rng.randint(1, 20),
                                 deadline_us=now + rng.randint(200_000, 9_000_000), arrival_us=0, location=loc))
    return RoundState(now_us=now, round_us=rng.choice([prof.default_round_us, 300_000]), cluster=make_cluster(gpus),
                      profile=prof, degrees=tuple(d for d in prof.degrees if d <= gpus), requests=tuple(reqs))


def test_placement_relaxation_is_a_bound_and_its_certificate_is_the_optimum():
    """On random crowded rounds the relaxation `beyond` searches (every GPU's row kept, the joint
    test's coupling and the urgent order dropped) is never below CP-SAT's proven optimum, with or
    without the symmetry cuts between interchangeable blocks; where its best plan fits, CP-SAT's
    optimum is exactly its value; and searched above the optimum it finds nothing or only a plan
    of the relaxation that does not fit: a round that skips the search on it loses nothing.
    Fails when a placement's shared GPU is ignored, the cut keeps blocks that are not
    interchangeable, or the search stops at the first plan above its floor."""
    certified = 0
    for seed in range(150):
        st = crowded_state(seed)
        rm = build(st)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
        assert cp.status == "OPTIMAL", seed
        if len(st.requests) > FEW_MAX:
            assert beyond(rm, -1 << 62) is None, seed  # it declines (CP-SAT is cheaper there)
            continue
        blocks = [(w.a, w.b) for w in swaps(rm)]
        for cut in ((), blocks):
            got = beyond(rm, -1 << 62, cut, budget=100_000)
            if got is None:  # not tried where the joint test binds (its relaxation would be loose)
                assert _joint_binds(rm, request_options(rm)), seed
                continue
            assert got[1] is not None, seed
            assert got[0] >= cp.objective, seed
            dec = [(i, g, n) for i, g, n, _ in got[1] if g and n]
            sol = complete(rm, dec, tuple(i for i, _, _, k in got[1] if k))
            if sol is not None and rm.model.value(sol) >= got[0]:
                certified += 1
                assert cp.objective == got[0], seed
            above = beyond(rm, int(cp.objective), cut, budget=100_000)
            assert above is not None and (above[1] is None or above[0] > cp.objective), seed
    assert certified >= 150  # exercised: both ways on most of the 150 rounds


def test_placement_certificate_in_the_policy_keeps_the_optimum():
    fired = 0
    for seed in range(40):
        st = crowded_state(seed)
        # the round model's optimum, without the rollout that may run TetriServe's plan instead (rollout.py)
        on = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False).plan(st)
        off = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, certify=False, rollout=False).plan(st)
        assert off.status == "OPTIMAL", seed
        assert on.objective == off.objective, seed
        if "placement bound" in on.note:
            fired += 1
            assert on.status == "OPTIMAL" and on.bound == on.objective, seed
    assert fired >= 5


def test_placement_search_memo_answers_as_the_search():
    """`_fill`'s memo (placements that share GPUs alike, from the same incumbent) gives the same
    value, plan and search nodes as searching every placement, on random crowded rounds, to the
    end and stopped at the first plan above a floor, with and without the symmetry cuts. Fails
    when the memo's key misses what the search reads (a class, the chains, the incumbent)."""
    from tetriopt.policies.certify import _search
    hits = 0
    for seed in range(150):
        st = crowded_state(seed)
        rm = build(st)
        owns = request_options(rm)
        blocks = [(w.a, w.b) for w in swaps(rm)]
        for cut, first, floor in (((), False, -1 << 62), (blocks, False, -1 << 62), (blocks, True, 0)):
            runs = []
            for memo in (True, False):
                left = [100_000]
                runs.append((_search(rm, owns, floor, cut, left, first, memo), left[0]))
            assert runs[0] == runs[1], seed
            hits += runs[0][0] is not None and runs[0][0][1] is not None
    assert hits >= 200


def test_placement_search_leaves_no_garbage_cycles():
    """The searches' recursive closures are freed when they return (as reference cycles they
    were most of a skewed workload's garbage collections: 15% of its CPU)."""
    import gc

    from tetriopt.policies.certify import proved
    rms = [build(crowded_state(seed)) for seed in range(40)]
    gc.collect()
    gc.disable()
    try:
        for rm in rms:
            beyond(rm, -1 << 62, [(w.a, w.b) for w in swaps(rm)])
            proved(rm, -1 << 62)
        assert gc.collect() == 0
    finally:
        gc.enable()
