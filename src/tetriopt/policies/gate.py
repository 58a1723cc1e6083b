"""Admission gate for new wide requests from online features (`NAME[gate=...]`, docs/solver.md 4).

What decides the 16-64 GPU points of issue 12 is which 2,048 px requests get an 8-GPU block for
several rounds while later bursts arrive. The hand-written rules (burst.py, the forecast gate,
the quota) each fixed one form of the decision; this one is a parametrised rule whose parameters
are searched on many workloads outside the grid (`benchmarks/gate_sweep.py`). A request is *wide*
when its fastest useful degree is the cluster's widest block (`burst.wide`). When it is first seen
(and can still make its deadline alone, `margins.can_make`), it is given up for good (shown late,
`burst.late`: best effort only) when

    spare <= s  and  load + own > t * blocks * h

where, in block-rounds over the next h rounds (a wide request holds a whole block for
ceil(steps left / a round's steps at the widest degree) rounds, `block_rounds`):
- own: min(h, the request's block-rounds); spare: its whole rounds to its due time less them;
- load: the same for every wide request kept in the previous plan or admitted before it this
  round (deadline order), + c x the previous plan's kept small work (cheapest GPU-time / a block's
  GPU-time of a round), + w x the wide and a x the small arrivals of the last `window` rounds
  (`horizon.Forecast`), replayed over h rounds (same units);
and only while the recent arrivals' least GPU-time (at their cheapest deadline-meeting degree)
is at least u x the cluster's over the window (u0: always), and on clusters of at least b widest
blocks (b1: any).
Written as letter-number items: `cpsat[gate=h4/t0.9/a0.5/c0.5/b8]` (the searched rule; any item
may be left out: the defaults below; n2: only when two or more wide requests arrive in the round,
burst.py's trigger; r: the window). The MIP policies (cpsat, pulp) run DEFAULT unless named
otherwise (`cpsat[gate=0]`: off); other policies only when named. With b8 it acts only on
clusters of 8 widest blocks or more (64 GPUs for FLUX's 2,048 px): smaller clusters plan as before.
"""

from __future__ import annotations

import dataclasses
import re

from ..errors import InputError
from ..lookahead import outlook
from ..state import RequestState, RoundState
from .burst import wide
from .horizon import Forecast, _least
from .margins import can_make

DEFAULT = "h4/t0.9/a0.5/c0.5/b8/s4"  # the searched rule (docs/solver.md 4): the MIP policies' default

_KEYS = {"h": "horizon", "t": "threshold", "s": "spare", "c": "small_kept", "w": "wide_rate",
         "a": "small_rate", "n": "burst", "r": "window", "u": "busy", "b": "blocks"}


@dataclasses.dataclass(frozen=True)
class Gate:
    horizon: int = 4  # rounds looked ahead
    threshold: float = 1.0  # share of the blocks' block-rounds over the horizon the load may reach
    spare: int = 99  # only requests with at most this many spare whole rounds are gated
    small_kept: float = 0.0  # weight of the kept small work
    wide_rate: float = 0.0  # weight of the recent wide arrivals replayed over the horizon
    small_rate: float = 0.0  # weight of the recent small arrivals replayed over the horizon
    burst: int = 1  # gate only when at least this many new wide requests arrive in the round
    window: int = 4  # rounds of recent arrivals (horizon.Forecast)
    blocks: int = 1  # gate only on clusters with at least this many widest blocks
    busy: float = 0.0  # gate only while the recent arrivals' least GPU-time is this share of the cluster's or more


def parse(name: str, spec: str) -> Gate:
    """`h4/t0.9/s2` -> Gate(horizon=4, threshold=0.9, spare=2); a clear error otherwise."""
    out: dict[str, float] = {}
    for item in filter(None, spec.split("/")):
        m = re.fullmatch(r"([a-z])(\d+(?:\.\d+)?)", item)
        if not m or m.group(1) not in _KEYS:
            raise InputError("policy", name, f"gate item '{item}' is not one of h,t,s,c,w,a,n,r,u,b and a number (e.g. gate=h4/t1/s2)")
        out[_KEYS[m.group(1)]] = float(m.group(2))
    for k in ("horizon", "spare", "burst", "window", "blocks"):
        if k in out:
            out[k] = int(out[k])
    g = Gate(**out)
    if g.horizon < 1 or g.window < 1:
        raise InputError("policy", name, "gate h and r must be at least 1")
    return g


def block_rounds(state: RoundState, r: RequestState) -> int:
    """Rounds r holds a widest block at full speed to finish (a round's steps at the widest degree)."""
    return -(-r.remaining_steps // max(1, state.max_steps(r, state.widest)))


def _block_us(state: RoundState) -> int:
    return state.widest * state.round_us


def _recent(state: RoundState, fc: Forecast) -> tuple[float, float, float]:
    """Over the recent arrivals (`fc.recent`): the wide ones' block-rounds, the small ones' least
    GPU-time in block-rounds, and all of them's least GPU-time in block-rounds."""
    memo = state.memo.setdefault(("gate", "recent"), {})
    wide_br = small_br = least_br = 0.0
    for _, w, h, steps, slo in fc.recent:
        key = (w, h, steps, slo)
        if key not in memo:
            r = RequestState(id="~", width=w, height=h, remaining_steps=steps, deadline_us=state.end_us + slo,
                             arrival_us=state.end_us)
            least = _least(state, r)
            memo[key] = (bool(wide(state, r)), block_rounds(state, r), least[0] / _block_us(state) if least else 0.0)
        is_wide, br, lb = memo[key]
        if is_wide:
            wide_br += br
        else:
            small_br += lb
        least_br += lb
    return wide_br, small_br, least_br


def give_up(state: RoundState, new: set[str], kept: set[str], fc: Forecast, g: Gate) -> set[str]:
    """The new wide requests of this round the gate gives up (see the module docstring)."""
    blocks = state.cluster.gpus // state.widest if state.widest else 0
    if blocks < max(1, g.blocks):
        return set()
    cand = sorted((r for r in state.requests if r.id in new and wide(state, r) and can_make(state, r)),
                  key=lambda r: (r.deadline_us, r.arrival_us, r.id))
    if len(cand) < max(1, g.burst):
        return set()
    h = g.horizon
    wide_br, small_br, least_br = _recent(state, fc)
    if least_br < g.busy * blocks * fc.window_rounds:
        return set()
    load = h / fc.window_rounds * (g.wide_rate * wide_br + g.small_rate * small_br)
    for r in state.requests:
        if r.id in kept and r.id not in new and outlook(state, r).alive:
            if wide(state, r):
                load += min(h, block_rounds(state, r))
            elif g.small_kept:
                load += g.small_kept * outlook(state, r).cheapest_cost * r.remaining_steps / _block_us(state)
    out: set[str] = set()
    for r in cand:
        n = block_rounds(state, r)
        spare = (state.due_us(r) - state.now_us) // state.round_us - n
        if spare <= g.spare and load + min(h, n) > g.threshold * blocks * h:
            out.add(r.id)
        else:
            load += min(h, n)
    return out
