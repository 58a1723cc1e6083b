"""Admission: can a request still meet its deadline, alone and beside the work already kept?

A request can run from the first round boundary at or after its arrival (`first_start_us`: a
round already being planned takes it on GPU time its plan leaves free); from there it can run at most floor(round / step) steps per round on one
GPU set, then the VAE decode. If even that misses the deadline, no schedule can meet it, and
the server says so at once (or accepts it best-effort, by flag) instead of queueing it.
Beside that, `JointAdmission` runs the planner's own joint capacity test on the pending work
plus the new request (429 when it does not fit), so overload is shed at the door by work,
not by a count of images.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ..instance import Cluster
from ..lookahead import earliest_finish_us, final_step, outlook, steps_within, useful
from ..plan import RoundPlan
from ..policies.greedy import admit
from ..profile import CostProfile
from ..state import RequestState, RoundState
from .planner import fill_late

@dataclass(frozen=True)
class Timing:
    round_us: int
    lead_us: int          # planning of round k starts lead_us before its boundary

    def first_round_us(self, arrival_us: int) -> int:
        """Start of the first round whose planning can see a request that arrived at arrival_us."""
        k = -(-(arrival_us + self.lead_us) // self.round_us)
        return k * self.round_us

    def first_start_us(self, arrival_us: int) -> int:
        """The earliest round a request that arrived at arrival_us can run in: the first boundary at
        or after it (arrivals after a round's planning began go on its free GPU time: `fill_late`)."""
        return -(-arrival_us // self.round_us) * self.round_us


def useful_steps(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], width: int, height: int,
                 round_us: int) -> dict[int, int]:
    """Per-step latency by degree, for the useful degrees (lookahead.useful)."""
    return useful({k: profile.step_us(width, height, k) for k in degrees if cluster.sets(k)}, round_us)


def steps_end_us(start_us: int, steps: int, step_us: int, round_us: int) -> int:
    """When the last of `steps` steps of step_us ends, from the round boundary start_us, on one set
    running floor(round / step) of them a round (at least one): full rounds, then the rest."""
    per = max(1, round_us // step_us)
    full = (steps - 1) // per
    return start_us + full * round_us + (steps - full * per) * step_us


def alone_finish_us(round_us: int, step: int, start_us: int, steps: int, encode_us: int, decode_us: int) -> int:
    """lookahead.earliest_finish_us, or where the decode never fits a round after a step, the
    rounds-counting finish with the decode after it (the one fallback best_finish_us and Reach share)."""
    fin = earliest_finish_us(round_us, step, start_us, steps, encode_us, decode_us)
    return fin if fin is not None else steps_end_us(start_us, steps, step, round_us) + decode_us


def best_finish_us(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], timing: Timing,
                   width: int, height: int, steps: int, arrival_us: int) -> int | None:
    """Earliest finish alone on the cluster, from the first boundary a request arriving at
    arrival_us can run at, under the planner's rule (lookahead.earliest_finish_us: its text
    encode in the first round, the decode in the finishing one; as `Reach`, at any useful degree);
    None if no step fits in a round. Without the encode, a 512 px image at 1.5x its SLO arriving
    mid-round was accepted and then never kept by the planner, which counts it."""
    R, encode, decode = timing.round_us, profile.text_encode_us, profile.vae_decode_us(width, height)
    start = timing.first_start_us(arrival_us)
    best = None
    for step in useful_steps(profile, cluster, degrees, width, height, R).values():
        fin = alone_finish_us(R, step, start, steps, encode, decode)
        best = fin if best is None else min(best, fin)
    return best


def solo_latency_us(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], width: int, height: int,
                    steps: int, round_us: int) -> int | None:
    """Best latency alone from a round boundary (the unit that SLO scales multiply)."""
    return best_finish_us(profile, cluster, degrees, Timing(round_us, 0), width, height, steps, 0)


def cheapest_step_gpu_us(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], width: int,
                         height: int, round_us: int) -> int | None:
    """GPU-us of one step at the cheapest degree whose step fits in a round (None if none does)."""
    steps = useful_steps(profile, cluster, degrees, width, height, round_us)
    return min((k * t for k, t in steps.items()), default=None)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    committed_gpu_us: int       # kept work due by the new request's deadline, new request included
    retry_after_s: int          # a hint when not ok: seconds until that much work has drained


class JointAdmission:
    """Predictive admission by work: the planner's joint test (greedy.admit) on pending + new.

    The state is the pending work at the first boundary the new request can run at
    (`Scheduler.pending_state`: steps of earlier rounds in flight counted as done, those
    already dispatched for that round still to do). A request is accepted when the EDF joint capacity test keeps every one of
    its images and drops none of the requests it kept without them. Per-request figures
    (lookahead.outlook) depend only on the boundary and the remaining steps, so they are
    computed once per request per round, not once per admission. A request's work is what the
    planner's model charges: its steps at the cheapest deadline-meeting degree, its text encode
    if not started and the VAE decode it owes, on that many GPUs (without the aux work, admission
    let in small images beside a 2048x2048 one whose owed decode, 1.6 GPU-s on 4 H100s, the model
    then could not fit). Two corrections to the ideal test: a step's cost includes its share of
    the round it cannot fill (round quantisation), and `headroom` < 1 inflates every cost for what
    the test still ignores (packing, the planner's preferences), except a new request's own on an
    idle cluster. `forced_at`: see forced_work_fits.
    """

    def __init__(self, headroom: float = 1.0, forced_at: str = "cheapest"):
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        if forced_at not in ("cheapest", "fastest"):
            raise ValueError("forced_at must be 'cheapest' or 'fastest'")
        self.headroom = headroom
        self.forced_at = forced_at  # forced_work_fits: the degree a later-due request's last steps run at
        self._boundary = -1
        self._looks: dict[tuple[str, int, bool], Any] = {}

    def outlooks(self, state: RoundState, own: frozenset[str] = frozenset()) -> dict[str, Any]:
        """lookahead.outlook of each request, cached per (id, remaining steps) within a round.

        Costs carry the round quantisation; all but the `own` requests' also the headroom."""
        if state.now_us != self._boundary:
            self._boundary, self._looks = state.now_us, {}
        out = {}
        for r in state.requests:
            key = (r.id, r.remaining_steps, r.id in own)
            o = self._looks.get(key)
            if o is None:
                o = outlook(state, r)
                # charge the GPU time a step holds in whole rounds: floor(round / step) steps fit in
                # a round, the rest of it is lost to this set (20% for 2048x2048 on 4 H100s)
                step = o.step[o.cheapest_degree]
                used = state.round_us // step * step if step <= state.round_us else state.round_us
                scale = 1.0 if r.id in own else self.headroom
                # the aux work the planner charges it on that set (the model: its text encode in the
                # round it starts, the decode it still owes in the joint test), spread over its steps
                # so that cost x remaining steps is its whole work
                aux = o.cheapest_degree * (state.encode_us(r) + state.decode_us(r)) // max(1, r.remaining_steps)
                o = replace(o, cheapest_cost=int((o.cheapest_cost * state.round_us // used + aux) / scale))
                self._looks[key] = o
            out[r.id] = o
        return out

    def check(self, state: RoundState, new: tuple[RequestState, ...]) -> Verdict:
        after = replace(state, requests=state.requests + new)
        # the headroom is for what the test ignores between requests (packing, the planner's
        # preferences): with nothing else pending the new request's work counts at its cost, so an
        # idle cluster takes what can meet its deadline alone (a 2048 px image whose deadline needs
        # all 8 GPUs was refused at 0.7); beside any pending work, every cost is inflated
        looks = self.outlooks(after, frozenset(r.id for r in new) if not state.requests else frozenset())
        kept_after = set(admit(after, looks))
        new_ids = {r.id for r in new}
        if not state.requests and len(new) == 1:
            # an idle cluster: the test is the request's own deadline rule (lookahead, as the planner's
            # individual test); the fluid test charges its rounds' unused tails and its decode on top,
            # and refused a 2048 px image at 1.5x its SLO that fits alone by 0.3 s (issue 11)
            ok = looks[new[0].id].alive
            kept_after |= new_ids if ok else set()
        else:
            ok = new_ids <= kept_after and set(admit(state, looks)) <= kept_after
            if ok:
                ok = forced_work_fits(after, [r for r in after.requests if r.id in kept_after], new_ids, looks,
                                      self.forced_at)
        due = max(r.deadline_us - state.decode_us(r) for r in new) if new else state.now_us
        work = sum(looks[r.id].cheapest_cost * r.remaining_steps for r in after.requests
                   if (r.id in kept_after or r.id in new_ids) and r.deadline_us - state.decode_us(r) <= due)
        retry = max(1, math.ceil(max(state.round_us, work / state.cluster.gpus) / 1e6))
        return Verdict(ok=ok, committed_gpu_us=work, retry_after_s=retry)


MAX_CHECK_POINTS = 64  # deadlines the forced-work test looks at: bounds its cost at any backlog
_SPANS: dict[tuple[int, int, int, int], np.ndarray] = {}


def finish_spans(round_us: int, step: int, fstep: int, decode_us: int, steps: int) -> np.ndarray:
    """For n = 1..(at least) steps: the least time from a round boundary to a deadline in which n steps
    and the decode fit by the planner's rule (`lookahead.steps_within`: started, the finishing round
    on a set of step `fstep`, the decode in it); a huge value where they never do. The rule's inverse,
    found by bisection on the rule itself and cached per (round, step, final step, decode), so that
    forced_work_fits can look up every (request, check point) pair of a large backlog at once."""
    key = (round_us, step, fstep, decode_us)
    have = _SPANS.get(key)
    if have is not None and len(have) >= steps:
        return have
    out = np.full(max(steps, 2 * len(have) if have is not None else 0), np.iinfo(np.int64).max // 4, dtype=np.int64)
    for n in range(1, len(out) + 1):
        lo = int(out[n - 2]) if n > 1 else 0  # n steps need at least the time n - 1 do
        hi = lo + 3 * round_us                 # one more step needs at most one more round (and its decode room)
        if steps_within(round_us, step, 0, hi, 0, decode_us, fstep) < n:
            break  # never: no finishing round holds a step and the decode
        while lo < hi:
            mid = (lo + hi) // 2
            if steps_within(round_us, step, 0, mid, 0, decode_us, fstep) >= n:
                hi = mid
            else:
                lo = mid + 1
        out[n - 1] = lo
    _SPANS[key] = out
    return out


def forced_work_fits(state: RoundState, kept: list[RequestState], new_ids: set[str], looks: dict[str, Any],
                     at: str = "cheapest") -> bool:
    """The joint test extended by forced work, at the deadlines where the new images add demand.

    The planner's test counts, by each due time D, the work of requests due by D. A request due
    later must also do by D whatever of its steps cannot fit between D and its deadline at the
    degree `at` (the planner's rule, `lookahead.steps_within`, from D: its last steps and the VAE
    decode in the finishing round, that round on a faster set where a step and the decode do not
    fit one round otherwise, `lookahead.final_step`); a big image with a long deadline cannot be
    squeezed into its last rounds, so small requests admitted ahead of it would push it out. Work
    is at the cheapest deadline-meeting cost, as in the joint test.

    `at="fastest"` is a necessary condition: the request could still run its last steps on its
    fastest set. But the planner prices it at its cheapest deadline-meeting degree, is
    indifferent per GPU-ms between it and anything else, and runs what is due first: a big image
    deferred that way falls behind its cheapest degree, its cost rises (2048x2048 at 5x its SLO
    on 8 H100s: 1 GPU, then 4, then all 8) and it is given up for two small requests when it
    needs the whole cluster at once (at 5x capacity, 9-10 of 12-14 missed deadlines, given up
    3-5 rounds before their deadline). `at="cheapest"` (admission's default) keeps room for the
    schedule its cost assumes, so a later request is admitted only if that schedule still fits.
    At most MAX_CHECK_POINTS deadlines are checked (the nearest ones where the new images add
    demand, then a spread of the rest), so that an admission stays cheap at a large backlog.
    """
    if not kept:
        return True
    R = state.round_us
    due = np.array([r.deadline_us - state.decode_us(r) for r in kept], dtype=np.int64)
    deadline = np.array([r.deadline_us for r in kept], dtype=np.int64)
    rem = np.array([r.remaining_steps for r in kept], dtype=np.int64)
    cost = np.array([looks[r.id].cheapest_cost for r in kept], dtype=np.int64)
    # each request's spans (finish_spans) by its (step, final step, decode) at degree `at`
    spans: list[np.ndarray] = []
    for r in kept:
        o = looks[r.id]
        step, dec = o.step[o.cheapest_degree if at == "cheapest" else o.fastest], state.decode_us(r)
        spans.append(finish_spans(R, step, final_step(step, o.step.values(), R, dec), dec, r.remaining_steps))
    classes: dict[int, tuple[np.ndarray, list[int]]] = {}
    for i, sp in enumerate(spans):
        classes.setdefault(id(sp), (sp, []))[1].append(i)
    is_new = np.array([r.id in new_ids for r in kept])

    def forced(D: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Work each request in `cols` must have done by each check point D (rows)."""
        after = np.zeros((len(D), len(cols)), dtype=np.int64)
        span = deadline[cols][None, :] - D[:, None]
        pos = {c: j for j, c in enumerate(cols)}
        for sp, members in classes.values():
            js = [pos[i] for i in members if i in pos]
            if js:
                after[:, js] = np.searchsorted(sp, span[:, js], side="right")
        return np.maximum(rem[cols][None, :] - after, 0) * cost[cols]

    D = np.unique(due[due > state.now_us])
    D = D[forced(D, np.flatnonzero(is_new)).sum(axis=1) > 0]           # where the new images add demand
    if len(D) > MAX_CHECK_POINTS:
        half = MAX_CHECK_POINTS // 2
        D = np.concatenate([D[:half], D[half:][np.linspace(0, len(D) - half - 1, half).astype(int)]])
    demand = forced(D, np.arange(len(kept))).sum(axis=1)
    return bool(np.all(demand <= state.cluster.gpus * (D - state.now_us)))


def need_now(state: RoundState, r: RequestState) -> int:
    """Steps r must run in the round of `state` to still meet its deadline: those that cannot fit
    after it at its fastest degree (lookahead's rule; <= 0: it can wait a round)."""
    return outlook(state, r).need_now


def late_arrivals_fit(state: RoundState, plan: RoundPlan, late: tuple[RequestState, ...],
                      batching: bool = False) -> bool:
    """Do requests that arrived after a round's snapshot (`late`, earlier arrivals first) each get
    the steps they need in that round (`need_now`) from `planner.fill_late`, the only GPU time they
    can have there (what the round's plan leaves free)? Admission's promise for an arrival whose
    deadline needs the round that is already planned: the joint test alone counts capacity the
    plan has already given away (at 5x load, 7 of 19 missed deadlines were such small images).
    `batching`: the server's switch, as the loop passes it to `fill_late` (late arrivals may
    share steps there). Every member of a batch gets its steps, and assignments `fill_late`
    placed where it displaced given-up work count too (they do not follow the plan's own)."""
    merged, full = fill_late(state, plan, late, batching=batching)
    ids = {r.id for r in late}
    got: dict[str, int] = {}
    for a in full.assignments:
        for i in a.requests:
            if i in ids:
                got[i] = got.get(i, 0) + a.steps
    return all(got.get(r.id, 0) >= need_now(merged, r) for r in late)


class Reach:
    """The earliest finish of a request alone at its fastest degree from a round boundary, counting
    rounds (lookahead.earliest_finish_us: the planner's rule, its encode in the first round and the
    decode in the finishing one); per-size figures cached. The planner's `alive` is this finish <=
    the deadline."""

    def __init__(self, profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], round_us: int):
        self.profile, self.cluster, self.degrees, self.round_us = profile, cluster, degrees, round_us
        self._fast: dict[tuple[int, int], tuple[int, int]] = {}

    def _fastest(self, width: int, height: int) -> tuple[int, int]:
        """(step us at the fastest degree, decode us), cached per size."""
        key = (width, height)
        if key not in self._fast:
            steps = useful_steps(self.profile, self.cluster, self.degrees, width, height, self.round_us)
            self._fast[key] = (min(steps.values(), default=self.round_us), self.profile.vae_decode_us(width, height))
        return self._fast[key]

    def finish_us(self, r: RequestState, boundary_us: int) -> int:
        step, decode = self._fastest(r.width, r.height)
        encode = 0 if r.location else self.profile.text_encode_us
        return alone_finish_us(self.round_us, step, boundary_us, r.remaining_steps, encode, decode)

    def alive(self, r: RequestState, boundary_us: int) -> bool:
        return self.finish_us(r, boundary_us) <= r.deadline_us


class PlanningDeadlines:
    """The deadline the planner and admission see for each pending request (the job's own deadline,
    its `deadline_met` and every statistic stay on the original one). A ladder, per round:

    1. *Guard band*: deadline - min(`guard` x SLO, two rounds), while the request can still reach
       that. The policies run a kept request just in time; one that needs a large GPU set for its
       last rounds (a 2048x2048 image at 5x its SLO runs one step a round on one GPU, then needs
       all 8 at the end) is given up there when small requests are due, and small images finished
       a few ms late when a round started late on a busy machine. The band is the margin for both.
    2. Its own deadline, once the band is out of reach: a second chance, not a give-up.
    3. Late (`late_scale` > 0): arrival + `late_scale` x its SLO, or, when it cannot reach that
       either, its earliest finish alone plus one round (as soon as it can: a later target is
       where a just-in-time policy would finish it). The target stands while it can be reached
       (renewed only when it cannot), so a request that waits is not promised a round later each
       round. Before, a late request ran on whatever GPU
       time the on-time requests left, and under overload it starved (2048 px images finished at
       2.5-3x their SLO, small ones at up to 5.6x); now the policy keeps it like any request, and
       admission's joint test counts its work, so new requests are not admitted into the capacity
       it needs. late_scale 0: it keeps its deadline (not alive: leftover time, as before).

    While `light()` says the load is light (the door's gate), the planner plans as `tetriopt solve`
    does (issue 11): the band is only the released margin (`RELEASED_MARGIN_US`), and a late
    request keeps its own deadline (it runs on leftover time; there is no starvation to prevent).
    At light load the band made the planner give up an accepted 2048 px image at 1.5x its SLO
    for a round (a later 1024 px arrival fitted beside it by its own deadline, not by the band),
    and late targets made it keep late 2048 px images over on-time ones that the offline solve
    meets (1-2 requests a seed).
    """

    MAX_GUARD_ROUNDS = 2
    # a released request's margin: a round dispatched late by the event loop (a foresight check, 2-22
    # ms on it, just before the dispatch) started a 2048 px image planned 2.4 ms inside its own
    # deadline 16 ms late (issue 11)
    RELEASED_MARGIN_US = 25_000

    def __init__(self, reach: Reach, late_scale: float, guard: float = 0.0, light: Callable[[], bool] | None = None):
        if late_scale != 0 and late_scale < 1:
            raise ValueError("late_scale must be 0 (off) or at least 1")
        if not 0 <= guard < 1:
            raise ValueError("guard must be in [0, 1)")
        self.reach, self.late_scale, self.guard, self.light = reach, late_scale, guard, light
        self.released: dict[str, int] = {}  # requests whose band gave way, once or twice (`release`)
        self.late: dict[str, int] = {}  # each late request's current target

    def banded(self, r: RequestState, boundary_us: int) -> bool:
        """Does r plan to a guard band at this boundary? (Only the band plans before its deadline.)"""
        return self.deadline_us(r, boundary_us) < r.deadline_us

    def release(self, ids) -> None:
        """The band gives way for these requests: from now on they plan to their own deadline less
        `RELEASED_MARGIN_US` while they can reach that, and once released again, to their own
        deadline (later the late one). The band is a margin to keep where it is free; where it is
        not, it made the planner give up an accepted request that its own deadline keeps (a 2048
        px image at 1.5x its SLO for a later 1024 px arrival, which the offline solve meets both
        of) and admission refuse requests that only fit by their own deadline (issue 11)."""
        for i in ids:
            self.released[i] = min(2, self.released.get(i, 0) + 1)

    def keep_only(self, pending) -> None:
        """Forget requests that are no longer pending (finished or cancelled)."""
        for i in [i for i in self.released if i not in pending]:
            del self.released[i]
        for i in [i for i in self.late if i not in pending]:
            del self.late[i]

    def deadline_us(self, r: RequestState, boundary_us: int) -> int:
        fin = self.reach.finish_us(r, boundary_us)
        slo = max(r.deadline_us - r.arrival_us, 0)
        band = min(int(self.guard * slo), self.MAX_GUARD_ROUNDS * self.reach.round_us)
        given_way = self.released.get(r.id, 0)
        light = self.light is not None and self.light()
        if given_way == 1 or (light and not given_way):  # only a margin for dispatch on a busy machine
            band = min(band, self.RELEASED_MARGIN_US)
        elif given_way:
            band = 0
        if fin <= r.deadline_us - band:
            return r.deadline_us - band
        if fin <= r.deadline_us or self.late_scale == 0 or light:
            return r.deadline_us
        # a late target stands while it can still be reached: renewed every round as "its finish plus a
        # round", it slid a round later each round a just-in-time plan left the request waiting (a 256
        # px image at 1.5x its SLO finished at 4.1x, waiting three rounds with a target 1.7 s away)
        target = self.late.get(r.id)
        if target is None or fin > target:
            target = self.late[r.id] = max(r.arrival_us + math.ceil(self.late_scale * slo), fin + self.reach.round_us)
        return target

    def view(self, requests: tuple[RequestState, ...], boundary_us: int) -> tuple[RequestState, ...]:
        out = []
        for r in requests:
            d = self.deadline_us(r, boundary_us)
            out.append(r if d == r.deadline_us else replace(r, deadline_us=d))
        return tuple(out)

    def __call__(self, state: RoundState) -> RoundState:
        if (self.late_scale == 0 and self.guard == 0) or not state.requests:
            return state
        return replace(state, requests=self.view(state.requests, state.now_us))


class PlanWindow:
    """The requests a round is planned on, at most `limit` of them, so that planning time stays
    bounded at any backlog (the policy's model and even greedy grow with the pending set).

    Order: requests that can still meet their deadline (alone at their fastest degree, counting
    rounds: `Reach`) before those that cannot; among them, those holding a latent on GPUs, then
    by due time. A round can run only so many assignments, so what is left out would have waited
    anyway; it is seen again next round.
    """

    def __init__(self, reach: Reach, limit: int):
        self.reach, self.limit = reach, limit

    def __call__(self, requests: tuple[RequestState, ...], boundary_us: int) -> tuple[RequestState, ...]:
        if len(requests) <= self.limit:
            return requests

        def key(r: RequestState) -> tuple[bool, bool, int, str]:
            return (not self.reach.alive(r, boundary_us), not r.location, r.deadline_us, r.id)

        return tuple(sorted(requests, key=key)[:self.limit])



def foresee_met(state: RoundState, policy: str = "tetriserve") -> frozenset[str]:
    """The requests a whole forward schedule of `state` meets, with no further arrivals: `simulate`
    of the fast heuristic `policy` from the state's boundary, each request with its remaining steps
    (where its latent is ignored: a hand-off is a small share of a step)."""
    from ..instance import Instance, Request
    from ..simulate import simulate

    if not state.requests:
        return frozenset()
    inst = Instance(profile=state.profile, cluster=state.cluster, round_us=state.round_us, degrees=state.degrees,
                    requests=tuple(Request(id=r.id, arrival_us=state.now_us, deadline_us=r.deadline_us,
                                           width=r.width, height=r.height, steps=r.remaining_steps)
                                   for r in state.requests))
    return frozenset(o.id for o in simulate(inst, policy).requests if o.met)


class Foresight:
    """A second opinion where only the joint test's headroom refuses, at small backlogs: schedule
    the pending work forward with and without the new request (`foresee_met`) and accept it when
    the schedule with it meets it and still meets every request the one without it meets.

    The headroom (< 1) makes the joint test refuse work a concrete schedule fits (measured at
    light load: 2048 px images at SLO 1.0 beside any pending work, 1024 px at 1.0 beside a 2048 px
    one, each met by `tetriopt solve` on the same arrivals). The foresight looks only where the
    ideal joint test (headroom 1, forced work at the fastest degree: necessary conditions) accepts
    and at most `max_pending` requests are pending: a forward schedule costs a simulation on the
    event loop (a few ms at 8-16 pending). Its schedule assumes no further arrivals, which holds
    roughly while arrivals bring less work than the cluster can do; under overload it admitted
    big images the planner then gave up as later arrivals competed for their GPUs (5x capacity,
    2 runs each at load 3-4: 79-80% of accepted met with it, 87-89% without). So it stays out
    while the door is busy: while the work offered (every request judged by work, accepted or
    not, at its cheapest degree) in the last `busy_s` seconds exceeds `busy_load` x the cluster's
    GPU-time then, measured over the time since the first offer while that is shorter (at least
    `min_span_s`: at 5x capacity the door is busy after ~2 s, not after a 30 s window fills). (It
    used to count refusals, 2 in 10 s, which at half of capacity a burst of 2048 px images also
    gives: the foresight was then off where it is meant to help.)

    The new request itself need not be met by the forward schedule (`own=False`, the default): it
    can meet its deadline alone (the 400 test before), the necessary joint test passes, and the
    heuristic schedule loses nobody it met before; whether it is met is then CP-SAT's to find,
    round by round, as `tetriopt solve` finds it for every arrival. Asking the heuristic to meet it
    too refused 1024/2048 px images at 1.5x SLO at light load that the offline solve meets (issue
    11: 2-5 requests a seed). It is asked to while the door is `settling` (see there)."""

    def __init__(self, max_pending: int = 16, policy: str = "tetriserve", busy_load: float = 1.0,
                 busy_s: float = 30.0, min_span_s: float = 10.0, own: bool = False):
        self.max_pending, self.policy, self.own = max_pending, policy, own
        self.busy_load, self.busy_us, self.min_span_us = busy_load, int(busy_s * 1e6), int(min_span_s * 1e6)
        self._first_us: int | None = None
        self.ideal = JointAdmission(headroom=1.0, forced_at="fastest")  # necessary conditions only
        self._without: tuple[Any, frozenset[str]] | None = None
        self._offered: collections.deque[tuple[int, int]] = collections.deque()  # (arrival us, GPU-us)
        self._offered_us = 0

    def offered(self, now_us: int, gpu_us: int) -> None:
        """A request asking for gpu_us of work (its cheapest degree) reached the door's work test."""
        if self._first_us is None:
            self._first_us = now_us
        self._offered.append((now_us, gpu_us))
        self._offered_us += gpu_us

    def busy(self, state: RoundState, now_us: int) -> bool:
        return self.busy_on(state.cluster.gpus, now_us)

    def busy_on(self, gpus: int, now_us: int) -> bool:
        while self._offered and self._offered[0][0] < now_us - self.busy_us:
            self._offered_us -= self._offered.popleft()[1]
        since = now_us - (self._first_us if self._first_us is not None else now_us)
        span = max(min(self.busy_us, since), min(self.min_span_us, self.busy_us))
        return self._offered_us > self.busy_load * gpus * span

    def quiet(self, gpus: int, now_us: int) -> bool:
        """Light load by the offers: neither settling nor busy (`light` adds the backlog's size)."""
        return not self.settling(now_us) and not self.busy_on(gpus, now_us)

    def admits(self, state: RoundState, new: tuple[RequestState, ...], now_us: int) -> bool:
        return self.refuses(state, new, now_us) is None

    def refuses(self, state: RoundState, new: tuple[RequestState, ...], now_us: int) -> str | None:
        """Why the foresight does not admit `new` (None: it does), for the debug log."""
        if not new:
            return "nothing new"
        if len(state.requests) + len(new) > self.max_pending:
            return f"{len(state.requests)} pending"
        if self.busy(state, now_us):
            return "busy"
        if not self.ideal.check(state, new).ok:
            return "the ideal joint test refuses"
        key = (state.now_us, tuple((r.id, r.remaining_steps) for r in state.requests))
        if self._without is None or self._without[0] != key:
            self._without = (key, foresee_met(state, self.policy))
        with_new = foresee_met(replace(state, requests=state.requests + new), self.policy)
        if (self.own or self.settling(now_us)) and not {r.id for r in new} <= with_new:
            return "the forward schedule does not meet it"
        lost = self._without[1] - with_new
        return f"the forward schedule loses {sorted(lost)}" if lost else None

    def light(self, state: RoundState, new: tuple[RequestState, ...], now_us: int) -> bool:
        """Is the door at light load, where it leaves keep or give-up to the planner as `tetriopt solve`
        does (every arrival reaches its policy there)? Not busy, not settling (the gates that keep the
        foresight out of overload) and at most `max_pending` requests pending with `new`."""
        return (bool(new) and len(state.requests) + len(new) <= self.max_pending
                and self.quiet(state.cluster.gpus, now_us))

    def settling(self, now_us: int) -> bool:
        """Less than `min_span_s` of offers seen: `busy` has no evidence of light load yet, so the
        forward schedule must meet the new request too. (Measured: at 5x capacity a 2048 px image
        at 1.5x its SLO, admitted 1.5-2 s after the first offer, before the offers' rate said busy,
        was given up by the next round's plan and stayed given up for 44-51 rounds: 9-10x its SLO,
        the p99 of two runs of ten.)"""
        return self._first_us is None or now_us - self._first_us < self.min_span_us
