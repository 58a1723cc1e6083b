"""Async jobs in an embedded SQLite file, so that they survive kill -9 and a restart.

Written on the event loop's thread at each change of a job's life (accepted, progress,
finished with its images, delivered, expired); WAL mode with synchronous=NORMAL keeps each
commit to a write of the log, durable across a process crash (not across power loss).
At start-up, finished jobs are served again until their TTL; unfinished ones are re-queued
from step 0 (a latent on a GPU does not survive the process), with their original deadline.
Sync requests are not stored: their client's connection dies with the process anyway.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import fields
from pathlib import Path

from .clock import Clock
from .jobs import ImageTask, Job

# Job fields stored as JSON (times are stored as Unix seconds, since clocks restart at zero)
_SPEC = ("id", "prompt", "width", "height", "steps", "n", "seed", "response_format", "created", "best_effort",
         "quality", "output_format", "output_compression", "guidance_scale", "negative_prompt", "idempotency_key")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, spec TEXT NOT NULL, arrival REAL NOT NULL,
    deadline REAL NOT NULL, status TEXT NOT NULL, error TEXT, finished_at REAL, delivered INTEGER NOT NULL DEFAULT 0,
    steps_done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS images (job_id TEXT NOT NULL, idx INTEGER NOT NULL, finish INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (job_id, idx));
"""
assert set(_SPEC) <= {f.name for f in fields(Job)}


class SqliteJobs:
    def __init__(self, path: str | Path, clock: Clock):
        self.path = str(path)
        self.clock = clock
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def _epoch(self, us: int) -> float:
        return self.clock.to_epoch_s(us)

    def add(self, job: Job) -> None:
        spec = json.dumps({k: getattr(job, k) for k in _SPEC})
        self.db.execute("INSERT OR REPLACE INTO jobs (id, spec, arrival, deadline, status) VALUES (?, ?, ?, ?, ?)",
                        (job.id, spec, self._epoch(job.arrival_us), self._epoch(job.deadline_us), job.status))

    def progress(self, job: Job) -> None:
        self.db.execute("UPDATE jobs SET steps_done = ?, status = ? WHERE id = ?", (job.steps_done, job.status, job.id))

    def finish(self, job: Job) -> None:
        # an image's finish is kept as microseconds after its job's arrival: exact, so a restarted
        # server reports the same latency (two epoch floats round apart by a microsecond)
        rows = [(job.id, i, t.finish_us - job.arrival_us, t.image) for i, t in enumerate(job.tasks)
                if t.image is not None and t.finish_us is not None]
        with self.db:  # one transaction: a job is finished with all its images or not at all
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)", rows)
            self.db.execute("UPDATE jobs SET status = ?, error = ?, finished_at = ?, steps_done = ? WHERE id = ?",
                            (job.status, job.error, job.finished_at, job.steps_done, job.id))

    def delivered(self, job: Job) -> None:
        self.db.execute("UPDATE jobs SET delivered = 1 WHERE id = ?", (job.id,))

    def delete(self, ids: list[str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM images WHERE job_id = ?", [(i,) for i in ids])
            self.db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])

    def load(self, ttl_s: float) -> tuple[list[Job], list[Job]]:
        """(finished jobs still within their TTL, unfinished jobs re-queued from step 0); drops expired ones."""
        now = time.time()
        expired = [r[0] for r in self.db.execute("SELECT id FROM jobs WHERE finished_at IS NOT NULL "
                                                 "AND finished_at < ?", (now - ttl_s,))]
        if expired:
            self.delete(expired)
        images: dict[str, dict[int, tuple[int, bytes]]] = {}
        for jid, idx, fin, data in self.db.execute("SELECT job_id, idx, finish, data FROM images"):
            images.setdefault(jid, {})[idx] = (fin, data)
        finished, requeued = [], []
        for jid, spec, arrival, deadline, status, error, finished_at, delivered in self.db.execute(
                "SELECT id, spec, arrival, deadline, status, error, finished_at, delivered FROM jobs"):
            job = Job(**json.loads(spec), arrival_us=self._us(arrival), deadline_us=self._us(deadline), sync=False)
            job.tasks = [ImageTask(id=f"{jid}.{i}", job=job, index=i, width=job.width, height=job.height,
                                   steps=job.steps, arrival_us=job.arrival_us, deadline_us=job.deadline_us)
                         for i in range(job.n)]
            if finished_at is not None:
                for i, t in enumerate(job.tasks):
                    after_us, data = images.get(jid, {}).get(i, (None, None))
                    t.image = data
                    t.finish_us = self._us(finished_at) if after_us is None else job.arrival_us + int(after_us)
                    t.done = t.steps if data is not None else 0
                job.status, job.error, job.finished_at, job.delivered = status, error, finished_at, bool(delivered)
                job.done_event.set()
                finished.append(job)
            else:
                requeued.append(job)
                self.db.execute("UPDATE jobs SET status = 'queued', steps_done = 0 WHERE id = ?", (jid,))
        return finished, requeued

    def _us(self, epoch_s: float) -> int:
        return self.clock.from_epoch_ms(epoch_s * 1e3)

    def close(self) -> None:
        self.db.close()
