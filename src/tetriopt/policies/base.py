"""The policy interface and the one registry of policy names (CLI help, errors, bench defaults)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InputError
from ..plan import RoundPlan
from ..state import RoundState


class Policy(Protocol):
    name: str

    def plan(self, state: RoundState) -> RoundPlan:
        """Decide one round. May keep state between calls (hints, sticky groups)."""


@dataclass(frozen=True)
class PolicyKind:
    """A family of policy names: how it is written, what it is, and whether `bench` runs it by default."""

    pattern: str   # the name as written on the command line (K, SIZE: numbers to fill in)
    help: str
    bench: bool = True


REGISTRY = (
    PolicyKind("cpsat[SWITCH=0|1;...]", "the round MIP on OR-Tools CP-SAT (the default; switches for ablations, e.g. cpsat[rollout=0]; cpsat[gate=0]: without the admission gate)"),
    PolicyKind("pulp", "the same MIP through PuLP/CBC", bench=False),
    PolicyKind("tetriserve", "the TetriServe paper's policy, re-implemented (work-conserving scale-up by per-step time saved)"),
    PolicyKind("tetriserve-stepgain", "TetriServe ablation: the earlier scale-up rule (extra whole steps, buddy doubling only)"),
    PolicyKind("tetriserve-placement", "TetriServe ablation: without the work-conserving scale-up"),
    PolicyKind("tetriserve-schedule", "TetriServe ablation: its schedule on first-fit placement"),
    PolicyKind("rssp[:SIZE=K,...]", "one fixed degree per resolution (bench: the hindsight mapping)"),
    PolicyKind("NAME[margin=PX:MS/...;burst=0|1;gate=h4/t0.9/...]", "any policy shown deadlines earlier per resolution where still makeable alone, bursts of wide requests admitted by block-rounds, or new wide requests gated on committed blocks and recent arrivals (ablations, margins.py, gate.py)", bench=False),
    PolicyKind("greedy", "EDF with admission by the joint test (the MIP's fallback)"),
    PolicyKind("fixed-sp-K", "xDiT-style: N/K fixed groups of K GPUs, first come first served"),
)
POLICY_NAMES = tuple(k.pattern for k in REGISTRY)


def policy_help() -> str:
    """One line for a `--policy` option."""
    return ", ".join(POLICY_NAMES)


def bench_policies(gpus: int) -> list[str]:
    """The policies `tetriopt bench` runs by default on `gpus` GPUs (fixed-sp-K for every K that fits)."""
    out: list[str] = []
    for kind in REGISTRY:
        if not kind.bench:
            continue
        if kind.pattern == "fixed-sp-K":
            out += [f"fixed-sp-{1 << i}" for i in range(gpus.bit_length()) if 1 << i <= gpus]
        else:
            out.append(kind.pattern.split("[")[0])
    return out


def switches(name: str, spec: str) -> dict[str, bool]:
    """The on/off MipPolicy switches of a name such as `cpsat[rollout=0;symmetry=0]`, so that an
    ablation runs side by side with the default in one benchmark (`benchmarks/grid.py`, `cpu_ratio.py`)."""
    import inspect

    from .mip import MipPolicy

    known = {k for k, p in inspect.signature(MipPolicy).parameters.items() if isinstance(p.default, bool)}
    out: dict[str, bool] = {}
    for item in filter(None, spec.split(";")):
        key, _, value = item.partition("=")
        if key not in known or value not in ("0", "1"):
            raise InputError("policy", name, f"'{item}' is not a switch=0|1 of {', '.join(sorted(known))}")
        out[key] = value == "1"
    return out


def make_policy(name: str, **options: Any) -> Policy:
    """A fresh policy by name (see REGISTRY). Heuristics take no solver options; the CLI passes
    them to every policy alike."""
    from . import margins

    inner, shown = margins.split(name)
    if shown:  # deadlines shown early or wide requests gated (margins.py, gate.py), around any policy
        return margins.ShownEarly(_plain(inner, name, **options), shown, name)
    return _plain(inner, name, **options)


def _plain(inner: str, name: str, **options: Any) -> Policy:
    """The policy `inner` (a name without margin/burst/gate items) of `name`."""
    from .fixed import FixedSP
    from .greedy import Greedy
    from .mip import MipPolicy
    from .tetriserve import TetriServe

    m = re.fullmatch(r"(cpsat|pulp)(?:\[(.*)\])?", inner)
    if m:
        return MipPolicy(backend=m.group(1), **{**options, **switches(name, m.group(2) or "")})
    batching = bool(options.get("batching", False))  # heuristics that cannot batch ignore it
    if inner == "greedy":
        return Greedy(batching=batching)
    m = re.fullmatch(r"tetriserve(?:-(schedule|placement|full|stepgain))?", inner)
    if m:
        return TetriServe(variant=m.group(1) or "full", batching=batching)
    if inner == "rssp" or inner.startswith("rssp:"):  # issue 8: resolution-specific static SP
        from .rssp import RSSP, parse_mapping
        return RSSP(parse_mapping(inner[5:]) if inner.startswith("rssp:") else None)
    m = re.fullmatch(r"fixed-sp-(\d+)", inner)
    if m:
        return FixedSP(int(m.group(1)))
    raise InputError("policy", name, f"unknown policy; choose from {policy_help()}")
