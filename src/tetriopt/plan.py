"""Turning a policy's decisions (request, GPU set, steps) into a timed RoundPlan."""

from __future__ import annotations

from typing import Iterable

from .gpusets import gpu_loads, layout
from .state import Assignment, RoundPlan, RoundState

# request id (or, for a batch sharing every step, the tuple of its members' ids), GPUs, steps
Decision = tuple["str | tuple[str, ...]", tuple[int, ...], int]


def members(rid: str | tuple[str, ...]) -> tuple[str, ...]:
    """The requests a decision advances."""
    return (rid,) if isinstance(rid, str) else tuple(rid)


def decision_us(state: RoundState, by_id, rid: str | tuple[str, ...], gpus: tuple[int, ...], steps: int) -> int:
    """How long a decision keeps its GPUs busy (a batch: its members' shared step cost)."""
    ids = members(rid)
    return steps * state.step_us(by_id[ids[0]], len(gpus), len(ids))


def make_plan(state: RoundState, decisions: Iterable[Decision], backend: str,
              keep_order: bool = False, **meta) -> RoundPlan:
    """Lay decisions out in the round: on each set, earliest deadline first (or as given)."""
    by_id = {r.id: r for r in state.requests}
    ds = [d for d in decisions if d[2] > 0]
    if not keep_order:
        ds.sort(key=lambda d: (min(by_id[i].deadline_us for i in members(d[0])), members(d[0])))
    tasks = [(gpus, decision_us(state, by_id, rid, gpus, steps), (rid, gpus, steps)) for rid, gpus, steps in ds]
    # requests that finish this round with their deadline inside it go first where that fits
    urgent = [j for j, (rid, _, steps) in enumerate(ds) if any(
        steps == by_id[i].remaining_steps and by_id[i].deadline_us - state.decode_us(by_id[i]) < state.end_us
        for i in members(rid))]
    placed = layout(tasks, state.now_us, state.round_us, urgent if not keep_order else ())
    assignments = tuple(Assignment(request=members(rid)[0], batch=members(rid)[1:], gpus=gpus, steps=steps,
                                   start_us=s, end_us=e)
                        for (rid, gpus, steps), s, e in placed)
    return RoundPlan(assignments=assignments, backend=backend, **meta)


def overfull_gpus(state: RoundState, decisions: Iterable[Decision]) -> dict[int, int]:
    """GPUs whose work exceeds the round (empty when the decisions fit)."""
    by_id = {r.id: r for r in state.requests}
    loads = gpu_loads((g, decision_us(state, by_id, rid, g, n)) for rid, g, n in decisions)
    return {g: l for g, l in loads.items() if l > state.round_us}


def decisions_of(plan: RoundPlan) -> list[Decision]:
    return [(a.requests if a.batch else a.request, a.gpus, a.steps) for a in plan.assignments]


def batch_error(state: RoundState, a: Assignment) -> str | None:
    """Why a batched assignment breaks the batching rules (None when it keeps them): members
    distinct and pending, one resolution, a batch size the profile prices, the profile's cost."""
    if not a.batch:
        return None
    by_id = {r.id: r for r in state.requests}
    ids = a.requests
    if len(set(ids)) != len(ids):
        return f"batch {ids} lists a request twice"
    if any(i not in by_id for i in ids):
        return f"batch {ids} has a request that is not pending"
    first = by_id[ids[0]]
    if any((by_id[i].width, by_id[i].height) != (first.width, first.height) for i in ids):
        return f"batch {ids} mixes resolutions"
    if len(ids) not in state.profile.batch_sizes:
        return f"batch {ids}: size {len(ids)} not in the profile's {list(state.profile.batch_sizes)}"
    if a.end_us - a.start_us != decision_us(state, by_id, ids, a.gpus, a.steps):
        return f"batch {ids}: lasts {a.end_us - a.start_us} us, profile says {decision_us(state, by_id, ids, a.gpus, a.steps)}"
    return None
