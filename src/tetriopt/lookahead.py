"""Deadline arithmetic shared by every policy: what a request can still do before its deadline.

All of it respects the round structure, and charges a request's aux work where the plan does
(RoundState.aux_us): after this round a request runs at most floor(round / T) steps per round on
one GPU set; the first round it runs also holds its text encode (if its latent is on no set
yet), and the round in which it finishes holds its last steps *and* the VAE decode, ending by
its deadline (an assignment cannot spill past its round). So a deadline 1.9 rounds away buys
one full round plus the steps that fit in the partial one with the decode after them, not 1.9
rounds of steps; and when the decode no longer fits after a step in the partial round, the
request must finish in the round before it, with room for the decode there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .state import RequestState, RoundState


def steps_within(round_us: int, step: int, start_us: int, deadline_us: int, encode_us: int = 0,
                 decode_us: int = 0, final_step: int | None = None) -> int:
    """Most steps of `step` us that a request can still run from the round boundary start_us and
    finish by deadline_us (the rule in the module docstring; the one copy of it: the earliest
    finish, `earliest_finish_us`, is its inverse). 0 when not even one step and the decode fit.
    `final_step`: the step in the finishing round, if it runs on another (faster) set there
    (`final_step` below; default: `step`).

    Finishing in round j (0-based from start_us) runs (L_j - decode - encode if j == 0) // final
    step steps there, L_j = min(round, deadline - start of round j); every earlier round runs
    (round - encode if first) // step. A later full round only adds steps, so the best finish is
    in the round holding the deadline or in the one before it."""
    span = deadline_us - start_us
    if span <= 0 or step <= 0:
        return 0
    fstep = step if final_step is None else final_step
    last, best = span // round_us, 0
    for j in (last, last - 1):
        if j < 0:
            break
        room = min(round_us, span - j * round_us) - decode_us - (encode_us if j == 0 else 0)
        final = room // fstep
        if final >= 1:
            best = max(best, final if j == 0 else
                       (round_us - encode_us) // step + (j - 1) * (round_us // step) + final)
    return best


def final_step(step: int, steps: Iterable[int], round_us: int, decode_us: int) -> int:
    """The step of a request's finishing round when it runs at `step` before it: the same, unless a
    step and the decode do not fit in a round there (a 2048 px step on one H100, 863 ms, leaves no
    room for its 394 ms decode in a 900 ms round); then the slowest of the faster `steps` (its
    useful degrees) where they do: it runs narrow and takes a wider set for its last round."""
    if step + decode_us <= round_us:
        return step
    return max((t for t in steps if t < step and t + decode_us <= round_us), default=step)


def earliest_finish_us(round_us: int, step: int, start_us: int, steps: int, encode_us: int = 0,
              decode_us: int = 0) -> int | None:
    """Earliest end of `steps` steps and the decode from the boundary start_us under the same rule
    (steps_within(..., deadline) >= steps exactly when this is <= deadline); None if never."""
    if steps <= 0 or step <= 0:
        return None
    if encode_us + steps * step + decode_us <= round_us:
        return start_us + encode_us + steps * step + decode_us
    first, per, final = (round_us - encode_us) // step, round_us // step, (round_us - decode_us) // step
    if final < 1:
        return None
    left = max(1, steps - first)  # after the first round, at least one step goes with the decode
    more = max(0, -(-(left - final) // per))  # full rounds between the first and the finishing one
    last = max(1, left - more * per)
    return start_us + (1 + more) * round_us + last * step + decode_us


def steps_possible(state: RoundState, r: RequestState, step: int, start_us: int,
                   started: bool | None = None, steps: Iterable[int] | None = None) -> int:
    """Most of r's steps, at `step` us each (its finishing round as `final_step` says, among
    `steps`: its useful step latencies, computed when not given), that can run from the boundary
    start_us and still end, decode included, by r's deadline (steps_within). `started`: whether
    r's latent is on a set by then (default: now; callers counting from the round's end for a
    request that runs in it pass True), else its first round there also holds its text encode."""
    enc = 0 if (bool(r.location) if started is None else started) else state.profile.text_encode_us
    dec = state.decode_us(r)
    if steps is None:
        steps = useful_degrees(state, r).values()
    return steps_within(state.round_us, step, start_us, r.deadline_us, enc, dec,
                        final_step(step, steps, state.round_us, dec))


@dataclass(frozen=True)
class Outlook:
    """Per-request figures at a round boundary (times in us, GPU-time in GPU-us)."""

    degrees: tuple[int, ...]          # useful degrees (a step fits in a round, not dominated)
    step: dict[int, int]              # per-step latency by degree
    fastest: int                      # degree with the smallest step latency
    slack_steps: int                  # steps at the fastest degree that still fit after this round
                                      # (having run in it: no encode left)
    cheapest_cost: int                # GPU-us per step at the cheapest degree that still meets the deadline
                                      # (the cheapest of all when none does)
    cheapest_degree: int
    alive: bool                       # can it still meet its deadline if it gets the best this round
    need_now: int = 0                 # steps it must run this round to stay alive (0: it can wait a
                                      # round; 1 at least for one not started whose encode cannot wait)


def useful(step: dict[int, int], round_us: int) -> dict[int, int]:
    """Of the per-degree step latencies given (degrees that have GPU sets), the degrees whose step
    fits in a round, dropping those no faster than a smaller degree (the one copy of this rule:
    policies through `outlook`, the bound through its windows)."""
    out: dict[int, int] = {}
    best = None
    for k in sorted(step):
        t = step[k]
        if t > round_us or (best is not None and t >= best):
            continue  # too slow for a round, or more GPUs and no faster: never worth it
        out[k] = best = t
    return out


def useful_degrees(state: RoundState, r: RequestState) -> dict[int, int]:
    return useful({k: state.step_us(r, k) for k in state.degrees if state.sets.get(k)}, state.round_us)


def outlook(state: RoundState, r: RequestState) -> Outlook:
    """r's figures in this round, computed once per round state (memoised on it by request id)."""
    key = ("outlook", r.id)
    o = state.memo.get(key)
    if o is None:
        o = state.memo[key] = _outlook(state, r)
    return o


def _outlook(state: RoundState, r: RequestState) -> Outlook:
    step = useful_degrees(state, r)
    if not step:  # nothing fits in a round: report the smallest-latency degree anyway
        k = min(state.degrees, key=lambda d: (state.step_us(r, d), d))
        step = {k: state.step_us(r, k)}
    fastest = min(step, key=lambda k: (step[k], k))
    tf, ts = step[fastest], step.values()
    slack = steps_possible(state, r, tf, state.end_us, True, ts)
    by_cost = sorted(step, key=lambda k: (k * step[k], k))
    cheapest_k = by_cost[0]  # if nothing meets the deadline any more: the cheapest degree
    for k in by_cost:
        if steps_possible(state, r, step[k], state.now_us, None, ts) >= r.remaining_steps:
            cheapest_k = k
            break
    rem = r.remaining_steps
    alive = steps_possible(state, r, tf, state.now_us, None, ts) >= rem
    need = rem - slack
    if need <= 0 and not r.location and steps_possible(state, r, tf, state.end_us, None, ts) < rem:
        need = 1  # waiting a round moves its encode into a later round, where the rest no longer fits
    return Outlook(degrees=tuple(sorted(step)), step=step, fastest=fastest, slack_steps=slack,
                   cheapest_cost=cheapest_k * step[cheapest_k], cheapest_degree=cheapest_k, alive=alive,
                   need_now=max(0, need))
