"""Prometheus metrics and the rolling round statistics behind /v1/stats.

Each app gets its own CollectorRegistry, so several servers (tests) can live in one process.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("met", "missed", "rejected_invalid", "rejected_infeasible", "rejected_overload",
            "rejected_draining", "rejected_auth", "cancelled", "failed")
_MS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, gpus: int):
        self.gpus = gpus
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tetriopt_requests", "API requests (jobs) by outcome", ["outcome"], registry=r)
        self.images = Counter("tetriopt_images", "Finished images by deadline outcome", ["outcome"], registry=r)
        self.slo = Gauge("tetriopt_slo_attainment", "Finished images that met their deadline, fraction", registry=r)
        self.queue = Gauge("tetriopt_queue_length", "Images accepted and not finished", registry=r)
        self.solve = Histogram("tetriopt_round_solve_seconds", "Policy time per round", buckets=_MS_BUCKETS,
                               registry=r)
        self.overhead = Histogram("tetriopt_round_overhead_seconds",
                                  "Scheduling overhead per round: snapshot, solve, validation, dispatch",
                                  buckets=_MS_BUCKETS, registry=r)
        self.late = Histogram("tetriopt_round_late_seconds", "How late a round's plan was ready past its start",
                              buckets=_MS_BUCKETS, registry=r)
        self.rounds = Counter("tetriopt_rounds", "Rounds planned (with pending work)", registry=r)
        self.fallbacks = Counter("tetriopt_fallback_rounds", "Rounds answered by a fallback plan", registry=r)
        self.failures = Counter("tetriopt_executor_failures", "Rounds an executor failed", registry=r)
        self.requeued = Counter("tetriopt_requeued_steps", "Steps re-queued after executor failures", registry=r)
        self.busy = Counter("tetriopt_gpu_busy_seconds", "GPU-seconds of finished assignments", registry=r)
        self.busy_frac = Gauge("tetriopt_gpu_busy_fraction", "Busy GPU-time over GPU-time since start",
                               registry=r)
        self.latency = Histogram("tetriopt_image_latency_seconds", "Arrival to image ready",
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160), registry=r)
        for o in OUTCOMES:
            self.requests.labels(o)
        for o in ("met", "missed"):
            self.images.labels(o)
        self._met = 0
        self._finished = 0
        self._busy_us = 0
        self._recent: collections.deque[tuple[float, float, str]] = collections.deque(maxlen=20000)

    def image_done(self, met: bool, latency_s: float) -> None:
        self._finished += 1
        self._met += met
        self.images.labels("met" if met else "missed").inc()
        self.slo.set(self._met / self._finished)
        self.latency.observe(latency_s)

    def gpu_work(self, gpu_us: int, now_us: int) -> None:
        self._busy_us += gpu_us
        self.busy.inc(gpu_us / 1e6)
        if now_us > 0:
            self.busy_frac.set(self._busy_us / (self.gpus * now_us))

    def round_done(self, solve_ms: float, overhead_ms: float, late_ms: float, status: str) -> None:
        self.rounds.inc()
        self.solve.observe(solve_ms / 1e3)
        self.overhead.observe(overhead_ms / 1e3)
        self.late.observe(max(late_ms, 0.0) / 1e3)
        if status == "FALLBACK":
            self.fallbacks.inc()
        self._recent.append((solve_ms, overhead_ms, status))

    def stats(self) -> dict[str, Any]:
        solve = [s for s, _, _ in self._recent]
        over = [o for _, o, _ in self._recent]

        def pct(xs: list[float], q: float) -> float | None:
            return round(float(np.percentile(xs, q)), 3) if xs else None

        return {
            "images_finished": self._finished, "images_met": self._met,
            "slo_attainment": round(self._met / self._finished, 6) if self._finished else None,
            "requests": {o: int(self.requests.labels(o)._value.get()) for o in OUTCOMES},
            "rounds": int(self.rounds._value.get()),
            "fallback_rounds": int(self.fallbacks._value.get()),
            "executor_failures": int(self.failures._value.get()),
            "requeued_steps": int(self.requeued._value.get()),
            "solve_ms_p50": pct(solve, 50), "solve_ms_p99": pct(solve, 99),
            "overhead_ms_p50": pct(over, 50), "overhead_ms_p99": pct(over, 99),
            "overhead_ms_max": round(max(over), 3) if over else None,
            "gpu_busy_fraction": round(float(self.busy_frac._value.get()), 6),
            "queue_length": int(self.queue._value.get()),
        }
