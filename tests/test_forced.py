"""The joint test with forced work (`cpsat[forced=1]`, formulation.add_forced): at each later round
boundary, the work that kept requests due after it cannot leave until after it counts against
the cluster's GPU-time until then (real CP-SAT, deterministic clock, pinned seeds)."""

from __future__ import annotations

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.bound import upper_bound
from tetriopt.plan import decisions_of
from tetriopt.policies.formulation import add_forced, build, complete
from tetriopt.policies.tetriserve import TetriServe

PROF = tetriopt.load_profile("flux.1-dev-h100")
R = 900_000
# two 2,048 px requests on one 8-GPU block: each alone can make it, both cannot (the bound says 1),
# yet the due-time rows hold for both (q1's work is "movable" until its due time, but most of it
# must run while q0 holds the block)
TWO = [("q0", 16, 3_549_649), ("q1", 11, 4_536_888)]


def test_forced_work_keeps_what_one_block_can_serve():
    inst = tetriopt.parse_instance({"model": "flux.1-dev-h100", "cluster": {"gpus": 8}, "requests": [
        {"id": i, "arrival_ms": 0.0, "deadline_ms": d / 1e3, "width": 2048, "height": 2048, "steps": n}
        for i, n, d in TWO]})
    assert upper_bound(inst, time_limit_s=5).met_bound == 1
    runs = {}
    for name in ("cpsat", "cpsat[forced=1]"):
        res = tetriopt.solve(inst, tetriopt.make_policy(name, time_limit_ms=200, seed=0, workers=1, deterministic=True))
        runs[name] = res
        assert res.summary["met"] == 1
    # without it both are kept (and worked on) for three rounds; with it one from the first round on
    assert [r.kept for r in runs["cpsat"].rounds[:3]] == [2, 2, 2]
    assert all(r.kept <= 1 for r in runs["cpsat[forced=1]"].rounds)


def test_warm_starts_are_completed_within_the_forced_rows():
    s = RoundState(now_us=0, round_us=R, cluster=tetriopt.make_cluster(8), profile=PROF, degrees=(1, 2, 4, 8),
                   requests=tuple(RequestState(i, 2048, 2048, remaining_steps=n, deadline_us=d) for i, n, d in TWO))
    ts = TetriServe().plan(s)
    assert set(ts.kept) == {"q0", "q1"}  # TetriServe keeps both
    plain = build(s)
    both = complete(plain, decisions_of(ts), ts.kept)
    assert both is not None and sum(both[plain.keep[i]] for i, _, _ in TWO) == 2
    rm = build(s)
    add_forced(rm)
    assert rm.forced and rm.forced_rows
    sol = complete(rm, decisions_of(ts), ts.kept)
    assert sol is not None and rm.model.feasible(sol)
    assert sum(sol[rm.keep[i]] for i, _, _ in TWO) == 1
    for row, cap in rm.forced_rows:
        assert sum(c * sol[v] for v, c in row.items()) <= cap
