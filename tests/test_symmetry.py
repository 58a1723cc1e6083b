"""Symmetry rows between interchangeable GPU blocks (policies/symmetry.py) must keep the round
model's optimum: every swap they rely on is an automorphism of the whole model, the proven
optimum is the same with and without them, and warm starts moved onto them stay feasible."""

from __future__ import annotations

import collections
import random

import pytest

from tetriopt import RequestState, RoundState, load_profile, make_cluster
from tetriopt.plan import decisions_of
from tetriopt.policies.backends import solve_cpsat
from tetriopt.policies.certify import split_objective
from tetriopt.policies.formulation import build, complete
from tetriopt.policies.mip import MipPolicy
from tetriopt.policies.symmetry import add_symmetry_rows, canonical, swaps
from tetriopt.policies.tetriserve import TetriServe

from .test_bruteforce import brute_force, random_state as small_state


def state8(seed: int, islands=None) -> RoundState:
    """2-4 requests on 8 GPUs, some located on a block, some not started."""
    rng = random.Random(seed)
    prof = load_profile("flux.1-dev-h100")
    cluster = make_cluster(8, islands)
    blocks = [g for k in (1, 2, 4, 8) for g in cluster.sets(k)]
    reqs = []
    for i in range(rng.choice([2, 3, 4])):
        size = rng.choice([256, 512, 1024, 2048])
        loc = rng.choice(blocks) if rng.random() < 0.4 else ()
        reqs.append(RequestState(id=f"q{i}", width=size, height=size, remaining_steps=rng.randint(1, 20),
                                 deadline_us=rng.randint(400_000, 8_000_000), arrival_us=0, location=loc))
    return RoundState(now_us=0, round_us=900_000, cluster=cluster, profile=prof, degrees=prof.degrees,
                      requests=tuple(reqs))


def _key(co, lo, hi):
    return frozenset(co.items()), lo, hi


def assert_automorphism(rm, w):
    """sigma maps bounds, objective and the multiset of rows of the model onto themselves."""
    m = rm.model
    to = dict(w.perm)
    assert all(to[to[v]] == v for v in to)  # an involution
    f = lambda v: to.get(v, v)  # noqa: E731
    for v in range(len(m.names)):
        assert (m.lb[v], m.ub[v]) == (m.lb[f(v)], m.ub[f(v)])
        assert m.objective.get(v, 0) == m.objective.get(f(v), 0)
    rows = collections.Counter(_key(co, lo, hi) for co, lo, hi in m.cons)
    moved = collections.Counter(_key({f(v): c for v, c in co.items()}, lo, hi) for co, lo, hi in m.cons)
    assert rows == moved


@pytest.mark.parametrize("islands", [None, [[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1], [2, 3], [4, 5], [6, 7]]])
def test_every_swap_is_an_automorphism(islands):
    found = 0
    for seed in range(25):
        rm = build(state8(seed, islands))
        for w in swaps(rm):
            assert_automorphism(rm, w)
            found += 1
    assert found >= 25  # not vacuous


def test_located_blocks_are_not_swapped():
    st = state8(0)
    r = RequestState(id="a", width=1024, height=1024, remaining_steps=10, deadline_us=5_000_000, location=(0, 1))
    rm = build(RoundState(now_us=0, round_us=900_000, cluster=st.cluster, profile=st.profile,
                          degrees=st.degrees, requests=(r,)))
    pairs = {(w.a, w.b) for w in swaps(rm)}
    assert ((0,), (1,)) in pairs and ((4, 5), (6, 7)) in pairs  # inside its block, and away from it
    assert ((0, 1), (2, 3)) not in pairs and ((0, 1, 2, 3), (4, 5, 6, 7)) not in pairs  # its stay bonus


def test_capped_candidate_lists_are_not_swapped():
    st = state8(3)
    rm = build(st, max_pairs=10)  # every request sees a few sets only
    assert rm.restricted
    for w in swaps(rm):
        assert_automorphism(rm, w)


@pytest.mark.parametrize("seed", range(30))
def test_rows_keep_the_optimum_and_canonical_warm_starts_fit(seed):
    st = state8(seed)
    plain = solve_cpsat(build(st).model, 20.0, seed=0, workers=1)
    rm = build(st)
    tp = TetriServe().plan(st)
    warm = complete(rm, decisions_of(tp), tp.kept or ())
    pairs = swaps(rm)
    add_symmetry_rows(rm, pairs)
    broken = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
    assert plain.status == broken.status == "OPTIMAL"
    assert broken.objective == plain.objective
    if warm is not None:
        moved = canonical(rm, pairs, warm)
        assert rm.model.feasible(moved) and rm.model.value(moved) == rm.model.value(warm)


@pytest.mark.parametrize("seed", range(0, 60, 4))
def test_rows_agree_with_brute_force(seed):
    st = small_state(seed)
    rm = build(st)
    add_symmetry_rows(rm, swaps(rm))
    cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
    assert cp.status == "OPTIMAL" and cp.objective == brute_force(st)


def test_policy_with_rows_is_deterministic_and_optimal():
    for seed in range(12):
        st = state8(seed)
        a = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, seed=0, workers=1).plan(st)
        b = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, seed=0, workers=1).plan(st)
        off = MipPolicy("cpsat", time_limit_ms=500, deterministic=True, symmetry=False).plan(st)
        assert a.assignments == b.assignments and a.objective == b.objective
        assert a.objective == off.objective and a.status == off.status, seed


@pytest.mark.parametrize("seed", range(30))
def test_split_objective_keeps_the_optimum(seed):
    """Per-request value variables capped at what each request reaches alone (certify.split_objective)
    change no optimum, and the extended warm start keeps its value and feasibility."""
    st = state8(seed) if seed % 2 else small_state(seed)
    plain = solve_cpsat(build(st).model, 20.0, seed=0, workers=1)
    rm = build(st)
    tp = TetriServe().plan(st)
    warm = complete(rm, decisions_of(tp), tp.kept or ())
    before = rm.model.value(warm) if warm is not None else None
    hint = split_objective(rm, warm)
    split = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
    assert plain.status == split.status == "OPTIMAL"
    assert split.objective == plain.objective
    if warm is not None:
        assert rm.model.feasible(hint) and rm.model.value(hint) == before
