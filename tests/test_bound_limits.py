"""`tetriopt bound` stays a bound whatever its time limit: a component the search does not finish
contributes a looser valid bound, never the search's incumbent or an unproven figure."""

from __future__ import annotations

import pytest

import tetriopt
from tetriopt.bound import METHODS, upper_bound
from tetriopt.workload import generate


@pytest.fixture(scope="module")
def loaded():
    # 2 GPUs at 4x the paper's rate: long overlapping windows, so components are big
    return tetriopt.parse_instance(generate("flux.1-dev-h100", 2, 60, 24.0, mix="skewed", seed=5), name="loaded")


@pytest.fixture(scope="module")
def met(loaded):
    out = {p: tetriopt.solve(loaded, p).summary["met"] for p in ("greedy", "tetriserve", "tetriserve-stepgain")}
    out["cpsat"] = tetriopt.solve(loaded, "cpsat", time_limit_ms=100, deterministic=True).summary["met"]
    return out


@pytest.mark.parametrize("limit_s", [0.0001, 0.05, 2.0])
def test_bound_never_below_any_policy(loaded, met, limit_s):
    b = upper_bound(loaded, time_limit_s=limit_s)
    assert b.met_bound >= max(met.values()), (limit_s, b.to_json(), met)
    assert b.met_bound <= b.feasible_alone
    assert sum(b.methods.values()) == b.components and set(b.methods) == set(METHODS)
    assert all(c["bound"] >= c["incumbent"] for c in b.per_component)


@pytest.mark.parametrize("mip_s", [1e-6, 0.05, 3.0])
def test_mip_stays_a_bound(loaded, met, mip_s):
    """HiGHS after CP-SAT (`mip_s`, docs/bound.md seventh round) on components CP-SAT leaves
    unproven at 0.05 s (and HiGHS cut short: its dual bound, not its incumbent): never below a
    policy."""
    pytest.importorskip("highspy")
    b = upper_bound(loaded, time_limit_s=0.05, mip_s=mip_s)
    assert max(met.values()) <= b.met_bound <= b.feasible_alone, (b.to_json(), met)
    assert sum(b.methods.values()) == b.components and all(c["bound"] >= c["incumbent"] for c in b.per_component)


@pytest.mark.parametrize("mip_nodes", [1, 50])
def test_mip_nodes_stays_a_bound(loaded, met, mip_nodes):
    """HiGHS stopped by a node limit, no time limit (`mip_nodes` without `mip_s`, docs/bound.md
    eighth round), after CP-SAT at 0.05 s: never below a policy."""
    pytest.importorskip("highspy")
    b = upper_bound(loaded, time_limit_s=0.05, mip_nodes=mip_nodes)
    assert max(met.values()) <= b.met_bound <= b.feasible_alone, (b.to_json(), met)
    assert sum(b.methods.values()) == b.components and all(c["bound"] >= c["incumbent"] for c in b.per_component)


def test_tiny_limit_falls_back_to_feasible_alone(loaded):
    b = upper_bound(loaded, time_limit_s=1e-6)
    assert b.methods["feasible-alone"] == sum(1 for c in b.per_component)  # no multi-request component searched
    assert b.met_bound == b.feasible_alone
    # the limit ends the per-request screen too: the rest count as met, unchecked
    assert b.methods["unchecked"] >= 1 and b.status == "BOUND"
    full = upper_bound(loaded, time_limit_s=2.0)
    assert full.methods["unchecked"] == 0 and b.feasible_alone >= full.feasible_alone


def test_pieces_stay_a_bound(loaded, met, monkeypatch):
    """A component past PIECE_MAX requests is bounded as the sum of its pieces' LP bounds (docs/bound.md,
    fourth round): still at or above every policy, and at most the requests feasible alone."""
    from tetriopt import bound

    monkeypatch.setattr(bound, "PIECE_MAX", 2)  # its components hold up to 4 requests
    monkeypatch.setattr(bound, "PIECE", 2)
    b = upper_bound(loaded, time_limit_s=4.0)
    assert b.methods["pieces"] >= 1, b.to_json()
    assert max(met.values()) <= b.met_bound <= b.feasible_alone, (b.to_json(), met)


@pytest.mark.parametrize("limit_s", [0.0001, 0.05, 0.5])
def test_pieces_stay_a_bound_at_any_limit(loaded, met, monkeypatch, limit_s):
    """Pieces under limits that leave a piece no time, or its LP cut short (GLOP's time-out: the
    duals it has still give a bound, by weak duality, or none and the piece counts whole): never
    below a policy."""
    from tetriopt import bound

    monkeypatch.setattr(bound, "PIECE_MAX", 2)
    monkeypatch.setattr(bound, "PIECE", 2)
    b = upper_bound(loaded, time_limit_s=limit_s)
    assert max(met.values()) <= b.met_bound <= b.feasible_alone, (limit_s, b.to_json(), met)
