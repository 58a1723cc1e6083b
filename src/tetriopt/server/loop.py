"""The round loop: plan round k+1 while round k runs, dispatch it at its boundary, apply reports.

Rounds start at k x round_us on the scheduler clock. Planning of round k starts lead_us
before its boundary, on the state round k will meet if the rounds in flight succeed (their
steps are counted as done: `ImageTask.planned_remaining`). That hides the solver's time
behind execution, as `tetriopt solve` assumes. A request that arrives after that snapshot
waits for the next round. Executors report assignments from their threads; a failed round
gives its unreported steps back to the pending set (re-queued, not lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..instance import Cluster
from ..profile import CostProfile
from ..state import RequestState, RoundPlan, RoundState
from .admission import Timing
from .clock import Clock
from .executors import Completion, Executor, WorkItem
from .jobs import Job, JobStore
from .metrics import Metrics
from .planner import Planner

log = logging.getLogger("tetriopt.server.loop")


class Scheduler:
    def __init__(self, *, profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], timing: Timing,
                 planner: Planner, executor: Executor, store: JobStore, metrics: Metrics, clock: Clock):
        self.profile = profile
        self.cluster = cluster
        self.degrees = degrees
        self.timing = timing
        self.planner = planner
        self.executor = executor
        self.store = store
        self.metrics = metrics
        self.clock = clock
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
        self.window: Callable[[tuple[RequestState, ...], int], tuple[RequestState, ...]] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
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

    def _snapshot(self, k: int, boundary: int) -> RoundState:
        cutoff = self.clock.now_us()
        reqs = tuple(t.request_state() for t in self.store.tasks.values()
                     if t.planned_remaining > 0 and t.arrival_us <= cutoff)
        if self.window is not None:  # bounds planning time at any backlog
            reqs = self.window(reqs, boundary)
        return RoundState(now_us=boundary, round_us=self.timing.round_us, cluster=self.cluster,
                          profile=self.profile, degrees=self.degrees, requests=reqs, round_index=k)

    async def _round(self, k: int, boundary: int) -> None:
        t0 = time.perf_counter()
        state = self._snapshot(k, boundary)
        if not state.requests:
            return
        plan = await self.planner.plan(state)
        t_solved = time.perf_counter()
        work = {}
        for a in plan.assignments:
            t = self.store.tasks[a.request]
            work[t.id] = WorkItem(id=t.id, prompt=t.job.prompt, width=t.width, height=t.height,
                                  total_steps=t.steps, done_steps=t.steps - t.planned_remaining,
                                  seed=t.job.seed + int(t.id.rsplit(".", 1)[1]))
            t.inflight += a.steps
            t.planned_location = a.gpus
            if t.job.status == "queued":
                t.job.status = "running"
        late_ms = (self.clock.now_us() - boundary) / 1e3
        overhead_ms = (time.perf_counter() - t0) * 1e3
        self.metrics.round_done(plan.solve_ms or (t_solved - t0) * 1e3, overhead_ms, late_ms, plan.status)
        if self.on_round:
            self.on_round(state, plan, late_ms, overhead_ms)
        log.debug("round planned", extra={"round": k, "pending": len(state.requests),
                                          "assignments": len(plan.assignments), "backend": plan.backend,
                                          "status": plan.status, "solve_ms": round(plan.solve_ms, 3),
                                          "overhead_ms": round(overhead_ms, 3), "late_ms": round(late_ms, 3)})
        if plan.assignments:
            await self._sleep_until(boundary)
            self._dispatch(k, plan, work)

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
        t = self.store.tasks.get(a.request)
        if t is None:  # cancelled meanwhile
            return
        t.inflight -= a.steps
        t.done += a.steps
        t.location = a.gpus
        self.metrics.gpu_work(a.degree * (a.end_us - a.start_us), self.clock.now_us())
        job = t.job
        if t.done >= t.steps:
            t.finish_us = c.finish_us
            t.image = c.image
            self.store.drop_task(t)
            self.metrics.image_done(c.finish_us <= t.deadline_us, t.width, t.height, c.finish_us - t.arrival_us,
                                    t.deadline_us - c.finish_us, self.clock.now_us())
        self.store.progressed(job)
        if all(x.finished for x in job.tasks) and not job.terminal:
            self.store.finish(job, "succeeded")

    def _requeue(self, k: int, lost: list, err: BaseException) -> None:
        steps = 0
        for a in lost:
            t = self.store.tasks.get(a.request)
            if t is None:
                continue
            t.inflight -= a.steps
            t.location = ()  # the latent on the failed set is gone; resume from the last finished step
            t.planned_location = ()
            steps += a.steps
        if not getattr(self.executor, "resumable", True):
            # the workers restarted empty: every started request begins again from step 0
            for t in self.store.tasks.values():
                if t.done:
                    steps += t.done
                    t.done = 0
                    t.location = t.planned_location = ()
        self.metrics.executor_failed(steps)
        log.error("executor failed; steps re-queued", extra={"round": k, "error": repr(err),
                                                             "assignments": len(lost), "steps": steps})

    # -- from the API (loop thread) --------------------------------------------------------------
    def submit(self, job: Job) -> None:
        self.store.add(job)

    def idle(self) -> bool:
        return not self.store.unfinished_jobs()
