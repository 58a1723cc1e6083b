"""Symmetry breaking between interchangeable GPU blocks of the round model.

Without presolve (the quick slice, and every model over 500 variables) CP-SAT detects no
symmetry, and the round model has a lot: two sibling blocks that hold no request's latent are
interchangeable (same step times, same busy-time rows, no stay bonus on either), so a proof
enumerates every placement once per permutation of them. For each pair of interchangeable
sibling blocks A before B we add "busy time of A's first GPU >= busy time of B's first GPU".

Why that is exact: order the GPUs as the islands list them (every block is a contiguous run of
that order) and put the GPUs' busy times first in the variable order. Swapping A and B position
by position (sigma) is an automorphism of the model; its first moved variable is A's first GPU's
busy time, and sigma maps it to B's first GPU's. The lexicographically largest solution of every
orbit of the group these swaps generate satisfies sol >=lex sigma(sol) for every sigma in it, so
it satisfies every added row: an optimum survives. A pair is used only where sigma provably maps
the model onto itself (every candidate set's image is a candidate of the same request with the
same bounds and objective coefficients: a request located in A or B, a capped candidate list or
a batch option rules the pair out), which `tests/test_symmetry.py` checks against the whole model.

Warm starts need not satisfy the rows: `canonical` moves a solution to its orbit's
representative (swapping blocks bottom-up), which has the same value and is feasible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..gpusets import aligned_sets

from .formulation import RoundModel


@dataclass(frozen=True)
class Swap:
    """Two interchangeable sibling blocks, `a` before `b` in the islands' GPU order, and the
    permutation of model variables that exchanges them (an involution: both directions listed)."""

    a: tuple[int, ...]
    b: tuple[int, ...]
    perm: tuple[tuple[int, int], ...]


@lru_cache(maxsize=64)
def _sibling_pairs(islands: tuple[tuple[int, ...], ...], degrees: tuple[int, ...]
                   ) -> tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]], ...]:
    """(a, b, the family's sets inside a or b) for consecutive siblings of one shape in the
    laminar family of the aligned sets of `degrees` (shape: b's sets are a's, moved position by
    position), smallest blocks first. Depends on the cluster only, so it is computed once."""
    order = {g: n for n, g in enumerate(i for isl in islands for i in isl)}
    family = sorted({g for k in degrees for g in aligned_sets(islands, k)}, key=lambda g: (len(g), order[g[0]]))
    mask = {g: sum(1 << i for i in g) for g in family}  # subset tests on bits: 120 sets at 64 GPUs took 30 ms as sets
    below = {g: [h for h in family if mask[h] & mask[g] == mask[h]] for g in family}
    children: dict[tuple[int, ...] | None, list[tuple[int, ...]]] = {}
    for g in family:
        above = [p for p in family if len(p) > len(g) and mask[g] & mask[p] == mask[g]]
        children.setdefault(min(above, key=len) if above else None, []).append(g)
    out = []
    for kids in children.values():
        classes: list[list[tuple[int, ...]]] = []
        for g in sorted(kids, key=lambda g: order[g[0]]):
            for c in classes:
                to = dict(zip(c[0], g))
                if len(c[0]) == len(g) and {tuple(to[i] for i in x) for x in below[c[0]]} == set(below[g]):
                    c.append(g)
                    break
            else:
                classes.append([g])
        for c in classes:  # consecutive members: their swaps generate every permutation of the class
            out.extend((a, b, tuple(below[a] + below[b])) for a, b in zip(c, c[1:]))
    out.sort(key=lambda w: len(w[0]))
    return tuple(out)


def _perm(rm: RoundModel, by_set: dict, a: tuple[int, ...], b: tuple[int, ...],
          inside: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, int], ...] | None:
    """The variable permutation of swapping blocks a and b position by position, or None where
    that swap does not map the model onto itself."""
    m = rm.model
    to = {**dict(zip(a, b)), **dict(zip(b, a))}
    out = []
    for g in inside:
        here, there = by_set.get(g, {}), by_set.get(tuple(to[i] for i in g), {})
        if here.keys() != there.keys():
            return None  # a request with a candidate on one side only (capped sets)
        for rid, (x, s) in here.items():
            x2, s2 = there[rid]
            pairs = [(x, x2), (s, s2)]
            if (s in rm.fin) != (s2 in rm.fin):
                return None
            if s in rm.fin:
                pairs.append((rm.fin[s][0], rm.fin[s2][0]))
            for v, w in pairs:
                if (m.lb[v], m.ub[v], m.objective.get(v, 0)) != (m.lb[w], m.ub[w], m.objective.get(w, 0)):
                    return None  # a stay bonus (a latent in a or b) or different bounds
            out.extend(pairs)
    return tuple(out)


def swaps(rm: RoundModel) -> list[Swap]:
    """Interchangeable sibling block pairs of the round model, smallest blocks first (the order
    `canonical` needs). None for models with batch options (their rows are not checked here)."""
    if rm.batches:
        return []
    st = rm.state
    by_set: dict[tuple[int, ...], dict[str, tuple[int, int]]] = {}
    for rid, cs in rm.cand.items():
        for g, _, x, s in cs:
            by_set.setdefault(g, {})[rid] = (x, s)
    # a latent partly inside the pair breaks it (its stay bonus): skip such pairs before the full
    # check, which costs ms on a round of 30 requests (skipping a pair is always exact)
    latents = {frozenset(r.location) for r in st.requests if r.location and r.id in rm.cand}
    out = []
    for a, b, inside in _sibling_pairs(st.cluster.islands, tuple(st.degrees)):
        both = frozenset(a) | frozenset(b)
        if any(lat & both and not both <= lat for lat in latents):
            continue
        p = _perm(rm, by_set, a, b, inside)
        if p:
            out.append(Swap(a, b, p))
    return out


def _busy(rm: RoundModel, gpu: int, sol: list[int]) -> int:
    return sum(c * sol[v] for v, c in rm.busy.get(gpu, {}).items())


def add_symmetry_rows(rm: RoundModel, pairs: list[Swap]) -> int:
    """Add busy(a's first GPU) - busy(b's first GPU) >= 0 for each pair; returns rows added."""
    n = 0
    for w in pairs:
        row = dict(rm.busy.get(w.a[0], {}))
        for v, c in rm.busy.get(w.b[0], {}).items():
            row[v] = row.get(v, 0) - c
        if any(row.values()):
            rm.model.add(row, lb=0)
            n += 1
    return n


def canonical(rm: RoundModel, pairs: list[Swap], sol: list[int]) -> list[int]:
    """The solution of sol's orbit that satisfies every row (same value, feasible when sol is):
    blocks swapped smallest first, each size until stable, since swapping two blocks moves their
    insides whole and keeps the smaller blocks' rows true."""
    sol = list(sol)
    sizes = sorted({len(w.a) for w in pairs})
    for size in sizes:
        level = [w for w in pairs if len(w.a) == size]
        for _ in range(len(level) + 1):  # bubble passes: a class of c blocks needs at most c - 1
            moved = False
            for w in level:
                if _busy(rm, w.a[0], sol) < _busy(rm, w.b[0], sol):
                    new = list(sol)
                    for v, u in w.perm:
                        new[u] = sol[v]
                    sol, moved = new, True
            if not moved:
                break
    return sol
