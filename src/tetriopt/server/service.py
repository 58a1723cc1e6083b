"""The server's parts wired together: profile, cluster, clock, jobs, scheduler, admission, drain.

The HTTP layer (app.py) only translates between HTTP and these calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import replace
from typing import Any

from ..errors import InputError
from ..instance import make_cluster
from ..plan import RoundPlan
from ..profile import CostProfile, load_profile, ms_to_us
from ..runnable import heads_of, image_tokens, runnable_degrees, split_problem
from ..state import RequestState, RoundState
from .admission import (Foresight, JointAdmission, PlanningDeadlines, PlanWindow, Reach, Timing,
                        best_finish_us, cheapest_step_gpu_us, solo_latency_us)
from .clock import Clock
from .config import ServerConfig
from .durable import SqliteJobs
from .errors import ApiError, invalid
from .executors import make_executor, runtime_options
from .jobs import ImageTask, Job, JobStore, new_job_id
from .loop import Scheduler
from .metrics import Metrics
from .planner import Planner
from .requests import MAX_SLO_MS, GenerationRequest
from .schedule import ScheduleLog

log = logging.getLogger("tetriopt.server")

ARRIVAL_HEADER = "X-Tetriopt-Arrival-Ms"


def build_cluster(cfg: ServerConfig):
    if cfg.island_size is None:
        return make_cluster(cfg.gpus)
    if cfg.island_size < 1 or cfg.gpus % cfg.island_size:
        raise InputError("island_size", cfg.island_size, f"must divide the GPU count {cfg.gpus}")
    s = cfg.island_size
    return make_cluster(cfg.gpus, [list(range(i, i + s)) for i in range(0, cfg.gpus, s)])


class Service:
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        if cfg.gpus < 1:
            raise InputError("gpus", cfg.gpus, "must be at least 1")
        self.profile: CostProfile = load_profile(cfg.profile)
        self.model = cfg.model or self.profile.model
        self.cluster = build_cluster(cfg)
        self.degrees = tuple(d for d in self.profile.degrees if d <= cfg.gpus and self.cluster.sets(d))
        if not self.degrees:
            raise InputError("gpus", cfg.gpus, f"no degree of profile {self.profile.name!r} fits")
        round_us = ms_to_us(cfg.round_ms) if cfg.round_ms is not None else self.profile.default_round_us
        if round_us <= 0:
            raise InputError("round_ms", cfg.round_ms, "must be positive")
        tl = cfg.time_limit_ms if cfg.time_limit_ms is not None else round(0.2 * round_us / 1e3, 3)
        self.time_limit_ms = tl
        # planning starts this long before a round: the solve's limit, plus margin for building the model
        lead = min(round_us // 2, ms_to_us(tl) + max(ms_to_us(5), round_us // 10))
        self.timing = Timing(round_us=round_us, lead_us=lead)
        self.default_size = self._check_size(cfg.default_size)
        if cfg.admission not in ("reject", "best-effort"):
            raise InputError("admission", cfg.admission, "must be 'reject' or 'best-effort'")
        self.metrics = Metrics(cfg.gpus, self._size_class)
        if not 0 < cfg.admission_headroom <= 1:
            raise InputError("admission_headroom", cfg.admission_headroom, "must be in (0, 1]")
        self.joint = JointAdmission(cfg.admission_headroom)
        self.foresight = Foresight(cfg.admission_foresight)
        if cfg.late_slo_scale != 0 and cfg.late_slo_scale < 1:
            raise InputError("late_slo_scale", cfg.late_slo_scale, "must be 0 (off) or at least 1")
        if not 0 <= cfg.deadline_guard < 1:
            raise InputError("deadline_guard", cfg.deadline_guard, "must be in [0, 1)")
        self.max_backlog_gpu_s = (cfg.max_backlog_gpu_s if cfg.max_backlog_gpu_s is not None
                                  else 60.0 * cfg.gpus)
        self.store = JobStore(cfg.job_ttl_s)
        self.store.on_finish.append(self._job_done)
        self.schedule = ScheduleLog()
        self._step_cost: dict[tuple[int, int], int | None] = {}
        self.clock = Clock()
        self.planner = Planner(cfg.policy, tl, seed=cfg.seed, workers=cfg.solver_workers, mode=cfg.solver_mode,
                               batching=cfg.batching, immediate_start=cfg.immediate_start,
                               factory=cfg.policy_factory)
        self.executor = make_executor(cfg.executor, cfg.gpus, self.profile, cfg.sim_fail_rounds, model=self.model,
                                      **runtime_options(cfg.executor, self.profile, cfg.model_path, cfg.sp_backend,
                                                        cfg.compile, cfg.aux_device))
        # attention heads of the weights the executor loaded (the runtime's), else of the model's name
        self.heads = getattr(self.executor, "heads", None) or heads_of(self.model)
        self.scheduler = Scheduler(profile=self.profile, cluster=self.cluster, degrees=self.degrees,
                                   timing=self.timing, planner=self.planner, executor=self.executor,
                                   store=self.store, metrics=self.metrics, clock=self.clock,
                                   immediate_start=cfg.immediate_start)
        self.scheduler.on_round = self._planned
        reach = Reach(self.profile, self.cluster, self.degrees, round_us)
        self.scheduler.window = PlanWindow(reach, cfg.max_plan_requests)
        # at light load (the door's gate) the planner sees the offline deadlines: no band beyond a dispatch
        # margin, late requests on leftover time, as `tetriopt solve` plans them
        light = (lambda: self.foresight.quiet(self.cfg.gpus, self.clock.now_us())) if cfg.admission_light_door else None
        self.scheduler.deadlines = PlanningDeadlines(reach, cfg.late_slo_scale, cfg.deadline_guard, light)
        self.draining = False
        self.started = False

    def _check_size(self, size: str) -> str:
        try:
            w, h = (int(x) for x in size.split("x"))
        except ValueError:
            raise InputError("default_size", size, "must be WIDTHxHEIGHT") from None
        if not self.profile.covers(w, h):
            raise InputError("default_size", size, f"outside profile {self.profile.name!r}")
        return size

    # -- lifecycle -------------------------------------------------------------------------------
    def _size_class(self, width: int, height: int) -> str:
        """The profile point nearest in pixels (a bounded label set for per-resolution histograms)."""
        p = min(self.profile.points, key=lambda p: abs(p.width * p.height - width * height))
        return f"{p.width}x{p.height}"

    async def start(self) -> None:
        self.clock = Clock()
        self.scheduler.clock = self.clock
        if self.cfg.store_path:
            self._restore(SqliteJobs(self.cfg.store_path, self.clock))
        await self._warm_up()
        self.scheduler.start()
        self.started = True
        log.info("serving", extra={"model": self.model, "profile": self.profile.name, "gpus": self.cfg.gpus,
                                   "policy": self.cfg.policy, "executor": self.cfg.executor,
                                   "round_ms": self.timing.round_us / 1e3, "lead_ms": self.timing.lead_us / 1e3,
                                   "time_limit_ms": self.time_limit_ms})

    async def _warm_up(self) -> None:
        """Plan one throwaway round so the first real one does not pay for imports and JIT set-up."""
        p = self.profile.points[len(self.profile.points) // 2]
        state = RoundState(now_us=0, round_us=self.timing.round_us, cluster=self.cluster, profile=self.profile,
                           degrees=self.degrees, round_index=-1,
                           requests=(RequestState(id="warm-up", width=p.width, height=p.height, remaining_steps=1,
                                                  deadline_us=10 * self.timing.round_us),))
        await self.planner.plan(state)

    def _restore(self, durable: SqliteJobs) -> None:
        """Async jobs of an earlier run: finished ones served again, unfinished ones re-queued from step 0."""
        finished, requeued = durable.load(self.cfg.job_ttl_s)
        for job in finished + requeued:
            self.scheduler.submit(job, persist=False)
        self.store.durable = durable
        if finished or requeued:
            log.info("restored jobs", extra={"finished": len(finished), "requeued": len(requeued),
                                             "store": self.cfg.store_path})

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self.scheduler.stop()
            for job in self.store.unfinished_jobs():
                if job.sync or self.store.durable is None:
                    self.store.finish(job, "failed", "server stopped before the job finished")
                # else: left queued in the durable store; the next start re-queues it
            if self.store.durable is not None:
                self.store.durable.close()

    def cancel(self, job: Job, reason: str) -> bool:
        """Cancel a job: its images leave the pending set, so the next round frees their GPUs."""
        if job.terminal:
            return False
        job.abandoned = reason == "client disconnected"
        self.scheduler.cancel(job, reason)
        log.info("cancelled", extra={"job": job.id, "reason": reason})
        return True

    def client_gone(self, job: Job) -> None:
        """A sync client disconnected. Without an Idempotency-Key nobody can come back for the job:
        cancel it now. With one, a retry may re-attach: cancel only if none has after the grace period."""
        if job.idempotency_key is None or self.cfg.disconnect_grace_s <= 0:
            if job.waiters == 0:
                self.cancel(job, "client disconnected")
            return

        def check() -> None:
            if job.waiters == 0:
                self.cancel(job, "client disconnected")

        asyncio.get_running_loop().call_later(self.cfg.disconnect_grace_s, check)

    def _planned(self, state: RoundState, plan: RoundPlan, late_ms: float, overhead_ms: float) -> None:
        """Each planned round: into the schedule log, and a point of the attainment series (at most 1/s)."""
        self.schedule.planned(state, plan, late_ms, overhead_ms)
        self.refresh_metrics()

    def backlog_gpu_s(self) -> float:
        return self._backlog_gpu_s(self._admission_state(self.clock.now_us()))

    def stats(self) -> dict[str, Any]:
        return self.metrics.stats(self.clock.now_us(), self.store.pending_images(), self.backlog_gpu_s())

    def refresh_metrics(self) -> None:
        self.metrics.refresh(self.clock.now_us(), self.store.pending_images(), self.backlog_gpu_s())

    async def drain(self) -> None:
        """Refuse new work (503), finish accepted jobs, wait for results to be fetched, stop.

        At most drain_timeout_s. With the durable store, finished async results need no waiting
        (the next start serves them) and unfinished async jobs left at the timeout stay in it.
        """
        if self.draining:
            return
        self.draining = True
        log.info("draining", extra={"unfinished_jobs": len(self.store.unfinished_jobs())})
        # keep two rounds (the one in flight and the one planned finish before the executor closes) and a second
        # for the rest of the shutdown, so that the process is gone within drain_timeout_s
        reserve = 2 * self.timing.round_us / 1e6 + 1.0
        deadline = time.monotonic() + max(0.0, self.cfg.drain_timeout_s - reserve)

        def waiting() -> bool:
            if self.store.unfinished_jobs():
                return True
            return any(j.sync or self.store.durable is None for j in self.store.undelivered_jobs())

        while time.monotonic() < deadline and waiting():
            await asyncio.sleep(0.05)
        left = len(self.store.unfinished_jobs())
        log.info("drained", extra={"unfinished_jobs": left,
                                   "undelivered_jobs": len(self.store.undelivered_jobs())})
        await self.stop()

    @property
    def ready(self) -> bool:
        return self.started and self.scheduler.alive and not self.draining

    # -- admission -------------------------------------------------------------------------------
    def _unavailable(self) -> None:
        if self.draining or not self.started:
            raise ApiError(503, "server is draining and accepts no new requests" if self.draining
                           else "server is not ready", type="server_error", code="unavailable",
                           headers={"Retry-After": "5"})

    def _overload(self, message: str, code: str, retry_s: int) -> ApiError:
        return ApiError(429, message, type="rate_limit_error", code=code, headers={"Retry-After": str(retry_s)})

    def _steps(self, req: GenerationRequest) -> int:
        """Explicit steps, else the default scaled by gpt-image's `quality` (low: half, high/hd: double)."""
        if req.steps:
            return req.steps
        scale = {"low": 0.5, "high": 2.0, "hd": 2.0}.get(req.quality, 1.0)
        return max(1, min(self.cfg.max_steps, round(self.cfg.default_steps * scale)))

    def accept(self, req: GenerationRequest, sync: bool, idempotency_key: str | None = None) -> Job:
        """Admit a request (or raise ApiError) and hand its images to the scheduler. A refusal carries
        the arrival on the scheduler clock (header `X-Tetriopt-Arrival-Ms`, as an accepted request's
        `tetriopt.arrival_ms`), so that loadgen replays refused requests at their true round phase."""
        now = self.clock.now_us()
        try:
            return self._accept(req, sync, idempotency_key, now)
        except ApiError as e:
            e.headers.setdefault(ARRIVAL_HEADER, f"{now / 1e3:.3f}")
            raise

    def _accept(self, req: GenerationRequest, sync: bool, idempotency_key: str | None, now: int) -> Job:
        self._unavailable()
        if idempotency_key is not None:
            prior = self.store.by_idempotency_key(idempotency_key)
            if prior is not None:
                return prior
        if req.model is not None and req.model not in (self.model, self.profile.name):
            raise ApiError(404, f"model: The model '{req.model}' does not exist; this server serves '{self.model}'",
                           param="model", code="model_not_found")
        size = f"{req.width}x{req.height}"
        if not self.profile.covers(req.width, req.height):
            lo, hi = self.profile.points[0], self.profile.points[-1]
            raise invalid("size", size, f"outside the resolutions of profile {self.profile.name!r} "
                                        f"({lo.width}x{lo.height} .. {hi.width}x{hi.height} in pixels)")
        runnable = runnable_degrees(self.model, req.width, req.height, self.degrees, self.heads)
        if runnable != self.degrees:
            # the planner may pick any of the server's degrees for any request, so all must run
            why = "; ".join(split_problem(image_tokens(req.width, req.height), self.heads, k) or ""
                            for k in self.degrees if k not in runnable)
            raise invalid("size", size, f"the runtime cannot split it over every degree this server plans with "
                                        f"{list(self.degrees)}: {why}")
        steps = self._steps(req)
        best = best_finish_us(self.profile, self.cluster, self.degrees, self.timing, req.width, req.height,
                              steps, now)
        per_step = self._step_gpu_us(req.width, req.height)
        if best is None or per_step is None:
            raise invalid("size", size, f"one denoising step takes longer than a round "
                                        f"({self.timing.round_us / 1e3:g} ms) on every GPU set")
        work_s = per_step * steps * req.n / 1e6
        if work_s > self.cfg.max_request_gpu_s:
            raise invalid("steps", steps, f"n={req.n} x steps={steps} at {size} is {work_s:.1f} GPU-s of work, over "
                                          f"the per-request limit of {self.cfg.max_request_gpu_s:g} GPU-s",
                          code="request_too_large")
        if req.slo_ms is not None:
            deadline, field, given = now + ms_to_us(req.slo_ms), "slo_ms", req.slo_ms
        elif req.deadline_ms is not None:
            deadline, field, given = self.clock.from_epoch_ms(req.deadline_ms), "deadline_ms", req.deadline_ms
            if deadline - now > ms_to_us(MAX_SLO_MS):
                raise invalid(field, given, f"more than {MAX_SLO_MS / 864e5:g} days ahead")
        else:
            solo = solo_latency_us(self.profile, self.cluster, self.degrees, req.width, req.height, steps,
                                   self.timing.round_us)
            # always reachable: the earliest finish (round wait included) plus (scale - 1) x solo latency
            deadline, field, given = best + int((self.cfg.default_slo_scale - 1) * solo), "slo_ms", None
        best_effort = False
        if best > deadline:
            msg = (f"deadline cannot be met even alone on all {self.cfg.gpus} GPUs: the earliest finish is "
                   f"{(best - now) / 1e3:.0f} ms after arrival, the deadline {(deadline - now) / 1e3:.0f} ms")
            if self.cfg.admission == "reject":
                raise invalid(field, given, msg, code="deadline_infeasible")
            best_effort = True
        self.foresight.offered(now, int(work_s * 1e6))  # the offered load, whatever the caps say
        pending = self.store.pending_images()
        if pending + req.n > self.cfg.max_queue:
            raise self._overload(f"queue full: {pending} images pending, limit {self.cfg.max_queue}; retry later",
                                 "queue_full", max(1, round(self.timing.round_us / 1e6)))
        state = self._admission_state(now)
        backlog_s = self._backlog_gpu_s(state)
        if backlog_s + work_s > self.max_backlog_gpu_s:
            excess = backlog_s + work_s - self.max_backlog_gpu_s
            raise self._overload(f"backlog full: {backlog_s:.1f} GPU-s of work pending, limit "
                                 f"{self.max_backlog_gpu_s:g} GPU-s; retry later", "backlog_full",
                                 max(1, math.ceil(excess / self.cfg.gpus)))
        jid = new_job_id()
        unbanded = False
        if not best_effort:
            new = tuple(RequestState(id=f"{jid}.{i}", width=req.width, height=req.height, remaining_steps=steps,
                                     deadline_us=deadline, arrival_us=now) for i in range(req.n))
            # judged by the deadline the planner will plan it to (the guard band): judged by its own, at
            # 5x load the 2048 px images admitted were given up by the planner at once (81-85% met)
            own, new = new, self.scheduler.view(new, state.now_us)
            verdict = self.joint.check(state, new)
            if not verdict.ok and self.cfg.admission_light_door and self.foresight.light(state, new, now):
                # light load: as `tetriopt solve`, where every arrival reaches the policy, it is the
                # planner's to keep or give up (it can meet its own deadline alone: the 400 test above;
                # it plans to it less a dispatch margin: PlanningDeadlines.light). The fluid tests refused
                # 1024 px images at 1.5x their SLO beside 2048 px ones that the offline solve meets
                # (issue 11: 1-4 a seed); the foresight is not asked (2-22 ms on the event loop)
                verdict = replace(verdict, ok=True)
                log.debug("admitted at light load", extra={"job": jid, "size": size, "arrival_ms": now / 1e3})
            elif not verdict.ok:
                no = self.foresight.refuses(state, new, now)
                if no is None:
                    verdict = replace(verdict, ok=True)
                elif own != new and not self.foresight.busy(state, now) and (
                        self.joint.check(state, own).ok or self.foresight.refuses(state, own, now) is None):
                    # at light load the band gives way: judged by its own deadline, planned to it
                    # (PlanningDeadlines.release); the band refused 1024/2048 px images at 1.5x their
                    # SLO that the offline solve meets with 20-80 ms to spare (issue 11)
                    verdict, new, unbanded, no = replace(verdict, ok=True), own, True, None
                if no is not None and log.isEnabledFor(logging.DEBUG):
                    log.debug("joint test and foresight refuse", extra={
                        "job": jid, "size": size, "arrival_ms": now / 1e3, "foresight": no,
                        "pending": [(r.id, f"{r.width}x{r.height}", r.remaining_steps,
                                     round((r.deadline_us - state.now_us) / 1e3, 1)) for r in state.requests]})
            why = (f"the deadline cannot be met beside the work already accepted ({verdict.committed_gpu_us / 1e6:.1f} "
                   f"GPU-s due by then on {self.cfg.gpus} GPUs)")
            if verdict.ok and not self.scheduler.late_arrivals_fit(new, now):
                # it needs the round being planned, whose plan leaves it too little room (fill_late): not promised
                verdict = replace(verdict, ok=False, retry_after_s=max(1, math.ceil(self.timing.round_us / 1e6)))
                why = ("the deadline needs the round that starts next, and its plan (made while the request "
                       "arrived) leaves too little free GPU time")
                log.debug("planned round leaves too little", extra={"job": jid, "size": size, "arrival_ms": now / 1e3})
            if not verdict.ok:
                if self.cfg.admission == "reject":
                    raise self._overload(f"{field}: {why}; retry later", "deadline_overloaded", verdict.retry_after_s)
                best_effort = True
        seed = req.seed if req.seed is not None else random.randrange(2**31)
        job = Job(id=jid, prompt=req.prompt, width=req.width, height=req.height, steps=steps, n=req.n, seed=seed,
                  response_format=req.response_format, arrival_us=now, deadline_us=deadline,
                  created=int(self.clock.to_epoch_s(now)), best_effort=best_effort, sync=sync,
                  quality=req.quality, output_format=req.output_format, output_compression=req.output_compression,
                  guidance_scale=req.guidance_scale, negative_prompt=req.negative_prompt,
                  idempotency_key=idempotency_key)
        job.tasks = [ImageTask(id=f"{jid}.{i}", job=job, index=i, width=req.width, height=req.height, steps=steps,
                               arrival_us=now, deadline_us=deadline) for i in range(req.n)]
        if not best_effort and unbanded:
            self.scheduler.release_bands([t.id for t in job.tasks])
        self.scheduler.submit(job)
        log.info("accepted", extra={"job": jid, "size": size, "n": req.n, "steps": steps, "arrival_ms": now / 1e3,
                                    "deadline_ms": round((deadline - now) / 1e3, 3), "best_effort": best_effort,
                                    "sync": sync, "queue": self.store.pending_images()})
        return job

    def _admission_state(self, now_us: int) -> RoundState:
        return self.scheduler.pending_state(now_us)

    def _step_gpu_us(self, width: int, height: int) -> int | None:
        """GPU-us of a step at the cheapest degree, per size (cached: the backlog sums it per pending image)."""
        key = (width, height)
        if key not in self._step_cost:
            self._step_cost[key] = cheapest_step_gpu_us(self.profile, self.cluster, self.degrees, width, height,
                                                        self.timing.round_us)
        return self._step_cost[key]

    def _backlog_gpu_s(self, state: RoundState) -> float:
        """Pending work in GPU-seconds, each image at its cheapest degree."""
        return sum((self._step_gpu_us(r.width, r.height) or 0) * r.remaining_steps for r in state.requests) / 1e6

    def _job_done(self, job: Job) -> None:
        self.metrics.job_done(job.status, job.met)
        fin = job.finish_us
        log.info("finished", extra={"job": job.id, "status": job.status, "met": job.met,
                                    "latency_ms": None if fin is None else round((fin - job.arrival_us) / 1e3, 3)})
