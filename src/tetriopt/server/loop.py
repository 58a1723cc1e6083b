"""The round loop on the wall clock: plan round k+1 while round k runs, dispatch it just before its boundary.

The bookkeeping is the round engine's (`tetriopt.engine.RoundEngine`, the simulator's too);
this loop adds time, threads and jobs. Rounds start at k x round_us on the scheduler clock.
Planning of round k starts lead_us before its boundary, on the engine's snapshot of the state
round k will meet if the rounds in flight succeed. That hides the solver's time behind
execution, as `tetriopt solve` assumes. A request that arrives after that snapshot but by the
boundary goes on GPU time round k's plan leaves free (`planner.fill_late`, greedy): like the
offline solve, it can start at the first boundary after it arrives. Executors report
assignments from their threads; a failed round gives its unreported steps back to the pending
set (re-queued, not lost), except for requests the executor says it can never run
(`RequestsFailed`): their jobs fail, with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

from ..engine import InvalidPlan, RoundEngine
from ..instance import Cluster
from ..plan import PlanStatus, RoundPlan, check_plan
from ..profile import CostProfile
from ..state import RequestState, RoundState
from .admission import PlanningDeadlines, Timing, late_arrivals_fit
from .clock import Clock
from .executors import Completion, Executor, RequestsFailed, WorkItem
from .jobs import Job, JobStore
from .metrics import Metrics
from .planner import Planner, fill_late

log = logging.getLogger("tetriopt.server.loop")

REPLAN_GUARD_US = 10_000     # a re-plan must be back this long before its round's boundary
REPLAN_MIN_US = 10_000       # ... and gets at least this much time, else late arrivals go to fill_late
REPLANS = 3                  # re-plans a round at most
REPLAN_MAX_PENDING = 64      # no re-plan above this many pending requests
DISPATCH_AHEAD_US = 4_000    # a round's plan goes to the executor this long before its boundary, so that
                             # the event loop's lateness on a busy machine does not start it late


@dataclass(frozen=True)
class Decision:
    """A round's plan and where it came from: the state it was made on, that state's snapshot time
    (scheduler clock), when the decision began and was ready (perf_counter), and ready on the
    scheduler clock."""
    state: RoundState
    plan: RoundPlan
    cutoff_us: int
    began: float
    ready: float
    ready_us: int


class Scheduler:
    def __init__(self, *, profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], timing: Timing,
                 planner: Planner, executor: Executor, store: JobStore, metrics: Metrics, clock: Clock,
                 immediate_start: bool = False):
        self.timing = timing
        self.planner = planner
        self.executor = executor
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.engine = RoundEngine(cluster=cluster, profile=profile, degrees=degrees, round_us=timing.round_us,
                                  executor=executor, clock=clock)
        # one thread keeps rounds in order for executors that cannot overlap them
        self._pool = ThreadPoolExecutor(4 if getattr(executor, "concurrent_rounds", True) else 1,
                                        thread_name_prefix="tetriopt-exec")
        self._running: set[asyncio.Future] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.alive = False
        # told of each plan before its round starts (the dashboard's schedule log)
        self.on_round: Callable[[RoundState, RoundPlan, float, float], None] | None = None
        # picks the requests a round is planned on (bounds planning time at any backlog)
        self.window: Callable[[tuple[RequestState, ...], int], tuple[RequestState, ...]] | None = None
        # the deadlines the planner and admission see (admission.PlanningDeadlines: guard band, late requests)
        self.deadlines: PlanningDeadlines | None = None
        self.immediate_start = immediate_start
        self._current: tuple[RoundState, RoundPlan] | None = None  # the round running now, as dispatched
        self._arrived = asyncio.Event()  # set by submit: a round in its lead may plan again
        self._snapped: tuple[int, int] = (-1, -1)  # (boundary, cutoff) of the newest round's snapshot
        self._planned: tuple[int, RoundState, RoundPlan] | None = None  # its plan once made, before its start
        self._ahead: tuple[int, dict[str, int]] = (-1, {})  # a round dispatched before its boundary: its steps

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.engine.clock = self.clock  # the service may have replaced the clock since __init__
        self.executor.start(self.clock)
        self._task = asyncio.create_task(self._run(), name="tetriopt-rounds")
        self.alive = True

    async def stop(self) -> None:
        """Stop planning new rounds; wait for the rounds in flight; close the executor."""
        self._stop.set()
        if self._task:
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self.alive = False
        self.planner.close()
        self._pool.shutdown(wait=False)
        self.executor.close()

    # -- the loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        R, lead = self.timing.round_us, self.timing.lead_us
        k = self.timing.first_round_us(self.clock.now_us()) // R
        try:
            while not self._stop.is_set():
                boundary = k * R
                await self._sleep_until(boundary - lead)
                if self._stop.is_set():
                    break
                await self._round(k, boundary)
                k += 1
                now = self.clock.now_us()
                if now > k * R:  # fell more than a round behind (a slow solve): skip to the next boundary
                    k = self.timing.first_round_us(now) // R
                self.store.expire()
        except Exception:  # noqa: BLE001
            log.exception("round loop crashed")
            self.alive = False
            raise

    async def _sleep_until(self, us: int) -> None:
        left = (us - self.clock.now_us()) / 1e6
        if left > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=left)
            except asyncio.TimeoutError:
                pass

    async def _round(self, k: int, boundary: int) -> None:
        t0 = time.perf_counter()
        self._arrived.clear()
        self._keep_released()
        cutoff = self.clock.now_us()
        self._snapped = (boundary, cutoff)
        state = self._snapshot(boundary, k, cutoff)
        plan = RoundPlan(assignments=(), backend="none")
        if state.requests:
            plan = await self.planner.plan(state)
            self._release_bands(state, plan)
        kept = Decision(state, plan, cutoff, t0, time.perf_counter(), self.clock.now_us())
        self._planned = (boundary, state, plan)
        kept = await self._replan(k, boundary, kept)
        state, plan, cutoff = kept.state, kept.plan, kept.cutoff_us
        self._snapped, self._planned = (boundary, cutoff), (boundary, state, plan)
        planned = bool(state.requests)
        if planned:  # the figures of the decision kept: its own time, and when it was ready
            overhead_ms = (kept.ready - kept.began) * 1e3
            solve_ms = plan.solve_ms or overhead_ms
            late_ms = (kept.ready_us - boundary) / 1e3
        await self._sleep_until(boundary - DISPATCH_AHEAD_US)
        t1 = time.perf_counter()
        filled = self.clock.now_us()
        state, plan = self._fill_late(state, plan, cutoff, filled)
        if not state.requests:  # nothing to run yet: what arrives by the boundary is late-filled then
            await self._sleep_until(boundary)
            t1, filled = time.perf_counter(), self.clock.now_us()
            state, plan = self._fill_late(state, plan, cutoff, filled)
            if not state.requests:
                return
        try:  # the round's steps go in flight (admission counts them as still to do until the boundary)
            plan, work = self.engine.dispatch(state, plan)
        except InvalidPlan as e:  # the planner and fill_late check, so this is a bug: skip the round
            log.error("round skipped: invalid plan", extra={"round": k, "error": str(e)})
            return
        self._ahead = (boundary, self._steps_of(plan))
        # arrivals from here to the boundary: only the plan's free tails (it is dispatched), no displacement
        self._snapped, self._planned = (boundary, filled), (boundary, state, replace(plan, kept=None))
        if not planned:  # a round of late arrivals alone: it counts as a round too
            late_ms = (self.clock.now_us() - boundary) / 1e3
            overhead_ms = solve_ms = (time.perf_counter() - t1) * 1e3
        self.metrics.round_done(solve_ms, overhead_ms, late_ms, plan.status if planned else PlanStatus.HEURISTIC,
                                plan.note if planned else "")
        self._mark_running(plan)
        if self.on_round:  # with the requests' own deadlines (the dashboard marks late work by them)
            self.on_round(self._true_deadlines(state), plan, late_ms, overhead_ms)
        log.debug("round planned", extra={"round": k, "pending": len(state.requests),
                                          "assignments": len(plan.assignments), "backend": plan.backend,
                                          "status": plan.status, "solve_ms": round(plan.solve_ms, 3),
                                          "overhead_ms": round(overhead_ms, 3), "late_ms": round(late_ms, 3),
                                          "given_up": None if plan.kept is None else
                                          sorted({r.id for r in state.requests} - set(plan.kept)),
                                          "pending_detail": self._detail(state, plan) if log.isEnabledFor(logging.DEBUG)
                                          else None})
        if plan.assignments:
            self._dispatch(k, plan, work)
        await self._sleep_until(boundary)
        self._fill_tail(k, state, plan, filled)

    @staticmethod
    def _steps_of(plan: RoundPlan) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in plan.assignments:
            for i in a.requests:
                out[i] = out.get(i, 0) + a.steps
        return out

    def _fill_tail(self, k: int, state: RoundState, plan: RoundPlan, filled: int) -> None:
        """At the boundary: requests that arrived after the plan went to the executor
        (`DISPATCH_AHEAD_US` before it) go on the GPU time it leaves free, dispatched as an addition
        to the round (as immediate starts are); then the round is the one running."""
        late = self._arrived_after(state.now_us, k, filled, self.clock.now_us())
        if late:
            merged, full = fill_late(state, replace(plan, kept=None), late, batching=self.planner.options["batching"])
            added = full.assignments[len(plan.assignments):]
            why = check_plan(merged, full) if added else None
            if why is not None:  # fill_late builds on the plan's free time, so this is a bug
                log.error("late arrivals not added: invalid plan", extra={"round": k, "error": why})
            elif added:
                extra, work = self.engine.dispatch(merged, replace(full, assignments=added))
                self._mark_running(extra)
                self._dispatch(k, extra, work)
                state, plan = merged, replace(plan, assignments=plan.assignments + extra.assignments)
            log.debug("late arrivals at the boundary", extra={"round": k, "late": len(late), "added": len(added)})
        self._current = (state, plan)

    def _detail(self, state: RoundState, plan: RoundPlan) -> list:
        """Per pending request (debug log): id, size, steps left, planning and own deadline from the
        boundary (ms), whether the plan keeps it, and its assignments (GPUs, steps)."""
        pending = self.engine.pending
        return [(r.id, r.width, r.remaining_steps, round((r.deadline_us - state.now_us) / 1e3, 1),
                 round((pending[r.id].deadline_us - state.now_us) / 1e3, 1) if r.id in pending else None,
                 plan.kept is None or r.id in plan.kept,
                 [(len(a.gpus), a.steps) for a in plan.assignments if r.id in a.requests]) for r in state.requests]

    def _release_bands(self, state: RoundState, plan: RoundPlan) -> None:
        """A plan that gives up requests planned to a guard band releases their bands (a 25 ms margin
        the first time, their own deadline the second: `PlanningDeadlines.release`) and asks for a re-plan of the
        round, which `_replan` makes when time is left before the boundary (else the next round
        sees them released)."""
        if self.deadlines is None or plan.kept is None:
            return
        kept = set(plan.kept)
        given_up = [r.id for r in state.requests if r.id not in kept and self.deadlines.banded(
            replace(r, deadline_us=self.engine.pending[r.id].deadline_us), state.now_us)
            if r.id in self.engine.pending]
        if given_up:
            self.deadlines.release(given_up)
            log.debug("guard band released", extra={"round": state.round_index, "requests": given_up})
            self._arrived.set()

    def release_bands(self, ids) -> None:
        """Admission judged these requests by their own deadline: their bands give way (`_release_bands`)."""
        if self.deadlines is not None:
            self.deadlines.release(ids)

    def _keep_released(self) -> None:
        if self.deadlines is not None:
            self.deadlines.keep_only(self.engine.pending)

    async def _replan(self, k: int, boundary: int, kept: Decision) -> Decision:
        """Plan round k again when requests arrive in its lead (or a plan released guard bands:
        `_release_bands`) and a decision still fits before the boundary, so that they are planned
        with everything else, as `tetriopt solve` sees them (what arrives too late for that goes on
        the plan's free GPU time: `_fill_late`).

        A re-plan runs with the time left to the boundary as its limit (less `REPLAN_GUARD_US`),
        at most `REPLANS` times a round and only up to `REPLAN_MAX_PENDING` requests (beyond, a
        backlog keeps the GPUs busy and the solver's CPU is better left to the next round); one
        not back by then is abandoned (its result ignored), so the round never starts late
        because of it. Returns the decision kept."""
        state = kept.state
        for _ in range(REPLANS):
            left = boundary - DISPATCH_AHEAD_US - REPLAN_GUARD_US - self.clock.now_us()
            if left < REPLAN_MIN_US:
                break
            if not self._arrived.is_set():
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=(left - REPLAN_MIN_US) / 1e6)
                except asyncio.TimeoutError:
                    break
            self._arrived.clear()
            now = self.clock.now_us()
            left = boundary - DISPATCH_AHEAD_US - REPLAN_GUARD_US - now
            fresh = self._snapshot(boundary, k, now)
            if self._stop.is_set() or left < REPLAN_MIN_US or len(fresh.requests) > REPLAN_MAX_PENDING:
                break
            if {(r.id, r.deadline_us) for r in fresh.requests} == {(r.id, r.deadline_us) for r in state.requests}:
                continue
            t = time.perf_counter()
            task = asyncio.ensure_future(self.planner.plan(fresh, limit_ms=left / 1e3))
            try:
                plan = await asyncio.wait_for(asyncio.shield(task), timeout=left / 1e6)
            except asyncio.TimeoutError:
                log.info("re-plan abandoned at the boundary", extra={"round": k})
                break
            state = fresh
            kept = Decision(fresh, plan, now, t, time.perf_counter(), self.clock.now_us())
            self._release_bands(fresh, plan)
        return kept

    def _snapshot(self, boundary: int, k: int, cutoff: int) -> RoundState:
        state = self._view(self.engine.snapshot(boundary, k, cutoff_us=cutoff))
        if self.window is not None:
            state = replace(state, requests=self.window(state.requests, boundary))
        return state

    def _mark_running(self, plan: RoundPlan) -> None:
        for a in plan.assignments:
            for i in a.requests:
                t = self.store.tasks.get(i)
                if t is not None and t.job.status == "queued":
                    t.job.status = "running"

    def _start_now(self, tasks) -> None:
        """Immediate starts: new tasks begin at once on GPUs the running round leaves idle (its
        dispatched plan unchanged; RoundEngine.add_immediate); the rest wait for the next round."""
        now = self.clock.now_us()
        cur = self._current
        if cur is None or not cur[0].now_us <= now < cur[0].end_us:  # no plan dispatched for this round
            k = now // self.timing.round_us
            cur = (self.engine.snapshot(k * self.timing.round_us, k, cutoff_us=-1), RoundPlan((), backend="idle"))
        state, plan = cur
        full, combined = self.engine.add_immediate(state, plan, tasks)
        added = combined.assignments[len(plan.assignments):]
        if not added:
            return  # submitted: the next round plans them
        why = check_plan(full, combined)
        if why is not None:  # the rule keeps to idle GPUs, so this is a bug: leave them to the next round
            log.error("immediate start refused", extra={"error": why})
            return
        extra, work = self.engine.dispatch(full, replace(combined, assignments=added, kept=None))
        self._current = (full, replace(combined, assignments=plan.assignments + extra.assignments))
        self._mark_running(extra)
        self._dispatch(state.round_index, extra, work)

    def _fill_late(self, state: RoundState, plan: RoundPlan, cutoff: int, now_us: int) -> tuple[RoundState, RoundPlan]:
        """Just before the boundary: requests that arrived after the snapshot go on GPU time the plan
        left free (`planner.fill_late`), so a request is seen from the first boundary after it
        arrives, as in `tetriopt solve`, whenever there is room."""
        late = self._arrived_after(state.now_us, state.round_index, cutoff, now_us)
        if not late:
            return state, plan
        merged, full = fill_late(state, plan, late, batching=self.planner.options["batching"])
        why = check_plan(merged, full) if full is not plan else None
        log.debug("late arrivals", extra={"round": state.round_index, "late": len(late),
                                          "assignments": [(a.request, a.gpus, a.steps) for a in full.assignments
                                                          if a not in plan.assignments]})
        if why is not None:  # fill_late builds on the plan's free time, so this is a bug
            log.error("late arrivals not added: invalid plan", extra={"round": state.round_index, "error": why})
            return state, plan
        return merged, full

    def _dispatch(self, k: int, plan: RoundPlan, work: dict[str, WorkItem]) -> None:
        loop = self._loop
        assert loop is not None
        reported: set[int] = set()

        def on_complete(c: Completion) -> None:  # executor thread
            reported.add(id(c.assignment))
            loop.call_soon_threadsafe(self._completed, c)

        def run() -> None:
            self.executor.execute(plan, work, k, on_complete)

        fut = loop.run_in_executor(self._pool, run)
        self._running.add(fut)

        def finished(f: asyncio.Future) -> None:
            self._running.discard(f)
            err = f.exception()
            if err is not None:
                hopeless = err.reasons if isinstance(err, RequestsFailed) else {}
                for rid, why in hopeless.items():
                    self._fail_request(rid, why)
                lost = [a for a in plan.assignments if id(a) not in reported and a.request not in hopeless]
                self._requeue(k, lost, err)

        fut.add_done_callback(finished)

    # -- reports from executors (on the loop thread) ---------------------------------------------
    def _completed(self, c: Completion) -> None:
        a = c.assignment
        tasks = [t for t in (self.store.tasks.get(i) for i in a.requests) if t is not None]
        if not tasks:  # cancelled meanwhile
            return
        finished = {t.id for t in self.engine.apply_all(c)}  # a batch advances every member
        self.metrics.gpu_work(a.degree * (a.end_us - a.start_us), self.clock.now_us())
        for t in tasks:
            job = t.job
            if t.id in finished:
                t.image = c.image_of(t.id)
                self.store.drop_task(t)
                self.metrics.image_done(c.finish_us <= t.deadline_us, t.width, t.height, c.finish_us - t.arrival_us,
                                        t.deadline_us - c.finish_us, self.clock.now_us())
            self.store.progressed(job)
            if all(x.finished for x in job.tasks) and not job.terminal:
                self.store.finish(job, "succeeded")

    def _requeue(self, k: int, lost: list, err: BaseException) -> None:
        steps = self.engine.fail(lost, getattr(self.executor, "resumable", True))
        self.metrics.executor_failed(steps)
        log.error("executor failed; steps re-queued", extra={"round": k, "error": repr(err),
                                                             "assignments": len(lost), "steps": steps})

    def _fail_request(self, rid: str, why: str) -> None:
        """The executor can never run this image: its job fails (a sync caller gets the reason as
        an OpenAI error), and its images leave the pending set so no round plans them again."""
        t = self.store.tasks.get(rid)
        if t is None:  # cancelled or finished meanwhile
            return
        for x in t.job.tasks:
            self.engine.drop(x.id)
        self.store.finish(t.job, "failed", f"the executor cannot run image {rid}: {why}")

    # -- from the API (loop thread) --------------------------------------------------------------
    def submit(self, job: Job, persist: bool = True) -> None:
        """A new job (or one restored from the durable store, `persist=False`): its unfinished images
        join the engine's pending set (with immediate starts, new ones may start at once)."""
        self.store.add(job, persist=persist)
        self._arrived.set()
        todo = [t for t in job.tasks if not t.finished]
        if self.immediate_start and persist:
            self._start_now(todo)
        else:
            for t in todo:
                self.engine.submit(t)

    def cancel(self, job: Job, reason: str) -> bool:
        """Its images leave the pending set now, so the next round plans (and frees GPUs) without them."""
        if job.terminal:
            return False
        for t in job.tasks:
            self.engine.drop(t.id)
        self.store.finish(job, "cancelled", reason)
        return True

    def pending_state(self, now_us: int) -> RoundState:
        """The pending work at the first boundary a new request can run at (admission's view): the
        steps dispatched for that round (just before it) are still to do there."""
        boundary = self.timing.first_start_us(now_us)
        ahead = self._ahead[1] if self._ahead[0] == boundary and now_us < boundary else None
        return self._view(self.engine.snapshot(boundary, -1, cutoff_us=now_us, not_started=ahead))

    def late_arrivals_fit(self, new: tuple[RequestState, ...], now_us: int) -> bool:
        """Admission's check for requests arriving after the snapshot of the round they would first
        run in: those whose deadline needs that round (they cannot finish from the next boundary
        at their fastest degree) get only what `fill_late` finds on the GPU time its plan leaves
        free. Predict exactly that: true if each of them (and each earlier such arrival) gets the
        steps it needs there. While that plan is still being solved, predict it from the round
        running now: each GPU as busy as there (idle: free). Arrivals that do not need the round,
        or come before its snapshot, are the planner's."""
        boundary = self.timing.first_start_us(now_us)
        at, cutoff = self._snapped
        if at != boundary or now_us <= cutoff or not new:
            return True
        if (len(self.engine.pending) <= REPLAN_MAX_PENDING
                and boundary - now_us >= DISPATCH_AHEAD_US + REPLAN_GUARD_US + REPLAN_MIN_US):
            return True  # the round is planned again with it (`_replan`)
        late = self._arrived_after(boundary, -1, cutoff, now_us)
        planned = self._planned
        if planned is not None and planned[0] == boundary:
            _, state, plan = planned
        else:
            state = replace(self.engine.snapshot(boundary, -1, cutoff_us=-1), requests=())
            cur, shift = self._current, self.timing.round_us
            running = cur[1].assignments if cur is not None and cur[0].now_us == boundary - shift else ()
            plan = RoundPlan(assignments=tuple(replace(a, start_us=a.start_us + shift, end_us=a.end_us + shift)
                                               for a in running), backend="predicted")
        return late_arrivals_fit(state, plan, late + new, batching=self.planner.options["batching"])

    def _arrived_after(self, boundary: int, k: int, cutoff: int, now_us: int) -> tuple[RequestState, ...]:
        """Pending requests that arrived after `cutoff` (a round's snapshot) and by now_us, as the
        planner sees them at `boundary`."""
        return tuple(r for r in self._view(self.engine.snapshot(boundary, k, now_us)).requests
                     if r.arrival_us > cutoff)

    def _view(self, state: RoundState) -> RoundState:
        """A snapshot as the planner and admission see it (`deadlines`)."""
        return self.deadlines(state) if self.deadlines is not None else state

    def view(self, requests: tuple[RequestState, ...], boundary_us: int) -> tuple[RequestState, ...]:
        """Requests with the deadlines the planner sees at boundary_us (`deadlines`)."""
        return self.deadlines.view(requests, boundary_us) if self.deadlines is not None else requests

    def _true_deadlines(self, state: RoundState) -> RoundState:
        pending = self.engine.pending
        reqs = tuple(replace(r, deadline_us=pending[r.id].deadline_us)
                     if r.id in pending and pending[r.id].deadline_us != r.deadline_us else r for r in state.requests)
        return replace(state, requests=reqs)

    def idle(self) -> bool:
        return not self.store.unfinished_jobs()
