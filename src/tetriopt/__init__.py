"""tetriopt: deadline-aware step-level sequence-parallel scheduling of DiT image generation.

    inst = tetriopt.load_instance("instances/quickstart.json")
    result = tetriopt.solve(inst, policy="cpsat")
    plan = tetriopt.solve_round(state, policy="cpsat")   # one round, your own state
    why = tetriopt.check_plan(state, plan)               # None: the plan can run
"""

from __future__ import annotations

from .errors import InputError
from .instance import Cluster, Instance, Request, load_instance, make_cluster, parse_instance
from .engine import RoundEngine
from .plan import Assignment, RoundPlan, check_plan
from .policies import make_policy
from .profile import CostProfile, load_profile
from .result import SolveResult
from .state import RequestState, RoundState

__all__ = ["Assignment", "Cluster", "CostProfile", "InputError", "Instance", "Request", "RequestState",
           "RoundEngine", "RoundPlan", "RoundState", "SolveResult", "check_plan", "load_instance", "load_profile",
           "make_cluster", "make_policy", "parse_instance", "solve", "solve_round"]


def solve(instance: Instance, policy: str = "cpsat", progress=None, **options) -> SolveResult:
    """Schedule a whole workload round by round in simulated time."""
    from .simulate import simulate

    return simulate(instance, policy, progress=progress, **options)


def solve_round(state: RoundState, policy: str = "cpsat", **options) -> RoundPlan:
    """Plan one round for a caller's own state (stateless: a fresh policy each call)."""
    return make_policy(policy, **options).plan(state)
