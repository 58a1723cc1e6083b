"""Jobs (one API request, n images) and image tasks (what the scheduler schedules).

All of it is touched only on the event loop's thread, so it needs no locks: executor threads
hand their reports to the loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..engine import Tracked, WorkItem

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(eq=False)
class ImageTask(Tracked):
    """One image: a request of the round engine (which alone changes its progress fields)."""

    job: "Job | None" = None
    index: int = 0                # which of the job's n images (its seed is the job's + index)
    image: bytes | None = None

    def work_item(self) -> WorkItem:
        assert self.job is not None
        return replace(super().work_item(), prompt=self.job.prompt, seed=self.job.seed + self.index,
                       guidance_scale=self.job.guidance_scale, negative_prompt=self.job.negative_prompt)


@dataclass
class Job:
    id: str
    prompt: str
    width: int
    height: int
    steps: int
    n: int
    seed: int
    response_format: str
    arrival_us: int
    deadline_us: int
    created: int                  # Unix seconds (OpenAI's `created`)
    best_effort: bool = False
    sync: bool = True
    quality: str = "auto"
    output_format: str = "png"
    output_compression: int | None = None
    guidance_scale: float | None = None   # carried to executors that use it (the sim ignores it)
    negative_prompt: str | None = None
    idempotency_key: str | None = None
    tasks: list[ImageTask] = field(default_factory=list)
    status: str = "queued"        # queued | running | succeeded | failed | cancelled
    error: str | None = None
    finished_at: float | None = None   # Unix time, for expiry (survives a restart with the durable store)
    delivered: bool = False            # result handed to the client (drain waits for it)
    waiters: int = 0                   # sync requests waiting on it (an Idempotency-Key retry adds one)
    abandoned: bool = False            # cancelled because its sync client went away
    done_event: asyncio.Event = field(default_factory=asyncio.Event)
    listeners: list[asyncio.Queue] = field(default_factory=list)

    @property
    def steps_total(self) -> int:
        return self.steps * self.n

    @property
    def steps_done(self) -> int:
        return sum(t.done for t in self.tasks)

    @property
    def finish_us(self) -> int | None:
        if not self.tasks or any(t.finish_us is None for t in self.tasks):
            return None
        return max(t.finish_us for t in self.tasks)

    @property
    def met(self) -> bool | None:
        f = self.finish_us
        return None if f is None else f <= self.deadline_us

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def progress(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "steps_done": self.steps_done,
                "steps_total": self.steps_total,
                "images_done": sum(t.finished for t in self.tasks), "n": self.n}

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for q in self.listeners:
            q.put_nowait((event, data))


def new_job_id() -> str:
    return "img-" + uuid.uuid4().hex[:20]


class JobStore:
    """Live and recently finished jobs; finished ones expire after ttl_s.

    Every change of a job's life goes through here (add, progress, finish, delivered, expire),
    so the durable copy (`durable.SqliteJobs`, async jobs only) and the finish hooks (metrics,
    logs) see each change exactly once.
    """

    def __init__(self, ttl_s: float, durable: Any = None):
        self.ttl_s = ttl_s
        self.durable = durable
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, ImageTask] = {}  # unfinished image tasks only
        self.by_key: dict[str, str] = {}       # Idempotency-Key (scoped, with a body digest) -> job id
        self.on_finish: list[Callable[[Job], None]] = []

    def add(self, job: Job, persist: bool = True) -> None:
        self.jobs[job.id] = job
        for t in job.tasks:
            if not t.finished:
                self.tasks[t.id] = t
        if job.idempotency_key:
            self.by_key[job.idempotency_key] = job.id
        if persist and self.durable is not None and not job.sync:
            self.durable.add(job)

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def by_idempotency_key(self, key: str) -> Job | None:
        """The job a request with this key created, unless its client abandoned it (then a retry starts anew)."""
        job = self.jobs.get(self.by_key.get(key, ""))
        return None if job is None or job.abandoned else job

    def pending_images(self) -> int:
        return len(self.tasks)  # finished tasks are dropped from `tasks` as they finish

    def unfinished_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.terminal]

    def undelivered_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.terminal and not j.delivered]

    def drop_task(self, t: ImageTask) -> None:
        self.tasks.pop(t.id, None)

    def progressed(self, job: Job) -> None:
        """Steps finished: tell listeners; the durable copy keeps the marker."""
        job.publish("progress", job.progress())
        if self.durable is not None and not job.sync:
            self.durable.progress(job)

    def finish(self, job: Job, status: str, error: str | None = None) -> None:
        """The one place a job ends: status, waiters woken, listeners told, store and hooks updated."""
        if job.terminal:
            return
        for t in job.tasks:
            self.drop_task(t)
        job.status = status
        job.error = error
        job.finished_at = time.time()
        if self.durable is not None and not job.sync:
            self.durable.finish(job)
        job.done_event.set()
        job.publish("done", job.progress())
        for hook in self.on_finish:
            hook(job)

    def delivered(self, job: Job) -> None:
        if job.terminal and not job.delivered:
            job.delivered = True
            if self.durable is not None and not job.sync:
                self.durable.delivered(job)

    def expire(self) -> int:
        now = time.time()
        old = [j for j in self.jobs.values() if j.finished_at is not None and now - j.finished_at > self.ttl_s]
        for j in old:
            del self.jobs[j.id]
            if j.idempotency_key:
                self.by_key.pop(j.idempotency_key, None)
        if old and self.durable is not None:
            self.durable.delete([j.id for j in old])
        return len(old)
