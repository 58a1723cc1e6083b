"""Jobs (one API request, n images) and image tasks (what the scheduler schedules).

All of it is touched only on the event loop's thread, so it needs no locks: executor threads
hand their reports to the loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

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
        return replace(super().work_item(), prompt=self.job.prompt, seed=self.job.seed + self.index)


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
    tasks: list[ImageTask] = field(default_factory=list)
    status: str = "queued"        # queued | running | succeeded | failed | cancelled
    error: str | None = None
    finished_at: float | None = None   # monotonic, for expiry
    delivered: bool = False            # result handed to the client (drain waits for it)
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
    """Live and recently finished jobs; finished ones expire after ttl_s."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, ImageTask] = {}  # unfinished image tasks only

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        for t in job.tasks:
            self.tasks[t.id] = t

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def pending_images(self) -> int:
        return len(self.tasks)  # finished tasks are dropped from `tasks` as they finish

    def unfinished_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.terminal]

    def undelivered_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.terminal and not j.delivered]

    def drop_task(self, t: ImageTask) -> None:
        self.tasks.pop(t.id, None)

    def expire(self) -> int:
        now = time.monotonic()
        old = [j for j in self.jobs.values() if j.finished_at is not None and now - j.finished_at > self.ttl_s]
        for j in old:
            del self.jobs[j.id]
        return len(old)
