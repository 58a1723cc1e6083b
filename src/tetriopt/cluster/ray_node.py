"""One GPU node as a Ray actor: the single-process server's round loop, planner and executor.

The actor owns one `Service` (round loop, planner, sim/cpu/cuda executor, job store) and no
HTTP: the front-end (`ray_serve`) has already admitted and routed the request, so the node
accepts it best effort with the client's absolute deadline. Times cross the actor boundary as
Unix-epoch milliseconds (each process keeps its own monotonic scheduler clock).

Every incarnation of the actor has a fresh id: after Ray restarts it (its node died and came
back) the front-end sees a new id and knows that the jobs it had there are gone.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from dataclasses import replace
from typing import Any

from ..server.config import ServerConfig


class NodeActor:
    """Methods are called by the front-end through Ray (the class is wrapped by `ray.remote`)."""

    def __init__(self, index: int, cfg: ServerConfig):
        # the front-end admitted the request already: never refuse it here
        self.cfg = replace(cfg, admission="best-effort", max_queue=1 << 30, max_backlog_gpu_s=float("inf"),
                           api_key=None, store_path=None)
        self.index = index
        self.incarnation = uuid.uuid4().hex[:12]
        self.svc: Any = None
        self._starting: asyncio.Future | None = None
        self.jobs: dict[str, Any] = {}      # front-end job id -> this node's Job
        self.moved: set[str] = set()        # taken back before any step ran (result() says "moved")
        self.front_of: collections.OrderedDict[str, str] = collections.OrderedDict()  # our job id -> front-end's

    async def _up(self) -> Any:
        if self.svc is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        return self.svc

    async def _start(self) -> None:
        from ..server.service import Service

        svc = Service(self.cfg)
        await svc.start()
        self.svc = svc

    async def hello(self) -> dict[str, Any]:
        """Start the node (first call) and say who it is."""
        await self._up()
        import socket

        import ray

        return {"index": self.index, "incarnation": self.incarnation, "host": socket.gethostname(),
                "ray_node": ray.get_runtime_context().get_node_id(),
                "gpus": self.cfg.gpus, "executor": self.cfg.executor}

    async def submit(self, job_id: str, req: Any) -> str:
        """Queue a routed job (the front-end's GenerationRequest, `deadline_ms` absolute); our incarnation."""
        svc = await self._up()
        if job_id in self.jobs:  # a retried call: already here
            return self.incarnation
        job = self.jobs[job_id] = svc.accept(req, sync=False)
        self.front_of[job.id] = job_id
        while len(self.front_of) > 10_000:  # only recent rounds are shown
            self.front_of.popitem(last=False)
        return self.incarnation

    async def result(self, job_id: str) -> dict[str, Any]:
        """Wait for the job; its images and finish times (epoch ms), or status "moved"/"unknown"."""
        await self._up()
        job = self.jobs.get(job_id)
        if job is None:
            moved = job_id in self.moved
            self.moved.discard(job_id)
            return {"status": "moved" if moved else "unknown", "incarnation": self.incarnation}
        await job.done_event.wait()
        self.svc.store.delivered(job)
        del self.jobs[job_id]
        if job_id in self.moved:
            self.moved.discard(job_id)
            return {"status": "moved", "incarnation": self.incarnation}
        clock = self.svc.clock
        return {"status": job.status, "error": job.error, "incarnation": self.incarnation, "node": self.index,
                "images": [t.image for t in job.tasks],
                "finish_epoch_ms": [None if t.finish_us is None else clock.to_epoch_s(t.finish_us) * 1e3
                                    for t in job.tasks]}

    async def take_back(self, job_id: str) -> bool:
        """Drop a job no step of which has run or is running (it moves to another node)."""
        await self._up()
        job = self.jobs.get(job_id)
        if job is None or job.terminal or any(t.planned_remaining < t.steps or t.location for t in job.tasks):
            return False
        self.moved.add(job_id)
        self.svc.cancel(job, "moved to another node")
        return True

    async def cancel(self, job_id: str) -> None:
        await self._up()
        job = self.jobs.get(job_id)
        if job is not None:
            self.svc.cancel(job, "cancelled by the client")

    async def view(self) -> dict[str, Any]:
        """Unfinished images (steps left once the rounds in flight succeed) and this node's figures."""
        svc = await self._up()
        front = {id(j): fid for fid, j in self.jobs.items()}
        to_ms = lambda us: svc.clock.to_epoch_s(us) * 1e3  # noqa: E731
        tasks = [{"job": front[id(t.job)], "index": int(t.id.rsplit(".", 1)[1]), "width": t.width,
                  "height": t.height, "remaining": t.planned_remaining, "done": t.done, "steps": t.steps,
                  "deadline_epoch_ms": to_ms(t.deadline_us), "arrival_epoch_ms": to_ms(t.arrival_us),
                  "location": list(t.planned_location or t.location)}
                 for t in svc.store.tasks.values() if id(t.job) in front and t.planned_remaining > 0]
        return {"index": self.index, "incarnation": self.incarnation, "tasks": tasks, "stats": svc.stats(),
                "ready": svc.ready, "rounds": [self._round(r, to_ms) for r in list(svc.schedule.rounds)[-20:]]}

    def _round(self, r: dict[str, Any], to_ms: Any) -> dict[str, Any]:
        """A round of the node's schedule log, times as epoch ms, jobs by the front-end's ids."""
        def job(nid: str) -> str:
            return self.front_of.get(nid, nid)

        return {**r, "start_ms": to_ms(r["start_us"]), "end_ms": to_ms(r["end_us"]),
                "assignments": [{**a, "job": job(a["job"]), "task": f"{job(a['job'])}.{a['task'].rsplit('.', 1)[1]}",
                                 "start_ms": to_ms(a["start_us"]), "end_ms": to_ms(a["end_us"])}
                                for a in r["assignments"]]}

    async def stop(self) -> None:
        if self.svc is not None:
            await self.svc.stop()
