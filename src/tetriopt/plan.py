"""A round's answer: assignments with times, how decisions become one, and the one plan checker.

`make_plan` turns a policy's decisions (request, GPU set, steps) into a timed `RoundPlan`;
`check_plan` is the single gate every plan passes before anything executes it (the simulator,
the server's planner and, through the server, the runtime), with the strictest rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

from .gpusets import gpu_loads, layout
from .state import RoundState

# request id (or, for a batch sharing every step, the tuple of its members' ids), GPUs, steps
Decision = tuple["str | tuple[str, ...]", tuple[int, ...], int]


def members(rid: str | tuple[str, ...]) -> tuple[str, ...]:
    """The requests a decision advances."""
    return (rid,) if isinstance(rid, str) else tuple(rid)


def decision_us(state: RoundState, by_id, rid: str | tuple[str, ...], gpus: tuple[int, ...], steps: int,
                before: Mapping[str, int] | None = None) -> int:
    """How long a decision keeps its GPUs busy: its steps (a batch: its members' shared step cost)
    and each member's encode / decode (`RoundState.aux_us`; `before`: steps of each member in
    its earlier assignments this round, if a request has several). Every assignment's duration is this."""
    ids = members(rid)
    return (steps * state.step_us(by_id[ids[0]], len(gpus), len(ids))
            + sum(state.aux_us(by_id[i], steps, (before or {}).get(i, 0)) for i in ids))


def durations(state: RoundState, by_id, decisions: Iterable[Decision]) -> list[int]:
    """decision_us of each decision in the order they run (a request's first one encodes, the one
    reaching its remaining steps decodes)."""
    before: dict[str, int] = {}
    out = []
    for rid, gpus, steps in decisions:
        out.append(decision_us(state, by_id, rid, gpus, steps, before))
        for i in members(rid):
            before[i] = before.get(i, 0) + steps
    return out


class PlanStatus(str, Enum):
    """How a round's plan was found (str-valued: JSON and comparisons with plain strings unchanged)."""

    OPTIMAL = "OPTIMAL"      # the solver proved it best
    FEASIBLE = "FEASIBLE"    # the solver's best within its limit, or of a restricted model
    FALLBACK = "FALLBACK"    # a heuristic answered for the solver (limit, error, or better)
    HEURISTIC = "HEURISTIC"  # a heuristic policy's own plan

    def __str__(self) -> str:
        return self.value


# The note of a round where the rollout ran the heuristic's plan: CP-SAT answered, and playing both
# plans forward on the known requests showed the heuristic's meets more (not a solver failure).
ROLLOUT_CHOICE = "rollout: tetriserve's plan meets"


def rollout_choice(status: str, note: str) -> bool:
    """Whether a FALLBACK round is the rollout's choice (counted apart: the solver did decide)."""
    return status == PlanStatus.FALLBACK and note.startswith(ROLLOUT_CHOICE)


@dataclass(frozen=True)
class Assignment:
    """`steps` steps of `request` on `gpus` in [start_us, end_us).

    `batch`: the other requests (same resolution) whose latents share every one of these steps,
    each advancing by `steps`; empty for a request alone. `immediate`: started on arrival, mid-round,
    on GPUs the round's plan leaves idle (immediate.py).
    """

    request: str
    gpus: tuple[int, ...]
    steps: int
    start_us: int
    end_us: int
    batch: tuple[str, ...] = ()
    immediate: bool = False

    @property
    def degree(self) -> int:
        return len(self.gpus)

    @property
    def requests(self) -> tuple[str, ...]:
        """Every request this assignment advances (the first is `request`)."""
        return (self.request, *self.batch)


@dataclass(frozen=True)
class RoundPlan:
    """A round's decisions. `kept` are the requests the policy still aims to finish on time."""

    assignments: tuple[Assignment, ...]
    backend: str
    status: str = PlanStatus.HEURISTIC  # a PlanStatus (solver backends may hand plain strings)
    objective: float | None = None
    bound: float | None = None
    solve_ms: float = 0.0
    kept: tuple[str, ...] | None = None
    note: str = ""


def make_plan(state: RoundState, decisions: Iterable[Decision], backend: str,
              keep_order: bool = False, **meta) -> RoundPlan:
    """Lay decisions out in the round: on each set, earliest deadline first (or as given)."""
    by_id = {r.id: r for r in state.requests}
    ds = [d for d in decisions if d[2] > 0]
    if not keep_order:
        ds.sort(key=lambda d: (min(by_id[i].deadline_us for i in members(d[0])), members(d[0])))
    tasks = [(gpus, dur, (rid, gpus, steps)) for (rid, gpus, steps), dur in zip(ds, durations(state, by_id, ds))]
    # requests that finish this round with their deadline inside it go first where that fits; not
    # those the plan gave up or that miss even when run first (a 256 px request already late,
    # sorted first by its deadline, pushed a kept 512 px one past its own on 64 GPUs)
    kept = meta.get("kept")
    urgent = [j for j, ((rid, _, steps), (_, dur, _)) in enumerate(zip(ds, tasks)) if any(
        steps == by_id[i].remaining_steps and state.due_us(by_id[i]) < state.end_us
        and state.now_us + dur <= by_id[i].deadline_us and (kept is None or i in kept) for i in members(rid))]
    placed = layout(tasks, state.now_us, state.round_us, urgent if not keep_order else ())
    assignments = tuple(Assignment(request=members(rid)[0], batch=members(rid)[1:], gpus=gpus, steps=steps,
                                   start_us=s, end_us=e)
                        for (rid, gpus, steps), s, e in placed)
    return RoundPlan(assignments=assignments, backend=backend, **meta)


def overfull_gpus(state: RoundState, decisions: Iterable[Decision]) -> dict[int, int]:
    """GPUs whose work exceeds the round (empty when the decisions fit)."""
    by_id = {r.id: r for r in state.requests}
    decisions = list(decisions)
    loads = gpu_loads((g, dur) for (_, g, _), dur in zip(decisions, durations(state, by_id, decisions)))
    return {g: l for g, l in loads.items() if l > state.round_us}


def decisions_of(plan: RoundPlan) -> list[Decision]:
    return [(a.requests if a.batch else a.request, a.gpus, a.steps) for a in plan.assignments]


def check_plan(state: RoundState, plan: RoundPlan) -> str | None:
    """Why `plan` cannot be executed on `state` (None if it can); the first rule broken.

    Each assignment: a known request, distinct GPUs forming an aligned set of an allowed degree,
    0 < steps, inside the round, lasting exactly steps x the profile's step time at that degree plus
    its encode / decode (`decision_us`).
    Per request: steps summing to at most its remaining ones, no two assignments at once. Per
    GPU: no two assignments at once (so no GPU is over the round either). A batch (`batch`):
    distinct pending members of one resolution, a batch size the profile prices, its cost.
    """
    by_id = {r.id: r for r in state.requests}
    per_req: dict[str, list[tuple[int, int, int]]] = {}
    per_gpu: dict[int, list[tuple[int, int, str]]] = {}
    before: dict[str, int] = {}  # steps of each request in its assignments starting earlier
    for a in sorted(plan.assignments, key=lambda a: (a.start_us, a.end_us)):
        r = by_id.get(a.request)
        if r is None:
            return f"assignment for unknown request {a.request!r}"
        k = len(a.gpus)
        if len(set(a.gpus)) != k:
            return f"{a.request}: GPUs {a.gpus} repeat a GPU"
        if k not in state.degrees:
            return f"{a.request}: degree {k} not allowed (degrees {state.degrees})"
        if a.gpus not in state.cluster.sets(k):  # (not state.sets: that builds every degree's list)
            return f"{a.request}: GPU set {a.gpus} is not an aligned set"
        if not 0 < a.steps <= r.remaining_steps:
            return f"{a.request}: {a.steps} steps, {r.remaining_steps} remaining"
        if a.start_us < state.now_us or a.end_us > state.end_us:
            return f"{a.request}: [{a.start_us}, {a.end_us}] outside the round [{state.now_us}, {state.end_us}]"
        if a.batch:
            why = batch_error(state, a, before)
            if why:
                return why
        elif a.end_us - a.start_us != decision_us(state, by_id, a.request, a.gpus, a.steps, before):
            return (f"{a.request}: lasts {a.end_us - a.start_us} us, the profile says {a.steps} x {state.step_us(r, k)}"
                    f" us + {state.aux_us(r, a.steps, before.get(a.request, 0))} us encode/decode")
        for i in a.requests:
            if not a.steps <= by_id[i].remaining_steps:
                return f"{i}: {a.steps} steps, {by_id[i].remaining_steps} remaining"
            per_req.setdefault(i, []).append((a.start_us, a.end_us, a.steps))
            before[i] = before.get(i, 0) + a.steps
        for g in a.gpus:
            per_gpu.setdefault(g, []).append((a.start_us, a.end_us, a.request))
    for rid, ivs in per_req.items():
        total = sum(n for _, _, n in ivs)
        if total > by_id[rid].remaining_steps:
            return f"{rid}: {total} steps over its assignments, {by_id[rid].remaining_steps} remaining"
        ivs.sort()
        for (s1, e1, _), (s2, _, _) in zip(ivs, ivs[1:]):
            if s2 < e1:
                return f"{rid}: two assignments at once ([{s1}, {e1}] and one starting at {s2})"
    for g, ivs in per_gpu.items():
        ivs.sort()
        for (s1, e1, r1), (s2, e2, r2) in zip(ivs, ivs[1:]):
            if s2 < e1:
                return f"GPU {g} double-booked: {r1} [{s1}, {e1}] and {r2} [{s2}, {e2}]"
    return None


def batch_error(state: RoundState, a: Assignment, before: Mapping[str, int] | None = None) -> str | None:
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
    want = decision_us(state, by_id, ids, a.gpus, a.steps, before)
    if a.end_us - a.start_us != want:
        return f"batch {ids}: lasts {a.end_us - a.start_us} us, profile says {want}"
    return None
