"""The round loop on the wall clock: plan round k+1 while round k runs, dispatch it at its boundary.

The bookkeeping is the round engine's (`tetriopt.engine.RoundEngine`, the simulator's too);
this loop adds time, threads and jobs. Rounds start at k x round_us on the scheduler clock.
Planning of round k starts lead_us before its boundary, on the engine's snapshot of the state
round k will meet if the rounds in flight succeed. That hides the solver's time behind
execution, as `tetriopt solve` assumes. A request that arrives after that snapshot waits for
the next round. Executors report assignments from their threads; a failed round gives its
unreported steps back to the pending set (re-queued, not lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

from ..engine import InvalidPlan, RoundEngine
from ..instance import Cluster
from ..plan import RoundPlan, check_plan
from ..state import RoundState
from ..profile import CostProfile
from .admission import Timing
from .clock import Clock
from .executors import Completion, Executor, WorkItem
from .jobs import Job, JobStore
from .metrics import Metrics
from .planner import Planner

log = logging.getLogger("tetriopt.server.loop")


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
        self.on_job_done: Callable[[Job], None] | None = None
        self.immediate_start = immediate_start
        self._current: tuple[RoundState, RoundPlan] | None = None  # the round running now, as dispatched

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
        state = self.engine.snapshot(boundary, k, cutoff_us=self.clock.now_us())
        self.metrics.queue.set(self.store.pending_images())
        if not state.requests:
            return
        plan = await self.planner.plan(state)
        t_solved = time.perf_counter()
        try:
            plan, work = self.engine.dispatch(state, plan)
        except InvalidPlan as e:  # the planner checks and falls back, so this is a bug: skip the round
            log.error("round skipped: invalid plan", extra={"round": k, "error": str(e)})
            return
        self._mark_running(plan)
        late_ms = (self.clock.now_us() - boundary) / 1e3
        overhead_ms = (time.perf_counter() - t0) * 1e3
        self.metrics.round_done(plan.solve_ms or (t_solved - t0) * 1e3, overhead_ms, late_ms, plan.status)
        log.debug("round planned", extra={"round": k, "pending": len(state.requests),
                                          "assignments": len(plan.assignments), "backend": plan.backend,
                                          "status": plan.status, "solve_ms": round(plan.solve_ms, 3),
                                          "overhead_ms": round(overhead_ms, 3), "late_ms": round(late_ms, 3)})
        if plan.assignments:
            await self._sleep_until(boundary)
            self._dispatch(k, plan, work)
        self._current = (state, plan)

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
                lost = [a for a in plan.assignments if id(a) not in reported]
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
                met = c.finish_us <= t.deadline_us
                self.metrics.image_done(met, (c.finish_us - t.arrival_us) / 1e6)
                self.metrics.queue.set(self.store.pending_images())
            job.publish("progress", job.progress())
            if all(x.finished for x in job.tasks) and not job.terminal:
                self._finish_job(job, "succeeded")

    def _requeue(self, k: int, lost: list, err: BaseException) -> None:
        steps = self.engine.fail(lost, getattr(self.executor, "resumable", True))
        self.metrics.failures.inc()
        self.metrics.requeued.inc(steps)
        log.error("executor failed; steps re-queued", extra={"round": k, "error": repr(err),
                                                             "assignments": len(lost), "steps": steps})

    def _finish_job(self, job: Job, status: str, error: str | None = None) -> None:
        job.status = status
        job.error = error
        job.finished_at = time.monotonic()
        job.done_event.set()
        job.publish("done", job.progress())
        if self.on_job_done:
            self.on_job_done(job)

    # -- from the API (loop thread) --------------------------------------------------------------
    def submit(self, job: Job) -> None:
        self.store.add(job)
        if self.immediate_start:
            self._start_now(list(job.tasks))
        else:
            for t in job.tasks:
                self.engine.submit(t)
        self.metrics.queue.set(self.store.pending_images())

    def cancel(self, job: Job) -> bool:
        if job.terminal:
            return False
        for t in job.tasks:
            self.store.drop_task(t)
            self.engine.drop(t.id)
        self.metrics.queue.set(self.store.pending_images())
        self._finish_job(job, "cancelled")
        return True

    def idle(self) -> bool:
        return not self.store.unfinished_jobs()
