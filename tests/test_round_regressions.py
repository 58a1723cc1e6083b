"""Rounds that once broke the simulation: a fallback round under a backlog assigned requests the
heuristic plan already held a second time (remaining steps went negative, then the simulator
stopped with "ran nothing for 1001 rounds")."""

from __future__ import annotations

from pathlib import Path

import pytest

import tetriopt
from tetriopt.validate import validate_result
from tetriopt.workload import generate

ROOT = Path(__file__).resolve().parents[1]
REPRO = next((p for p in (ROOT / "shared" / "repro", ROOT.parent / "shared" / "repro") if p.is_dir()), None)


def test_fallback_rounds_under_a_backlog_assign_each_request_once():
    # issue 12's repro: 8 GPUs, ~33 pending, a 1 ms limit so that every round falls back
    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 8, 320, 142.2, seed=0), name="backlog")
    res = tetriopt.solve(inst, "cpsat", time_limit_ms=1, seed=0, workers=1)
    assert not validate_result(inst, res.to_json())
    for rd in {rd for rd, _ in res.assignments}:
        ids = [a.request for r, a in res.assignments if r == rd]
        assert len(ids) == len(set(ids)), rd


@pytest.mark.slow
@pytest.mark.skipif(REPRO is None, reason="shared/repro not in this checkout")
def test_server_overload_repro_solves():
    inst = tetriopt.load_instance(REPRO / "overload-loadgen-r5.json")
    res = tetriopt.solve(inst, "cpsat", time_limit_ms=180, seed=0, workers=1)
    assert not validate_result(inst, res.to_json())
