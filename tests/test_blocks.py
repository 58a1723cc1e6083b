"""The block-round lookahead (`cpsat[blocks=1]`, formulation.add_blocks): a kept request whose
fastest degree is the widest block must hold a whole block in enough of its coming rounds, and
the fewer steps it runs now the more of them it needs (real CP-SAT, deterministic clock, pinned
seeds)."""

from __future__ import annotations

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.bound import upper_bound
from tetriopt.plan import decisions_of
from tetriopt.policies.formulation import add_blocks, build, complete
from tetriopt.policies.tetriserve import TetriServe

PROF = tetriopt.load_profile("flux.1-dev-h100")
R = 900_000
# one 8-GPU block: a 2,048 px request (q0) with spare time now, a 1,024 px and a 512 px one due
# sooner; all three can be met (the bound says 3), but only if q0 gets enough steps before the
# others leave the block to it
THREE = [("q0", 2048, 4_285_000), ("q1", 1024, 3_789_000), ("q2", 512, 1_991_000)]


def _instance():
    return tetriopt.parse_instance({"model": "flux.1-dev-h100", "cluster": {"gpus": 8}, "requests": [
        {"id": i, "arrival_ms": 0.0, "deadline_ms": d / 1e3, "width": px, "height": px, "steps": 20}
        for i, px, d in THREE]})


def test_block_rounds_keep_the_2048_px_request():
    inst = _instance()
    assert upper_bound(inst, time_limit_s=5).met_bound == 3
    met = {}
    for name in ("cpsat", "cpsat[blocks=1]"):
        res = tetriopt.solve(inst, tetriopt.make_policy(name, time_limit_ms=200, seed=0, workers=1, deterministic=True))
        met[name] = {o.id for o in res.requests if o.met}
    assert met["cpsat"] == {"q1", "q2"}  # without the rows q0 is kept slow, then dropped
    assert met["cpsat[blocks=1]"] == {"q0", "q1", "q2"}


def _state(now_us: int = 0) -> RoundState:
    return RoundState(now_us=now_us, round_us=R, cluster=tetriopt.make_cluster(8), profile=PROF, degrees=(1, 2, 4, 8),
                      requests=tuple(RequestState(i, px, px, remaining_steps=20, deadline_us=d) for i, px, d in THREE))


def _block_rounds(rm, sol) -> int:
    """q0's forced block-rounds over its whole horizon (its widest-horizon variable)."""
    return max((sol[v] for v, _, _, i, d in rm.forced if i == "q0" and d > 1), default=0)


def test_fewer_steps_now_force_more_block_rounds():
    rm = build(_state())
    add_blocks(rm)
    assert any(i == "q0" and d > 1 for _, _, _, i, d in rm.forced)  # q0's fastest degree is the block
    slow = complete(rm, [("q0", (0,), 1)], ["q0"])  # 1 step at degree 1
    fast = complete(rm, [("q0", tuple(range(8)), 6)], ["q0"])  # a whole round on the block
    assert slow is not None and fast is not None
    assert _block_rounds(rm, slow) > _block_rounds(rm, fast)


def test_warm_starts_are_completed_within_the_block_rows():
    s = _state()
    ts = TetriServe().plan(s)
    rm = build(s)
    add_blocks(rm)
    assert rm.forced_rows
    sol = complete(rm, decisions_of(ts), ts.kept or ())
    assert sol is not None and rm.model.feasible(sol)
    for row, cap in rm.forced_rows:
        assert sum(c * sol[v] for v, c in row.items()) <= cap
