"""Aligned GPU sets and their layout inside a round.

Sets of one size are aligned blocks inside an island (or unions of whole, equal, power-of-two
islands), so the family of all sets is laminar: two sets are nested or disjoint. That buys an
exact packing rule: a round is feasible iff every GPU's total busy time fits in the round,
because laying sets out largest first puts every set's work after its ancestors' on every one
of its GPUs (see `layout`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence


@lru_cache(maxsize=256)
def aligned_sets(islands: tuple[tuple[int, ...], ...], degree: int) -> tuple[tuple[int, ...], ...]:
    out: list[tuple[int, ...]] = []
    for isl in islands:
        for j in range(0, len(isl) - degree + 1, degree):
            out.append(tuple(isl[j:j + degree]))
    sizes = {len(i) for i in islands}
    if not out and len(sizes) == 1:
        s = sizes.pop()
        if s & (s - 1) == 0 and degree % s == 0:
            per = degree // s
            for j in range(0, len(islands) - per + 1, per):
                out.append(tuple(g for isl in islands[j:j + per] for g in isl))
    return tuple(out)


def layout(tasks: Iterable[tuple[tuple[int, ...], int, object]], round_start: int,
           round_us: int | None = None, first: Iterable[int] = ()) -> list[tuple[object, int, int]]:
    """Start/end for each (gpus, duration, key), returned as (key, start, end) in input order.

    Plain: larger sets first, then in the given order. With a laminar family every task then ends
    by round_start + the busiest GPU's load, so it always fits. Tasks whose indices are in
    `first` (requests due inside the round) are tried at the front in the given order, each as
    early as its GPUs allow, with the rest filling the gaps they leave or else packed against
    the round's end. If neither fits in round_us, they go at the front largest first, the rest
    packed largest first against the end: on a laminar family that always fits (on each GPU the
    front work ends by its own load and the back work starts after the round less its load), so
    urgent work is never moved behind the rest; the plain layout is the last resort.
    """
    tasks = list(tasks)
    urgent = set(first)
    first = sorted(urgent)
    largest_first = sorted(range(len(tasks)), key=lambda i: (-len(tasks[i][0]), tasks[i][0][0], i))
    if first and round_us is not None:
        end = round_start + round_us
        rest = [i for i in largest_first if i not in urgent]
        # 1: the urgent ones first, the rest filling the gaps they leave
        placed = _place(tasks, first + rest, round_start)
        if all(e <= end for _, e in placed.values()):
            return [(tasks[i][2], *placed[i]) for i in range(len(tasks))]
        # 2: the urgent ones first (in the given order, then largest first), the rest packed
        # against the end of the round
        back = _place_backward(tasks, rest, end)
        for order in (first, [i for i in largest_first if i in urgent]):
            placed = _place(tasks, order, round_start)
            if all(placed[i][1] <= back_start(back, tasks, g, end) for i in order for g in tasks[i][0]):
                placed.update(back)
                return [(tasks[i][2], *placed[i]) for i in range(len(tasks))]
    placed = _place(tasks, largest_first, round_start)
    return [(tasks[i][2], *placed[i]) for i in range(len(tasks))]


def _place_backward(tasks, order, end: int) -> dict[int, tuple[int, int]]:
    """The mirror of largest-first: each task ends where the work after it on its GPUs begins."""
    clock: dict[int, int] = {}
    placed: dict[int, tuple[int, int]] = {}
    for i in order:
        gpus, dur, _ = tasks[i]
        stop = min(clock.get(g, end) for g in gpus)
        for g in gpus:
            clock[g] = stop - dur
        placed[i] = (stop - dur, stop)
    return placed


def back_start(back: dict[int, tuple[int, int]], tasks, gpu: int, end: int) -> int:
    """When the end-packed work on `gpu` begins (the round's end if there is none)."""
    return min((s for i, (s, _) in back.items() if gpu in tasks[i][0]), default=end)


def _place(tasks, order, round_start: int) -> dict[int, tuple[int, int]]:
    """Each task in `order` at the earliest time all its GPUs are free for its whole duration,
    gaps left by earlier tasks included (list scheduling with backfilling)."""
    busy: dict[int, list[tuple[int, int]]] = {}
    placed: dict[int, tuple[int, int]] = {}
    for i in order:
        gpus, dur, _ = tasks[i]
        candidates = sorted({round_start, *(e for g in gpus for _, e in busy.get(g, ()))})
        for start in candidates:
            end = start + dur
            if all(e <= start or s >= end for g in gpus for s, e in busy.get(g, ())):
                break
        for g in gpus:
            busy.setdefault(g, []).append((start, end))
        placed[i] = (start, end)
    return placed


def gpu_loads(tasks: Iterable[tuple[Sequence[int], int]]) -> dict[int, int]:
    load: dict[int, int] = {}
    for gpus, dur in tasks:
        for g in gpus:
            load[g] = load.get(g, 0) + dur
    return load
