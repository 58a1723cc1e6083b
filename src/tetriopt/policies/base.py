"""The policy interface and the registry of names usable on the command line."""

from __future__ import annotations

import re
from typing import Any, Protocol

from ..errors import InputError
from ..state import RoundPlan, RoundState


class Policy(Protocol):
    name: str

    def plan(self, state: RoundState) -> RoundPlan:
        """Decide one round. May keep state between calls (hints, sticky groups)."""


POLICY_NAMES = ("cpsat", "pulp", "tetriserve", "greedy", "fixed-sp-K", "rssp[:SIZE=K,...]")


def make_policy(name: str, **options: Any) -> Policy:
    """A fresh policy by name: cpsat, pulp, tetriserve[-schedule|-placement], greedy, fixed-sp-K."""
    from .fixed import FixedSP
    from .greedy import Greedy
    from .mip import MipPolicy
    from .tetriserve import TetriServe

    if name in ("cpsat", "pulp"):
        return MipPolicy(backend=name, **options)
    # heuristics take no solver options; the CLI passes them to every policy alike
    batching = bool(options.get("batching", False))  # policies that cannot batch ignore it
    if name == "greedy":
        return Greedy(batching=batching)
    m = re.fullmatch(r"tetriserve(?:-(schedule|placement|full))?", name)
    if m:
        return TetriServe(variant=m.group(1) or "full", batching=batching)
    if name == "rssp" or name.startswith("rssp:"):  # issue 8: resolution-specific static SP
        from .rssp import RSSP, parse_mapping
        return RSSP(parse_mapping(name[5:]) if name.startswith("rssp:") else None)
    m = re.fullmatch(r"fixed-sp-(\d+)", name)
    if m:
        return FixedSP(int(m.group(1)))
    raise InputError("policy", name, f"unknown policy; choose from {', '.join(POLICY_NAMES)}")
