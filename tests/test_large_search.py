"""CP-SAT's parameters by model size (MipPolicy._search_params): a large round model is searched
without presolve, LP or interleaving, probing at level 1, from its hint; a small one gets the
quick slice. Real CP-SAT, deterministic clock, pinned seed and one worker. (The `lp`, `lp_mid` and
`lns` switches tested here before were removed: docs/solver.md 4.)"""

from __future__ import annotations

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


def _plan():
    seen = []
    orig = backends.BACKENDS["cpsat"]

    def spy(m, limit_s, **kw):
        out = orig(m, limit_s, **kw)
        seen.append((len(m.names), kw, out, None if kw.get("hint") is None else m.value(kw["hint"])))
        return out

    backends.BACKENDS["cpsat"] = spy
    try:
        plan = MipPolicy(time_limit_ms=100, seed=0, workers=1, deterministic=True).plan(_state())
    finally:
        backends.BACKENDS["cpsat"] = orig
    return plan, seen


def test_large_models_are_searched_plain_from_the_hint():
    plan, seen = _plan()
    assert len(seen) == 1
    n, kw, out, hinted = seen[0]
    assert n > LARGE_MODEL
    assert kw["cp_model_presolve"] is False and kw["cp_model_probing_level"] == 1
    assert kw["linearization_level"] == 0 and "interleave_search" not in kw
    assert out.solution is not None and hinted is not None and out.objective >= hinted  # never below its hint
    assert plan.kept  # and the round keeps requests
    again, _ = _plan()
    assert again.assignments == plan.assignments and again.kept == plan.kept  # deterministic


def test_small_models_get_the_quick_slice():
    class Small:
        class model:
            names = ["x"] * 10

    assert set(MipPolicy()._search_params(Small, 1.0)) == {"quick_s"}
