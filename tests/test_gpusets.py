"""gpusets: aligned sets of a cluster, and `layout`, which must fit every laminar round whose GPU
loads fit (the property the MIP's capacity constraint relies on)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tetriopt.gpusets import aligned_sets, gpu_loads, layout


def test_aligned_sets_inside_and_across_islands():
    pairs = ((0, 1), (2, 3), (4, 5), (6, 7))
    assert aligned_sets(pairs, 1) == tuple((g,) for g in range(8))
    assert aligned_sets(pairs, 2) == pairs
    # larger than an island: unions of whole, equal, power-of-two islands
    assert aligned_sets(pairs, 4) == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert aligned_sets(pairs, 8) == (tuple(range(8)),)
    assert aligned_sets(((0, 1, 2, 3, 4, 5, 6, 7),), 4) == ((0, 1, 2, 3), (4, 5, 6, 7))
    # islands of 3 are not power-of-two blocks: no set spans two of them
    assert aligned_sets(((0, 1, 2), (3, 4, 5)), 6) == ()
    # aligned blocks only: (1, 2) is not a set of one 4-GPU island
    assert (1, 2) not in aligned_sets(((0, 1, 2, 3),), 2)


def test_plain_layout_puts_larger_sets_first_and_keeps_input_order():
    tasks = [((0,), 100, "a"), ((0, 1), 300, "wide"), ((1,), 50, "b")]
    out = layout(tasks, 1000)
    assert [k for k, _, _ in out] == ["a", "wide", "b"]
    got = {k: (s, e) for k, s, e in out}
    assert got["wide"] == (1000, 1300)
    assert got["a"] == (1300, 1400) and got["b"] == (1300, 1350)


def test_urgent_task_goes_first_on_its_gpus():
    """An urgent 1-GPU request and a 2-GPU one sharing GPU 0: the urgent one runs first."""
    tasks = [((0, 1), 400, "wide"), ((0,), 300, "urgent")]
    got = {k: (s, e) for k, s, e in layout(tasks, 0, 900, first=[1])}
    assert got["urgent"] == (0, 300)
    assert got["wide"][0] >= 300 and got["wide"][1] <= 900


def test_the_rest_fills_the_gaps_urgent_work_leaves():
    # largest first would run the wide task at 0 and the urgent one after it; urgent first, the
    # wide one follows it and "other" backfills GPU 1 before the wide one
    tasks = [((0, 1), 500, "wide"), ((0,), 300, "urgent"), ((1,), 300, "other")]
    got = {k: (s, e) for k, s, e in layout(tasks, 0, 800, first=[1])}
    assert got == {"urgent": (0, 300), "wide": (300, 800), "other": (0, 300)}


@st.composite
def laminar_rounds(draw):
    """Tasks on aligned sets of 8 GPUs whose per-GPU loads fit in the round, and an urgent subset."""
    round_us = 1000
    load = [0] * 8
    tasks = []
    for _ in range(draw(st.integers(1, 12))):
        k = draw(st.sampled_from([1, 2, 4, 8]))
        j = draw(st.integers(0, 8 // k - 1)) * k
        gpus = tuple(range(j, j + k))
        room = round_us - max(load[g] for g in gpus)
        if room <= 0:
            continue
        dur = draw(st.integers(1, room))
        for g in gpus:
            load[g] += dur
        tasks.append((gpus, dur, len(tasks)))
    urgent = draw(st.lists(st.integers(0, max(len(tasks) - 1, 0)), unique=True, max_size=3)) if tasks else []
    return tasks, urgent, round_us


@settings(max_examples=300, deadline=None, derandomize=True)
@given(laminar_rounds(), st.integers(0, 10**6))
def test_layout_fits_every_round_whose_loads_fit(case, start):
    tasks, urgent, round_us = case
    assert all(v <= round_us for v in gpu_loads((g, d) for g, d, _ in tasks).values())
    out = layout(tasks, start, round_us, first=urgent)
    assert [k for k, _, _ in out] == [k for _, _, k in tasks]
    busy: dict[int, list[tuple[int, int]]] = {}
    for (gpus, dur, _), (_, s, e) in zip(tasks, out):
        assert e - s == dur and start <= s and e <= start + round_us
        for g in gpus:
            busy.setdefault(g, []).append((s, e))
    for ivs in busy.values():
        ivs.sort()
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(ivs, ivs[1:]))


def test_urgent_work_stays_in_front_when_deadline_order_does_not_fit():
    # urgent A (1 GPU, earlier deadline) then B (2 GPUs): A first leaves B after it on GPU 0, and
    # C's 60 ms on GPU 1 no longer fits in front of or behind it; urgent largest first fits: B,
    # then A, with the rest packed against the end. The plain layout would put D before A.
    tasks = [((0,), 40, "D"), ((0,), 30, "A"), ((0, 1), 30, "B"), ((1,), 60, "C")]
    got = {k: (s, e) for k, s, e in layout(tasks, 0, 100, first=[1, 2])}
    assert got["B"] == (0, 30) and got["A"] == (30, 60)
    assert got["D"] == (60, 100) and got["C"] == (40, 100)
