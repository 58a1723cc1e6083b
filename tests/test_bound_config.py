"""The configuration LP of benchmarks/config_lp.py (docs/bound.md, sixth round; not the bound's
default): its Lagrangian bound stays a bound on tiny instances whose true optimum an exhaustive
search gives. Needs highspy (its master LP), skipped without it."""

from __future__ import annotations

import math
import os
import sys

import pytest

from tetriopt import bound

from .test_bound import brute_force_max_met, tiny4_profile, tiny_instance  # noqa: F401  (a fixture)

pytest.importorskip("highspy")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import config_lp  # noqa: E402


def config_bound(inst, kind: str) -> int:
    """The floored Lagrangian bounds of the components summed (singletons count 1)."""
    met = 0
    for comp in bound.components(bound.feasible_alone(inst)):
        if len(comp) == 1:
            met += 1
            continue
        r = config_lp.run(inst, comp, kind, time_s=30, price_s=2.0, log=lambda *a, **k: None)
        met += min(len(comp), math.floor(r["lagrangian"] + 1e-6))
    return met


@pytest.mark.parametrize("kind", ["gpu", "block"])
@pytest.mark.parametrize("seed", range(8))
def test_configuration_lp_stays_a_bound(tiny4_profile, seed, kind):  # noqa: F811
    """4 GPUs, degrees 1 / 2 / 4 (one block of 4): the configuration LP's Lagrangian bound is never
    below the exhaustive optimum of the simulator's plan space."""
    inst = tiny_instance(tiny4_profile, seed, gpus=4)
    assert config_bound(inst, kind) >= brute_force_max_met(inst)
