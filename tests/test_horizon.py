"""horizon: a wide request is admitted only if it leaves room for the cheaper arrivals the
forecast expects before its due time (real CP-SAT, deterministic clock)."""

from __future__ import annotations

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.policies.formulation import build
from tetriopt.policies.horizon import Forecast, add_forecast
from tetriopt.policies.mip import MipPolicy

PROF = tetriopt.load_profile("flux.1-dev-h100")  # 2048 px: 863 / 461 / 249 / 144 ms a step at 1/2/4/8 GPUs
R = 900_000
NOW = 4 * R


def state(now, *reqs):
    return RoundState(now_us=now, round_us=R, cluster=tetriopt.make_cluster(8), profile=PROF, degrees=(1, 2, 4, 8),
                      requests=reqs, round_index=now // R)


def history():
    """40 small requests that arrived over the last four rounds (about what 8 GPUs can serve)."""
    return state(NOW, *(RequestState(f"s{i}", 256, 256, remaining_steps=20, arrival_us=i * 90_000,
                                     deadline_us=i * 90_000 + 1_500_000) for i in range(40)))


BIG = RequestState("big", 2048, 2048, remaining_steps=20, arrival_us=NOW, deadline_us=NOW + 5_000_000)
MID = RequestState("mid", 1024, 1024, remaining_steps=20, arrival_us=NOW, deadline_us=NOW + 3_000_000)


def test_forecast_replays_recent_arrivals_and_charges_only_wide_requests():
    f = Forecast()
    f.observe(history())
    s = state(NOW, BIG, MID)
    ahead = f.arrivals(s)
    # replayed 3.6 s later; those landing just after a boundary cannot make their 1.5 s alone: left out
    assert 30 <= len(ahead) < 40 and all(c == 20 * 40_000 for _, c in ahead)  # 256 px: 20 steps at 1 GPU
    f.observe(s)  # BIG and MID are new arrivals at this boundary: they join the forecast
    assert len(f.recent) == 42
    rm = build(s)
    need = add_forecast(rm, f)
    assert set(need) == {"big"}  # 2048 px needs all 8 GPUs at once; 1024 px needs 2 (narrow)
    assert add_forecast(build(s), f, committed=frozenset({"big"})) == {}  # kept last round: not re-tested


def test_a_wide_request_that_would_shut_out_the_forecast_arrivals_is_not_kept():
    kept = {}
    for on in (False, True):
        pol = MipPolicy(time_limit_ms=200, deterministic=True, forecast=on)
        pol.plan(history())
        kept[on] = pol.plan(state(NOW + R, BIG)).kept
    # alone on an idle cluster it can make it, so without the forecast it is kept; with 40 small
    # arrivals expected before its due time, its 23 GPU-s would leave them too little room
    assert "big" in kept[False]
    assert "big" not in kept[True]
