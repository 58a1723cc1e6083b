"""Step-level batching: several same-size requests share every step on one GPU set.

Small images are launch-bound (measured on an H200: SD3-Medium 39-41 ms a step at every size up
to 1024 px, batch 2 at 1024 px 52.8 ms), so a batch of them costs little more than one request.
A batch is one more option per GPU set, with its own cost, in the round model:

  z[o]     option o = (resolution class, batch size B, degree k, set g) is used
  S[o]     its steps this round (1..floor(round / T(k, B)) when used)
  y[i,o]   request i is a member;      sum_i y[i,o] = B z[o]
  v[i,o]   i's steps in it: v = S when y, else 0 (v <= S, v >= S - M(1 - y), v <= M y)

Each member's v joins its own step count (keep, done and left-over rows), its y its at-most-one
option row, and S T(k, B) the load of every GPU of g. An unbatched plan is the same solution with
every z at 0, so the model with batches is never worse than without on the planner's objective
(and the MIP policy warm-starts from unbatched plans).

Which options exist (to keep the model small): classes of at least two pending requests that are
not due inside the round (those are laid out first, alone), at most `MAX_MEMBERS` of them by
deadline; degrees at which the batch's step fits in a round and costs less GPU-time than its
members at their cheapest degrees alone; at most `MAX_SETS` sets per degree, nearest the members'
latents first.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..lookahead import Outlook
from ..state import RequestState, RoundState

MAX_MEMBERS = 8
MAX_SETS = 4


@dataclass(frozen=True)
class BatchOption:
    """One batch option of the round model: its variables and what it costs."""

    members: tuple[str, ...]        # candidate members (same resolution)
    size: int
    gpus: tuple[int, ...]
    step_us: int
    z: int
    steps: int                       # S
    join: dict                       # request -> (y, v)


def batch_classes(state: RoundState, looks: dict[str, Outlook], placed: set[str] | None,
                  urgent: set[str]) -> list[list[RequestState]]:
    """Same-resolution groups that may batch, each by deadline, at most MAX_MEMBERS long."""
    groups: dict[tuple[int, int], list[RequestState]] = {}
    for r in sorted(state.requests, key=lambda r: (r.deadline_us, r.id)):
        if r.id in urgent or (placed is not None and r.id not in placed) or r.remaining_steps <= 0:
            continue
        groups.setdefault((r.width, r.height), []).append(r)
    return [g[:MAX_MEMBERS] for g in groups.values() if len(g) >= 2]


def batch_degrees(state: RoundState, rep: RequestState, looks: dict[str, Outlook], members, b: int) -> list[int]:
    """Degrees at which a batch of b fits a round and is cheaper than its members alone."""
    alone = min(looks[r.id].step[k] * k for r in members for k in looks[r.id].degrees)
    out = []
    for k in state.degrees:
        if not state.sets.get(k):
            continue
        t = state.step_us(rep, k, b)
        if t <= state.round_us and k * t < b * alone:
            out.append(k)
    return out


def sets_near(state: RoundState, k: int, members) -> tuple[tuple[int, ...], ...]:
    """At most MAX_SETS sets of size k, those overlapping the members' latents first."""
    held = [set(r.location) for r in members if r.location]
    ranked = sorted(state.sets[k], key=lambda g: (-sum(bool(h & set(g)) for h in held), g))
    return tuple(ranked[:MAX_SETS])


def add_batch_options(m, state: RoundState, looks: dict[str, Outlook], w, placed: set[str] | None,
                      urgent: set[str], xs: dict[str, dict[int, int]], steps_expr: dict[str, dict[int, int]],
                      gpu_terms: dict[int, dict[int, int]], gpu_ms, fin: dict | None, charge_aux) -> list[BatchOption]:
    """Add every batch option's variables to the LinearModel m; the per-request rows (at most one
    option, step counts) and per-GPU loads are extended in xs / steps_expr / gpu_terms, which the
    caller turns into constraints. Each member's encode (if not started) and decode (if its steps
    finish it: `charge_aux`, the caller's, as for single requests) load the set's GPUs too, as
    plan.decision_us has it."""
    options: list[BatchOption] = []
    for members in batch_classes(state, looks, placed, urgent):
        rep = members[0]
        for b in state.profile.batch_sizes:
            if b < 2 or b > len(members):
                continue
            for k in batch_degrees(state, rep, looks, members, b):
                t = state.step_us(rep, k, b)
                mk = min(max(r.remaining_steps for r in members), state.round_us // t)
                for gpus in sets_near(state, k, members):
                    tag = f"{rep.width}x{rep.height},B{b},{','.join(map(str, gpus))}"
                    z = m.var(f"z[{tag}]", 0, 1)
                    s = m.var(f"S[{tag}]", 0, mk)
                    m.add({s: 1, z: -mk}, ub=0)
                    m.add({s: 1, z: -1}, lb=0)
                    join = {}
                    for r in members:
                        cap = min(r.remaining_steps, mk)
                        y = m.var(f"y[{r.id},{tag}]", 0, 1)
                        v = m.var(f"v[{r.id},{tag}]", 0, cap)
                        m.add({v: 1, s: -1}, ub=0)                      # v <= S
                        m.add({v: 1, s: -1, y: -mk}, lb=-mk)            # v >= S - mk (1 - y)
                        m.add({v: 1, y: -cap}, ub=0)                    # v <= cap y
                        xs[r.id][y] = 1
                        steps_expr[r.id][v] = 1
                        m.objective[v] = m.objective.get(v, 0) + w.progress * gpu_ms(looks[r.id].cheapest_cost)
                        if gpus == r.location:
                            m.objective[y] = m.objective.get(y, 0) + max(1, gpu_ms(looks[r.id].cheapest_cost) // 4)
                        join[r.id] = (y, v)
                        charge_aux(m, state, r, gpus, y, v, cap, fin, gpu_terms, tag)
                    m.add({**{y: 1 for y, _ in join.values()}, z: -b}, lb=0, ub=0)
                    m.objective[s] = m.objective.get(s, 0) - w.gpu * gpu_ms(k * t)
                    for g in gpus:
                        gpu_terms[g][s] = t
                    options.append(BatchOption(tuple(r.id for r in members), b, gpus, t, z, s, join))
    return options


def shared_costs(state: RoundState, looks: dict[str, Outlook]) -> dict[str, int]:
    """GPU-us per remaining step for the joint test when steps may be shared: a request with B - 1
    same-size companions pending may pay only its share k T(k, B) / B (the cheapest over degrees
    and batch sizes up to its class size), so batchable work is not given up for lack of capacity
    that batching would provide."""
    count: dict[tuple[int, int], int] = {}
    for r in state.requests:
        count[(r.width, r.height)] = count.get((r.width, r.height), 0) + 1
    out = {}
    for r in state.requests:
        n = count[(r.width, r.height)]
        if n < 2:
            continue
        o = looks[r.id]
        share = min(k * state.step_us(r, k, b) // b for k in o.degrees for b in state.profile.batch_sizes
                    if b <= n and state.step_us(r, k, b) <= state.round_us)
        out[r.id] = min(o.cheapest_cost, share)
    return out


def batch_decisions(options: list[BatchOption], sol: list[int]) -> list[tuple[tuple[str, ...], tuple[int, ...], int]]:
    """The batches a solution uses, as plan decisions (member ids, GPUs, steps)."""
    out = []
    for o in options:
        if sol[o.z] and sol[o.steps] > 0:
            ids = tuple(rid for rid, (y, _) in o.join.items() if sol[y])
            out.append((ids, o.gpus, sol[o.steps]))
    return out


def set_batch(m, options: list[BatchOption], sol: list[int], ids: tuple[str, ...], gpus: tuple[int, ...],
              steps: int) -> bool:
    """Write a heuristic's batch decision into a model solution (False if no option expresses it)."""
    for o in options:
        if o.gpus == gpus and o.size == len(ids) and set(ids) <= set(o.join) and not sol[o.z] \
                and all(steps <= m.ub[o.join[i][1]] for i in ids):
            sol[o.z], sol[o.steps] = 1, steps
            for rid in ids:
                y, v = o.join[rid]
                sol[y], sol[v] = 1, steps
            return True
    return False
