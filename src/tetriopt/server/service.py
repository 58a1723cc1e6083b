"""The server's parts wired together: profile, cluster, clock, jobs, scheduler, admission, drain.

The HTTP layer (app.py) only translates between HTTP and these calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ..errors import InputError
from ..instance import make_cluster
from ..profile import CostProfile, load_profile, ms_to_us
from .admission import Timing, best_finish_us, solo_latency_us
from .clock import Clock
from .config import ServerConfig
from .errors import ApiError, invalid
from .executors import make_executor
from .jobs import ImageTask, Job, JobStore, new_job_id
from .loop import Scheduler
from .metrics import Metrics
from .planner import Planner
from .requests import GenerationRequest

log = logging.getLogger("tetriopt.server")


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
        self.metrics = Metrics(cfg.gpus)
        self.store = JobStore(cfg.job_ttl_s)
        self.clock = Clock()
        self.planner = Planner(cfg.policy, tl, seed=cfg.seed, workers=cfg.solver_workers, mode=cfg.solver_mode,
                               batching=cfg.batching, immediate_start=cfg.immediate_start)
        self.executor = make_executor(cfg.executor, cfg.gpus, self.profile, cfg.sim_fail_rounds, model=self.model)
        self.scheduler = Scheduler(profile=self.profile, cluster=self.cluster, degrees=self.degrees,
                                   timing=self.timing, planner=self.planner, executor=self.executor,
                                   store=self.store, metrics=self.metrics, clock=self.clock,
                                   immediate_start=cfg.immediate_start)
        self.scheduler.on_job_done = self._job_done
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
    async def start(self) -> None:
        self.clock = Clock()
        self.scheduler.clock = self.clock
        await self._warm_up()
        self.scheduler.start()
        self.started = True
        log.info("serving", extra={"model": self.model, "profile": self.profile.name, "gpus": self.cfg.gpus,
                                   "policy": self.cfg.policy, "executor": self.cfg.executor,
                                   "round_ms": self.timing.round_us / 1e3, "lead_ms": self.timing.lead_us / 1e3,
                                   "time_limit_ms": self.time_limit_ms})

    async def _warm_up(self) -> None:
        """Plan one throwaway round so the first real one does not pay for imports and JIT set-up."""
        from ..state import RequestState, RoundState

        p = self.profile.points[len(self.profile.points) // 2]
        state = RoundState(now_us=0, round_us=self.timing.round_us, cluster=self.cluster, profile=self.profile,
                           degrees=self.degrees, round_index=-1,
                           requests=(RequestState(id="warm-up", width=p.width, height=p.height, remaining_steps=1,
                                                  deadline_us=10 * self.timing.round_us),))
        await self.planner.plan(state)

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self.scheduler.stop()
            for job in self.store.unfinished_jobs():
                self.scheduler._finish_job(job, "failed", "server stopped before the job finished")

    async def drain(self) -> None:
        """Refuse new work (503), finish every accepted job, wait for results to be fetched, stop."""
        if self.draining:
            return
        self.draining = True
        log.info("draining", extra={"unfinished_jobs": len(self.store.unfinished_jobs())})
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline and (self.store.unfinished_jobs() or self.store.undelivered_jobs()):
            await asyncio.sleep(0.05)
        left = len(self.store.unfinished_jobs())
        log.info("drained", extra={"unfinished_jobs": left,
                                   "undelivered_jobs": len(self.store.undelivered_jobs())})
        await self.stop()

    @property
    def ready(self) -> bool:
        return self.started and self.scheduler.alive and not self.draining

    # -- admission -------------------------------------------------------------------------------
    def accept(self, req: GenerationRequest, sync: bool) -> Job:
        """Admit a request (or raise ApiError) and hand its images to the scheduler."""
        if self.draining or not self.started:
            self.metrics.requests.labels("rejected_draining").inc()
            raise ApiError(503, "server is draining and accepts no new requests" if self.draining
                           else "server is not ready", type="server_error", code="unavailable",
                           headers={"Retry-After": "5"})
        if req.model is not None and req.model not in (self.model, self.profile.name):
            raise ApiError(404, f"The model '{req.model}' does not exist; this server serves '{self.model}'",
                           param="model", code="model_not_found")
        size = f"{req.width}x{req.height}"
        if not self.profile.covers(req.width, req.height):
            lo, hi = self.profile.points[0], self.profile.points[-1]
            raise invalid("size", size, f"outside the resolutions of profile {self.profile.name!r} "
                                        f"({lo.width}x{lo.height} .. {hi.width}x{hi.height} in pixels)")
        steps = req.steps or self.cfg.default_steps
        now = self.clock.now_us()
        best = best_finish_us(self.profile, self.cluster, self.degrees, self.timing, req.width, req.height,
                              steps, now)
        if best is None:
            raise invalid("size", size, f"one denoising step takes longer than a round "
                                        f"({self.timing.round_us / 1e3:g} ms) on every GPU set")
        if req.slo_ms is not None:
            deadline, field, given = now + ms_to_us(req.slo_ms), "slo_ms", req.slo_ms
        elif req.deadline_ms is not None:
            deadline, field, given = self.clock.from_epoch_ms(req.deadline_ms), "deadline_ms", req.deadline_ms
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
                self.metrics.requests.labels("rejected_infeasible").inc()
                raise invalid(field, given, msg, code="deadline_infeasible")
            best_effort = True
        if self.store.pending_images() + req.n > self.cfg.max_queue:
            self.metrics.requests.labels("rejected_overload").inc()
            raise ApiError(429, f"queue full: {self.store.pending_images()} images pending, limit "
                                f"{self.cfg.max_queue}; retry later", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": str(max(1, round(self.timing.round_us / 1e6)))})
        jid = new_job_id()
        seed = req.seed if req.seed is not None else random.randrange(2**31)
        job = Job(id=jid, prompt=req.prompt, width=req.width, height=req.height, steps=steps, n=req.n, seed=seed,
                  response_format=req.response_format, arrival_us=now, deadline_us=deadline,
                  created=int(self.clock.to_epoch_s(now)), best_effort=best_effort, sync=sync)
        job.tasks = [ImageTask(id=f"{jid}.{i}", job=job, index=i, width=req.width, height=req.height, steps=steps,
                               arrival_us=now, deadline_us=deadline) for i in range(req.n)]
        self.scheduler.submit(job)
        log.info("accepted", extra={"job": jid, "size": size, "n": req.n, "steps": steps,
                                    "deadline_ms": round((deadline - now) / 1e3, 3), "best_effort": best_effort,
                                    "sync": sync, "queue": self.store.pending_images()})
        return job

    def _job_done(self, job: Job) -> None:
        if job.status == "succeeded":
            self.metrics.requests.labels("met" if job.met else "missed").inc()
        else:
            self.metrics.requests.labels(job.status if job.status in ("cancelled", "failed") else "failed").inc()
        fin = job.finish_us
        log.info("finished", extra={"job": job.id, "status": job.status, "met": job.met,
                                    "latency_ms": None if fin is None else round((fin - job.arrival_us) / 1e3, 3)})
