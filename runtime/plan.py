"""Round plans compiled into one global task order that every worker replays identically.

Why a global order: each worker walks the same list and runs only the tasks on its ranks, so
collectives on a group happen in the same order on all its members and every hand-off receive
waits only on a task earlier in the list. That rules out deadlock without any coordinator
messages between steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence


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
    next_gpus: tuple[int, ...] | None  # None on the request's last task (decode follows), else ()
    needs_cond: tuple[int, ...]  # ranks of `gpus` that have never held this request's conditioning
    # a batched assignment (same-size requests sharing every step): all its members' ids, in the
    # order of their tasks, which are consecutive in the global order; () for a request alone
    batch: tuple[str, ...] = ()

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

    @property
    def closes_batch(self) -> bool:
        """The steps run here: at a request alone, or at the last member task of a batch (after
        every member's hand-off, which happen at their own tasks' places)."""
        return not self.batch or self.request == self.batch[-1]


def _members(rid: Any) -> tuple[str, ...]:
    """A decision's request: one id, or a batch's ids (a tuple or list, as tetriopt's decisions)."""
    return (str(rid),) if isinstance(rid, str) or not isinstance(rid, (tuple, list)) else tuple(str(i) for i in rid)


def _items(round_: Any) -> list[tuple[tuple[str, ...], tuple[int, ...], int, Optional[int]]]:
    """(requests, gpus, steps, planned start in us or None) of each assignment of a round; more
    than one request: a batch sharing every step (tetriopt's `Assignment.batch`)."""
    items = getattr(round_, "assignments", round_)  # a tetriopt RoundPlan or a list
    out = []
    for a in items:
        start = None
        if isinstance(a, Mapping):
            rid, gpus, steps = _members(a["request"]) + tuple(a.get("batch", ())), a["gpus"], a["steps"]
            if "start_us" in a:
                start = a["start_us"]
            elif "start_ms" in a:
                start = round(float(a["start_ms"]) * 1000)
        elif hasattr(a, "request"):
            rid, gpus, steps = (a.request, *getattr(a, "batch", ())), a.gpus, a.steps
            start = getattr(a, "start_us", None)
        else:
            rid, gpus, steps = a
        out.append((_members(rid), tuple(int(g) for g in gpus), int(steps), None if start is None else int(start)))
    return out


def execution_order(round_: Any, r: int = 0) -> list[int]:
    """Indices of a round's assignments in the order they run: the plan's start times.

    The scheduler's layout (tetriopt.gpusets.layout) decides who goes first on a shared GPU
    (for example a request due inside the round before a wider one), and the simulator follows
    those start times; re-deriving an order here would make GPUs and simulation disagree. Any
    total order consistent with every GPU's sequence is deadlock-free (see the module
    docstring), and sorting by start does that because a valid plan never overlaps work on a
    GPU. Assignments without start times (plain triples) run in the order given.
    """
    ts = _items(round_)
    starts = [t[3] for t in ts]
    if all(s is None for s in starts):
        return list(range(len(ts)))
    if any(s is None for s in starts):
        raise PlanError(f"round {r}: some assignments have planned start times and some do not")
    return sorted(range(len(ts)), key=lambda i: (starts[i], i))


class PlanState:
    """Per-request history carried from round to round (where its latent is, which ranks hold its
    conditioning, how many steps are done), so plans can be compiled one round at a time."""

    def __init__(self, world: int):
        self.world = world
        self.allowed = set(aligned_blocks(world))
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.where: dict[str, tuple[int, ...]] = {}
        self.held: dict[str, set[int]] = {}
        self.next_index = 0

    def copy(self) -> "PlanState":
        c = PlanState(self.world)
        c.total, c.done, c.where = dict(self.total), dict(self.done), dict(self.where)
        c.held = {k: set(v) for k, v in self.held.items()}
        c.next_index = self.next_index
        return c

    def add_request(self, rid: str, steps: int, done: int = 0) -> None:
        """A request whose first task here starts at step `done` (above 0: resumed from a copy of
        its latent that the driver ships like initial noise)."""
        if rid in self.total:
            raise PlanError(f"request {rid!r} is already running")
        if steps <= 0 or not 0 <= done < steps:
            raise PlanError(f"request {rid!r} has {steps} steps, {done} done")
        self.total[rid], self.done[rid] = steps, done

    def add_round(self, round_: Any, r: int = 0) -> list[Task]:
        """Tasks of one round in execution order (the plan's start times, `execution_order`),
        checked against the history, which it updates. A batched assignment gives one task per
        member, consecutive, each with the batch's ids."""
        ts = _items(round_)
        out: list[Task] = []
        for i in execution_order(round_, r):
            rids, gpus, steps, _ = ts[i]
            if len(set(rids)) != len(rids):
                raise PlanError(f"round {r}: batch {list(rids)} lists a request twice")
            if gpus not in self.allowed:
                raise PlanError(f"round {r}: GPU set {gpus} is not an aligned power-of-two block of {self.world} ranks")
            for rid in rids:
                if rid not in self.total:
                    raise PlanError(f"round {r}: unknown request {rid!r}")
                if steps <= 0:
                    raise PlanError(f"round {r}: request {rid!r} gets {steps} steps (must be positive)")
                if self.done[rid] + steps > self.total[rid]:
                    raise PlanError(f"round {r}: request {rid!r} would run {self.done[rid] + steps} steps, "
                                    f"it has {self.total[rid]}")
            for rid in rids:
                held = self.held.setdefault(rid, set())
                last = self.done[rid] + steps == self.total[rid]
                out.append(Task(index=self.next_index, request=rid, gpus=gpus, step_start=self.done[rid], steps=steps,
                                prev_gpus=self.where.get(rid), next_gpus=None if last else (),
                                needs_cond=tuple(g for g in gpus if g not in held),
                                batch=rids if len(rids) > 1 else ()))
                self.next_index += 1
                held.update(gpus)
                self.where[rid] = gpus
                self.done[rid] += steps
                if last:
                    self.forget(rid)
        return out

    def forget(self, rid: str) -> None:
        for d in (self.total, self.done, self.where, self.held):
            d.pop(rid, None)


def compile_plan(rounds: Iterable[Any], total_steps: Mapping[str, int], world: int) -> list[Task]:
    """Flatten a whole plan into the global task order; every request must run all its steps.

    `next_gpus` is None on a request's last task and () otherwise (the next set is not needed:
    a request's latent stays sharded on its set until a later task asks for it).
    """
    st = PlanState(world)
    for rid, n in total_steps.items():
        st.add_request(rid, n)
    tasks: list[Task] = []
    for r, round_ in enumerate(rounds):
        tasks.extend(st.add_round(round_, r))
    for rid in st.total:
        raise PlanError(f"request {rid!r}: plan runs {st.done[rid]} steps, request has {st.total[rid]}")
    return tasks


def first_ranks(tasks: Sequence[Task]) -> dict[str, tuple[int, ...]]:
    """Ranks of each request's first task: they get its initial latent and conditioning."""
    out: dict[str, tuple[int, ...]] = {}
    for t in tasks:
        out.setdefault(t.request, t.gpus)
    return out
