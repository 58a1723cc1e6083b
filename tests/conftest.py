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


def refused(policy: str, err: Exception) -> bool:
    """A fixed-degree policy refusing an instance where a request's last step and VAE decode at its
    degree are longer than the round (the plan charges both inside a round), with that one line."""
    return (policy.startswith("fixed-sp-") and isinstance(err, tetriopt.InputError)
            and "longer than the round" in str(err))


def solve_or_refused(inst, policy, **opts):
    """tetriopt.solve, or None where the policy refuses the instance (see `refused`)."""
    try:
        return tetriopt.solve(inst, policy, **opts)
    except tetriopt.InputError as e:
        if refused(policy, e):
            return None
        raise


def solve_checked(inst, policy, **opts):
    res = solve_or_refused(inst, policy, **opts)
    if res is None:
        return None
    errs = validate_result(inst, res.to_json())
    assert not errs, f"{policy} on {inst.name}: {errs[:5]}"
    return res


@pytest.fixture
def solve_valid():
    return solve_checked
