"""Turning a policy's decisions (request, GPU set, steps) into a timed RoundPlan."""

from __future__ import annotations

from typing import Iterable

from .gpusets import gpu_loads, layout
from .state import Assignment, RoundPlan, RoundState

Decision = tuple[str, tuple[int, ...], int]  # request id, GPUs, steps


def make_plan(state: RoundState, decisions: Iterable[Decision], backend: str,
              keep_order: bool = False, **meta) -> RoundPlan:
    """Lay decisions out in the round: on each set, earliest deadline first (or as given)."""
    by_id = {r.id: r for r in state.requests}
    ds = [d for d in decisions if d[2] > 0]
    if not keep_order:
        ds.sort(key=lambda d: (by_id[d[0]].deadline_us, d[0]))
    tasks = [(gpus, steps * state.step_us(by_id[rid], len(gpus)), (rid, gpus, steps)) for rid, gpus, steps in ds]
    # requests that finish this round with their deadline inside it go first where that fits
    urgent = [j for j, (rid, _, steps) in enumerate(ds) if steps == by_id[rid].remaining_steps
              and state.due_us(by_id[rid]) < state.end_us]
    placed = layout(tasks, state.now_us, state.round_us, urgent if not keep_order else ())
    assignments = tuple(Assignment(request=rid, gpus=gpus, steps=steps, start_us=s, end_us=e)
                        for (rid, gpus, steps), s, e in placed)
    return RoundPlan(assignments=assignments, backend=backend, **meta)


def overfull_gpus(state: RoundState, decisions: Iterable[Decision]) -> dict[int, int]:
    """GPUs whose work exceeds the round (empty when the decisions fit)."""
    by_id = {r.id: r for r in state.requests}
    loads = gpu_loads((g, n * state.step_us(by_id[rid], len(g))) for rid, g, n in decisions)
    return {g: l for g, l in loads.items() if l > state.round_us}


def decisions_of(plan: RoundPlan) -> list[Decision]:
    return [(a.request, a.gpus, a.steps) for a in plan.assignments]
