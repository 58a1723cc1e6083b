"""The `lp` and `lns` switches (docs/solver.md 4, helper FB; off by default): on a large round model
(no presolve), CP-SAT's LP relaxation at linearization level 1, and its interleaved single-worker
search. Real CP-SAT, deterministic clock, pinned seed and one worker."""

from __future__ import annotations

import pytest

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.policies import backends
from tetriopt.policies.mip import LARGE_MODEL, MipPolicy

PROF = tetriopt.load_profile("flux.1-dev-h100")
R = 900_000


def _state() -> RoundState:
    """A busy 16-GPU round: 18 requests of every size, deadlines 1-6 rounds out (a large model)."""
    sizes = (256, 512, 1024, 2048)
    reqs = tuple(RequestState(f"q{i}", sizes[i % 4], sizes[i % 4], remaining_steps=20,
                              deadline_us=R * (1 + i % 6) + 37_000 * i) for i in range(18))
    return RoundState(now_us=0, round_us=R, cluster=tetriopt.make_cluster(16), profile=PROF,
                      degrees=(1, 2, 4, 8), requests=reqs)


def _plan(**switches):
    seen = []
    orig = backends.BACKENDS["cpsat"]

    def spy(m, limit_s, **kw):
        out = orig(m, limit_s, **kw)
        seen.append((len(m.names), kw, out, None if kw.get("hint") is None else m.value(kw["hint"])))
        return out

    backends.BACKENDS["cpsat"] = spy
    try:
        plan = MipPolicy(time_limit_ms=100, seed=0, workers=1, deterministic=True, **switches).plan(_state())
    finally:
        backends.BACKENDS["cpsat"] = orig
    return plan, seen


@pytest.mark.parametrize("switches, lin, inter", [({}, 0, False), ({"lp": True}, 1, False),
                                                  ({"lns": True}, 0, True), ({"lp": True, "lns": True}, 1, True)])
def test_switches_reach_cpsat_on_large_models(switches, lin, inter):
    plan, seen = _plan(**switches)
    assert len(seen) == 1
    n, kw, out, hinted = seen[0]
    assert n > LARGE_MODEL
    assert kw["cp_model_presolve"] is False
    assert kw["linearization_level"] == lin
    assert kw.get("interleave_search", False) is inter
    assert out.solution is not None and hinted is not None and out.objective >= hinted  # never below its hint
    assert plan.kept  # and the round keeps requests
    again, _ = _plan(**switches)
    assert again.assignments == plan.assignments and again.kept == plan.kept  # deterministic


def test_switches_leave_small_models_alone():
    pol = MipPolicy(lp=True, lns=True)

    class Small:
        class model:
            names = ["x"] * 10

    assert set(pol._search_params(Small, 1.0)) == {"quick_s"}
    pol = tetriopt.make_policy("cpsat[lp=1;lns=1]")
    assert pol.lp and pol.lns


def test_lp_mid_only_up_to_its_size():
    from tetriopt.policies.mip import LP_MID

    pol = tetriopt.make_policy("cpsat[lp_mid=1]")
    assert pol._large_search({"linearization_level": 0}, LP_MID)["linearization_level"] == 1
    assert pol._large_search({"linearization_level": 0}, LP_MID + 1)["linearization_level"] == 0
    assert tetriopt.make_policy("cpsat[lp=1]")._large_search({"linearization_level": 0}, 10 * LP_MID)["linearization_level"] == 1
