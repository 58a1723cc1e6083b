"""Round plans compiled into one global task order that every worker replays identically.

Why a global order: each worker walks the same list and runs only the tasks on its ranks, so
collectives on a group happen in the same order on all its members and every hand-off receive
waits only on a task earlier in the list. That rules out deadlock without any coordinator
messages between steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence


class PlanError(ValueError):
    """A plan the runtime cannot execute (unknown request, unaligned set, wrong step count)."""


def aligned_blocks(world: int) -> tuple[tuple[int, ...], ...]:
    """Every GPU set the scheduler may pick: aligned power-of-two blocks of ranks 0..world-1.

    Ordered by size then first rank, so every rank creates the groups in the same order.
    """
    out: list[tuple[int, ...]] = []
    k = 1
    while k <= world:
        out.extend(tuple(range(j, j + k)) for j in range(0, world - k + 1, k))
        k *= 2
    return tuple(out)


@dataclass(frozen=True)
class Task:
    """One assignment in global order, with what it must receive and hand on."""

    index: int
    request: str
    gpus: tuple[int, ...]
    step_start: int  # index of the first denoising step it runs
    steps: int
    prev_gpus: tuple[int, ...] | None  # set that ran this request's previous task (None: first)
    next_gpus: tuple[int, ...] | None  # set of the next task (None: last; decode follows)
    needs_cond: tuple[int, ...]  # ranks of `gpus` that have never held this request's conditioning

    @property
    def degree(self) -> int:
        return len(self.gpus)

    @property
    def leader(self) -> int:
        return self.gpus[0]

    @property
    def is_first(self) -> bool:
        return self.prev_gpus is None

    @property
    def is_last(self) -> bool:
        return self.next_gpus is None


def _triples(round_: Any) -> list[tuple[str, tuple[int, ...], int]]:
    items = getattr(round_, "assignments", round_)  # a tetriopt RoundPlan or a list
    out = []
    for a in items:
        if isinstance(a, Mapping):
            rid, gpus, steps = a["request"], a["gpus"], a["steps"]
        elif hasattr(a, "request"):
            rid, gpus, steps = a.request, a.gpus, a.steps
        else:
            rid, gpus, steps = a
        out.append((str(rid), tuple(int(g) for g in gpus), int(steps)))
    return out


def compile_plan(rounds: Iterable[Any], total_steps: Mapping[str, int], world: int) -> list[Task]:
    """Flatten rounds into the global task order and check the plan covers every request exactly.

    Within a round tasks follow tetriopt's layout rule (larger sets first, then first GPU, then
    plan order), which is also the order they run in on a shared GPU.
    """
    allowed = set(aligned_blocks(world))
    flat: list[tuple[str, tuple[int, ...], int]] = []
    for r, round_ in enumerate(rounds):
        ts = _triples(round_)
        order = sorted(range(len(ts)), key=lambda i: (-len(ts[i][1]), ts[i][1][0] if ts[i][1] else 0, i))
        for i in order:
            rid, gpus, steps = ts[i]
            if rid not in total_steps:
                raise PlanError(f"round {r}: unknown request {rid!r}")
            if gpus not in allowed:
                raise PlanError(f"round {r}: GPU set {gpus} is not an aligned power-of-two block of {world} ranks")
            if steps <= 0:
                raise PlanError(f"round {r}: request {rid!r} gets {steps} steps (must be positive)")
            flat.append((rid, gpus, steps))
    done: dict[str, int] = {}
    for rid, _, steps in flat:
        done[rid] = done.get(rid, 0) + steps
    for rid, n in total_steps.items():
        if done.get(rid, 0) != n:
            raise PlanError(f"request {rid!r}: plan runs {done.get(rid, 0)} steps, request has {n}")
    tasks: list[Task] = []
    last: dict[str, int] = {}
    seen: dict[str, set[int]] = {}
    started: dict[str, int] = {}
    for i, (rid, gpus, steps) in enumerate(flat):
        prev = flat[last[rid]][1] if rid in last else None
        held = seen.setdefault(rid, set())
        tasks.append(Task(index=i, request=rid, gpus=gpus, step_start=started.get(rid, 0), steps=steps,
                          prev_gpus=prev, next_gpus=None,
                          needs_cond=tuple(g for g in gpus if g not in held)))
        if rid in last:
            j = last[rid]
            t = tasks[j]
            tasks[j] = Task(**{**t.__dict__, "next_gpus": gpus})
        held.update(gpus)
        last[rid] = i
        started[rid] = started.get(rid, 0) + steps
    return tasks


def first_ranks(tasks: Sequence[Task]) -> dict[str, tuple[int, ...]]:
    """Ranks of each request's first task: they get its initial latent and conditioning."""
    out: dict[str, tuple[int, ...]] = {}
    for t in tasks:
        out.setdefault(t.request, t.gpus)
    return out
