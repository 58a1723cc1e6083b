"""certify.proved: the placement relaxation per set of requests the joint test could keep, which
proves the best warm start optimal before CP-SAT on rounds the joint test cannot keep whole
(docs/solver.md 2, item 18). Checked against CP-SAT's proven optimum on contended rounds."""

from __future__ import annotations

import itertools
import random

from tetriopt import RequestState, RoundState, load_profile, make_cluster
from tetriopt.policies.backends import solve_cpsat
from tetriopt.policies.certify import _keep_sets, request_options, proved
from tetriopt.policies.formulation import build
from tetriopt.policies.horizon import Forecast, add_forecast
from tetriopt.policies.mip import MipPolicy
from tetriopt.policies.symmetry import add_symmetry_rows, swaps


def contended_state(seed: int) -> RoundState:
    """3-5 large images on 4 or 8 GPUs with deadlines a few rounds out: rounds where the joint
    test often cannot keep every request (as three 2,048 px images on 8 GPUs in skewed-slo1.5)."""
    rng = random.Random(seed)
    prof = load_profile("flux.1-dev-h100")
    gpus = rng.choice([4, 8, 8])
    sets = {k: make_cluster(gpus).sets(k) for k in prof.degrees if k <= gpus}
    now, reqs = 400_000_000, []
    for i in range(rng.choice([3, 3, 4, 5])):
        size = rng.choice([1024, 2048, 2048, 2048, 512])
        loc = rng.choice(sets[rng.choice(list(sets))]) if rng.random() < 0.4 else ()
        steps = rng.choice([rng.randint(10, 20), rng.randint(10, 20), rng.randint(1, 4)])
        reqs.append(RequestState(id=f"r{i}", width=size, height=size, remaining_steps=steps,
                                 deadline_us=now + rng.randint(2_500_000, 6_000_000), arrival_us=0, location=loc))
    return RoundState(now_us=now, round_us=prof.default_round_us, cluster=make_cluster(gpus), profile=prof,
                      degrees=tuple(d for d in prof.degrees if d <= gpus), requests=tuple(reqs))


def _model(seed: int):
    st = contended_state(seed)
    rm = build(st)
    if seed % 2:  # forecast rows on wide requests, as the policy adds them (horizon.add_forecast)
        fc = Forecast()
        fc.recent.extend((st.now_us - j * 300_000, 1024, 1024, 20, 6_000_000) for j in range(3))
        add_forecast(rm, fc)
    return st, rm


def _keepable_together(rm, ids) -> bool:
    """Whether some plan of the model keeps every request of `ids` (CP-SAT, to proof)."""
    m = rm.model
    saved = {rm.keep[i]: m.lb[rm.keep[i]] for i in ids}
    for v in saved:
        m.lb[v] = 1
    try:
        out = solve_cpsat(m, 20.0, seed=0, workers=1)
    finally:
        for v, lo in saved.items():
            m.lb[v] = lo
    assert out.status in ("OPTIMAL", "INFEASIBLE"), out.status
    return out.solution is not None


def _check_keep_sets(rm, optimum: list[int], seed: int) -> tuple[bool, int]:
    """Asserts that the kept set of `optimum` (CP-SAT's) is inside one of `_keep_sets` and that
    every smallest set outside them all is kept by no plan; (whether the joint test binds, how
    many sets it rules out)."""
    owns = request_options(rm)
    keeps = _keep_sets(rm, owns)
    kept = {i for i, v in rm.keep.items() if optimum[v]}
    assert any(kept <= k for k in keeps), seed
    can = [o.rid for o in owns if o.can]
    out: list[frozenset] = []  # smallest sets ruled out
    for size in range(1, len(can) + 1):
        for ids in itertools.combinations(can, size):
            s = frozenset(ids)
            if not any(s <= k for k in keeps) and not any(o <= s for o in out):
                out.append(s)
                assert not _keepable_together(rm, s), (seed, sorted(s))
    return keeps != [frozenset(can)], len(out)


def test_keep_sets_rule_out_only_what_no_plan_keeps_and_the_proof_is_exact():
    """On contended rounds: every smallest set of requests outside all of `_keep_sets` is one no
    plan of the model keeps together (CP-SAT finds the model with them all kept infeasible); the
    kept set of CP-SAT's optimum is inside one of them; searched above one less than the optimum
    nothing is proved; and where the optimum is proved, it is CP-SAT's. Fails when the relaxed
    joint test rules out a set some plan keeps (it did with half the round's GPU-time shared out),
    or a set is searched with requests outside it kept."""
    binding = proofs = ruled_out = 0
    for seed in range(40):
        st, rm = _model(seed)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
        assert cp.status == "OPTIMAL", seed
        binds, out = _check_keep_sets(rm, cp.solution, seed)
        binding += binds
        ruled_out += out
        blocks = [(w.a, w.b) for w in swaps(rm)]
        opt = int(cp.objective)
        assert not proved(rm, opt - 1, blocks, budget=100_000), seed
        if proved(rm, opt, blocks, budget=100_000):
            proofs += 1
            assert not proved(rm, opt - 1, (), budget=100_000), seed
    assert binding >= 8 and ruled_out >= 8 and proofs >= 4, (binding, ruled_out, proofs)


def test_policy_answers_what_cpsat_would():
    """The policy with the proof ends the rounds it proves with CP-SAT's plan and objective (CP-SAT
    started from the same hint returns it), and the proof fires. Fails when the proof answers a
    plan other than the hint CP-SAT gets (e.g. without the symmetry rows' canonical move)."""
    fired = rounds = 0
    for seed in range(200):
        st = contended_state(seed)
        rm = build(st)
        owns = request_options(rm)
        if len(owns) > 4 and _keep_sets(rm, owns) == [frozenset(o.rid for o in owns if o.can)]:
            continue  # five that the joint test could keep together: the proof is not tried
        rounds += 1
        on = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False).plan(st)
        off = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False, joint_proof=False).plan(st)
        assert on.objective == off.objective, seed
        assert on.assignments == off.assignments and on.kept == off.kept, seed
        if "joint placement bound" in on.note:
            fired += 1
            assert on.status == off.status == "OPTIMAL" and on.bound == on.objective, seed
        if rounds == 20:
            break
    assert fired >= 3, fired


PROFILES = ("flux.1-dev-h100", "sd3-medium-a40", "flux.1-dev-h200", "sd3-medium-h200")


def random_state(seed: int) -> tuple[RoundState, random.Random]:
    """A random round of 2-5 requests: any of the four profiles on 4 or 8 GPUs, images of
    1,024-2,048 px, deadlines from inside the round (urgent) to several rounds out, latents on a
    set or none (encode, stay bonus). Also the generator, for `random_round`."""
    rng = random.Random(seed)
    prof = load_profile(rng.choice(PROFILES))
    gpus = rng.choice([4, 8, 8])
    cl = make_cluster(gpus)
    degs = tuple(d for d in prof.degrees if d <= gpus)
    R = prof.default_round_us
    now, reqs = 40 * R, []
    for i in range(rng.choice([2, 3, 4, 5])):
        loc = rng.choice(cl.sets(rng.choice(degs))) if rng.random() < 0.4 else ()
        steps = rng.choice([rng.randint(10, 20), rng.randint(10, 20), rng.randint(1, 4)])
        due = rng.choice([rng.uniform(0.5, 1.5), rng.uniform(2.5, 7), rng.uniform(2.5, 7), rng.uniform(2, 4)])
        size = rng.choice([1024, 2048, 2048, 2048])
        reqs.append(RequestState(id=f"r{i}", width=size, height=size, remaining_steps=steps,
                                 deadline_us=now + int(R * due), arrival_us=0, location=loc))
    return RoundState(now_us=now, round_us=R, cluster=cl, profile=prof, degrees=degs, requests=tuple(reqs)), rng


def random_round(seed: int):
    """`random_state`'s round with what the policy may do to its model: a joint capacity below 1,
    an unplaced backlog (restricted), forecast rows, keeps the rollout gave up, symmetry rows.
    Returns (model, blocks)."""
    st, rng = random_state(seed)
    now, R, reqs = st.now_us, st.round_us, st.requests
    placed = {r.id for r in reqs if rng.random() < 0.7} if rng.random() < 0.15 else None
    rm = build(st, joint_capacity=rng.choice([1.0, 1.0, 0.8]), placed=placed)
    if rng.random() < 0.5:
        fc = Forecast()  # arrivals replayed one window (4 rounds) on, due within a few rounds of now
        fc.recent.extend((now - 4 * R + rng.randint(0, R), rng.choice([512, 1024]), 1024, rng.randint(5, 20),
                          int(R * rng.uniform(1.5, 5))) for _ in range(rng.randint(2, 12)))
        add_forecast(rm, fc)
    if rng.random() < 0.2:
        for v in rm.keep.values():
            if rng.random() < 0.3:
                rm.model.ub[v] = 0
    pairs = swaps(rm)
    if rng.random() < 0.5:
        add_symmetry_rows(rm, pairs)
    return rm, [(w.a, w.b) for w in pairs]


def test_proof_never_claims_above_the_optimum_on_random_rounds():
    """On 150 random rounds (`random_round`, pinned seeds), against CP-SAT's proven optimum: the
    optimum's kept set is inside one of `_keep_sets`, every smallest set they rule out is
    infeasible with all of it kept, and nothing is proved one below the optimum, with the block
    rule or without. Fails when the relaxed joint test counts the decode of a request that could
    finish, takes a forecast row's room for a request outside the set, or shares out half the
    round's GPU-time."""
    binding = ruled_out = proofs = 0
    for seed in range(150):
        rm, blocks = random_round(seed)
        cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
        assert cp.status == "OPTIMAL", seed
        opt = int(cp.objective)
        binds, out = _check_keep_sets(rm, cp.solution, seed)
        binding += binds
        ruled_out += out
        assert not proved(rm, opt - 1, blocks, budget=200_000), seed
        assert not proved(rm, opt - 1, (), budget=200_000), seed
        proofs += proved(rm, opt, blocks, budget=200_000)
    assert binding >= 10 and ruled_out >= 15 and proofs >= 100, (binding, ruled_out, proofs)


def test_policy_answers_what_cpsat_would_on_random_rounds():
    """As above on 150 of `random_state`'s rounds (urgent deadlines, other profiles, latents): the
    same assignments, kept requests and objective with the proof as without, and it fires."""
    fired = 0
    for seed in range(150):
        st, _ = random_state(seed)
        on = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False).plan(st)
        off = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, rollout=False, joint_proof=False).plan(st)
        assert (on.assignments, on.kept, on.objective) == (off.assignments, off.kept, off.objective), seed
        fired += "joint placement bound" in on.note
    assert fired >= 5, fired
