"""Round policies. Every policy maps a RoundState to a RoundPlan; `make_policy` builds one by name."""

from __future__ import annotations

from .base import POLICY_NAMES, Policy, make_policy

__all__ = ["POLICY_NAMES", "Policy", "make_policy"]
