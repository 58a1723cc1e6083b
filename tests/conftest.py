"""Shared helpers: small random instances and the validator applied to a solve."""

from __future__ import annotations

from pathlib import Path

import pytest

import tetriopt
from tetriopt.validate import validate_result

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = sorted((ROOT / "instances").glob("*.json"))
HEURISTICS = ["greedy", "tetriserve", "tetriserve-schedule", "tetriserve-placement",
              "fixed-sp-1", "fixed-sp-2", "fixed-sp-4", "fixed-sp-8"]


def solve_checked(inst, policy, **opts):
    res = tetriopt.solve(inst, policy, **opts)
    errs = validate_result(inst, res.to_json())
    assert not errs, f"{policy} on {inst.name}: {errs[:5]}"
    return res


@pytest.fixture
def solve_valid():
    return solve_checked
