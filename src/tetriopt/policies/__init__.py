"""Round policies. Every policy maps a RoundState to a RoundPlan; `make_policy` builds one by name."""

from __future__ import annotations

from .base import POLICY_NAMES, REGISTRY, Policy, PolicyKind, bench_policies, make_policy, policy_help

__all__ = ["POLICY_NAMES", "REGISTRY", "Policy", "PolicyKind", "bench_policies", "make_policy", "policy_help"]
