"""Prometheus metrics and the windowed figures behind /v1/stats and the dashboard.

Counted in one place: the app's error handler calls `rejected`, the job store's finish hook
calls `job_done`, the round loop calls `round_done`, `image_done`, `gpu_work` and
`executor_failed`; nothing else touches a counter. Attainment, goodput and GPU busy fraction
are reported over the last 1 and 5 minutes (and since start), computed from time-stamped
events when read, so they describe now rather than the whole life of the process. Each app
gets its own CollectorRegistry, so several servers (tests) can live in one process.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..plan import rollout_choice

OUTCOMES = ("met", "missed", "rejected_invalid", "rejected_infeasible", "rejected_overload",
            "rejected_draining", "rejected_auth", "cancelled", "failed")
WINDOWS = {"1m": 60e6, "5m": 300e6}  # us
_MS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)
_SLACK_BUCKETS = (-60, -20, -10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10, 20, 60)


def rejection_outcome(status: int, code: str | None) -> str | None:
    """The outcome label of a refused request (None: not a refusal of new work, e.g. an unknown job id)."""
    if status == 401:
        return "rejected_auth"
    if status == 429:
        return "rejected_overload"
    if status == 503 and code == "unavailable":
        return "rejected_draining"
    if code == "deadline_infeasible":
        return "rejected_infeasible"
    if status in (400, 413, 415) or code == "model_not_found":
        return "rejected_invalid"
    return None


class Metrics:
    def __init__(self, gpus: int, size_class: Callable[[int, int], str] = lambda w, h: f"{w}x{h}"):
        self.gpus = gpus
        self.size_class = size_class
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tetriopt_requests", "API requests (jobs) by outcome", ["outcome"], registry=r)
        self.images = Counter("tetriopt_images", "Finished images by deadline outcome", ["outcome"], registry=r)
        self.slo = Gauge("tetriopt_slo_attainment", "Finished images that met their deadline, fraction",
                         ["window"], registry=r)
        self.goodput = Gauge("tetriopt_goodput_images_per_second", "Images finished by their deadline per second",
                             ["window"], registry=r)
        self.busy_frac = Gauge("tetriopt_gpu_busy_fraction", "Busy GPU-time over GPU-time", ["window"], registry=r)
        self.queue = Gauge("tetriopt_queue_length", "Images accepted and not finished", registry=r)
        self.backlog = Gauge("tetriopt_backlog_gpu_seconds", "Pending work at the cheapest degree, GPU-s",
                             registry=r)
        self.solve = Histogram("tetriopt_round_solve_seconds", "Policy time per round", buckets=_MS_BUCKETS,
                               registry=r)
        self.overhead = Histogram("tetriopt_round_overhead_seconds",
                                  "Scheduling overhead per round: snapshot, solve, validation, dispatch",
                                  buckets=_MS_BUCKETS, registry=r)
        self.late = Histogram("tetriopt_round_late_seconds", "How late a round's plan was ready past its start",
                              buckets=_MS_BUCKETS, registry=r)
        self.rounds = Counter("tetriopt_rounds", "Rounds planned (with pending work)", registry=r)
        self.fallbacks = Counter("tetriopt_fallback_rounds", "Rounds answered by a fallback plan", registry=r)
        self.rollouts = Counter("tetriopt_rollout_rounds", "Fallback rounds that are the rollout's choice of "
                                "TetriServe's plan over the solver's (the solver did answer)", registry=r)
        self.failures = Counter("tetriopt_executor_failures", "Rounds an executor failed", registry=r)
        self.requeued = Counter("tetriopt_requeued_steps", "Steps re-queued after executor failures", registry=r)
        self.busy = Counter("tetriopt_gpu_busy_seconds", "GPU-seconds of finished assignments", registry=r)
        self.latency = Histogram("tetriopt_image_latency_seconds", "Arrival to image ready, by size class",
                                 ["size"], buckets=_LATENCY_BUCKETS, registry=r)
        self.slack = Histogram("tetriopt_image_slack_seconds", "Deadline minus finish (negative: late), by size class",
                               ["size"], buckets=_SLACK_BUCKETS, registry=r)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        for o in OUTCOMES:
            self.requests.labels(o)
        for o in ("met", "missed"):
            self.images.labels(o)
        self.n_rounds = self.n_fallbacks = self.n_rollouts = self.n_failures = self.n_requeued = 0
        self._met = 0
        self._finished = 0
        self._busy_us = 0
        self._images: collections.deque[tuple[int, bool]] = collections.deque()   # (finish us, met), 5 min
        self._work: collections.deque[tuple[int, int]] = collections.deque()      # (end us, GPU-us), 5 min
        self._recent: collections.deque[tuple[float, float, str]] = collections.deque(maxlen=20000)
        self.series: collections.deque[dict[str, Any]] = collections.deque(maxlen=600)  # dashboard, 1 per refresh

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.requests.labels(outcome).inc()

    def rejected(self, status: int, code: str | None) -> None:
        outcome = rejection_outcome(status, code)
        if outcome is not None:
            self._count(outcome)

    def job_done(self, status: str, met: bool | None) -> None:
        if status == "succeeded":
            self._count("met" if met else "missed")
        else:
            self._count(status if status in ("cancelled", "failed") else "failed")

    def image_done(self, met: bool, width: int, height: int, latency_us: int, slack_us: int, now_us: int) -> None:
        self._finished += 1
        self._met += met
        self.images.labels("met" if met else "missed").inc()
        size = self.size_class(width, height)
        self.latency.labels(size).observe(latency_us / 1e6)
        self.slack.labels(size).observe(slack_us / 1e6)
        self._images.append((now_us, met))

    def gpu_work(self, gpu_us: int, now_us: int) -> None:
        self._busy_us += gpu_us
        self.busy.inc(gpu_us / 1e6)
        self._work.append((now_us, gpu_us))

    def round_done(self, solve_ms: float, overhead_ms: float, late_ms: float, status: str, note: str = "") -> None:
        """`note`: the plan's (a FALLBACK round that is the rollout's choice counts as a rollout too)."""
        self.n_rounds += 1
        self.rounds.inc()
        self.solve.observe(solve_ms / 1e3)
        self.overhead.observe(overhead_ms / 1e3)
        self.late.observe(max(late_ms, 0.0) / 1e3)
        if status == "FALLBACK":
            self.n_fallbacks += 1
            self.fallbacks.inc()
            if rollout_choice(status, note):
                self.n_rollouts += 1
                self.rollouts.inc()
        self._recent.append((solve_ms, overhead_ms, status))

    def executor_failed(self, requeued_steps: int) -> None:
        self.n_failures += 1
        self.n_requeued += requeued_steps
        self.failures.inc()
        self.requeued.inc(requeued_steps)

    def windows(self, now_us: int) -> dict[str, dict[str, float | None]]:
        """Attainment, goodput and busy fraction over the last 1 and 5 minutes and since start."""
        horizon = now_us - max(WINDOWS.values())
        while self._images and self._images[0][0] < horizon:
            self._images.popleft()
        while self._work and self._work[0][0] < horizon:
            self._work.popleft()
        out: dict[str, dict[str, float | None]] = {}
        for name, span in WINDOWS.items():
            t0 = now_us - span
            imgs = [m for t, m in self._images if t >= t0]
            busy = sum(w for t, w in self._work if t >= t0)
            seconds = min(span, max(now_us, 1)) / 1e6
            out[name] = {"slo_attainment": sum(imgs) / len(imgs) if imgs else None,
                         "goodput_per_s": sum(imgs) / seconds, "images": float(len(imgs)),
                         "gpu_busy_fraction": min(1.0, busy / (self.gpus * seconds * 1e6))}
        out["all"] = {"slo_attainment": self._met / self._finished if self._finished else None,
                      "goodput_per_s": self._met / max(now_us / 1e6, 1e-9), "images": float(self._finished),
                      "gpu_busy_fraction": min(1.0, self._busy_us / (self.gpus * max(now_us, 1)))}
        return out

    def refresh(self, now_us: int, queue: int = 0, backlog_gpu_s: float = 0.0) -> dict[str, dict[str, float | None]]:
        """Set the windowed gauges (before a scrape) and note a point of the dashboard's series."""
        w = self.windows(now_us)
        for name, v in w.items():
            self.slo.labels(name).set(math.nan if v["slo_attainment"] is None else v["slo_attainment"])
            self.goodput.labels(name).set(v["goodput_per_s"])
            self.busy_frac.labels(name).set(v["gpu_busy_fraction"])
        self.queue.set(queue)
        self.backlog.set(backlog_gpu_s)
        if not self.series or now_us - self.series[-1]["t_us"] >= 1e6:
            self.series.append({"t_us": now_us, "slo_1m": w["1m"]["slo_attainment"], "queue": queue,
                                "backlog_gpu_s": round(backlog_gpu_s, 3)})
        return w

    def stats(self, now_us: int, queue: int = 0, backlog_gpu_s: float = 0.0) -> dict[str, Any]:
        solve = [s for s, _, _ in self._recent]
        over = [o for _, o, _ in self._recent]

        def pct(xs: list[float], q: float) -> float | None:
            return round(float(np.percentile(xs, q)), 3) if xs else None

        w = self.refresh(now_us, queue, backlog_gpu_s)
        return {
            "images_finished": self._finished, "images_met": self._met,
            "slo_attainment": round(self._met / self._finished, 6) if self._finished else None,
            "windows": {k: {m: (None if x is None else round(x, 6)) for m, x in v.items()} for k, v in w.items()},
            "requests": dict(self.counts),
            "rounds": self.n_rounds, "fallback_rounds": self.n_fallbacks,
            "rollout_rounds": self.n_rollouts,
            "executor_failures": self.n_failures, "requeued_steps": self.n_requeued,
            "solve_ms_p50": pct(solve, 50), "solve_ms_p99": pct(solve, 99),
            "overhead_ms_p50": pct(over, 50), "overhead_ms_p99": pct(over, 99),
            "overhead_ms_max": round(max(over), 3) if over else None,
            "gpu_busy_fraction": round(w["all"]["gpu_busy_fraction"] or 0.0, 6),
            "queue_length": queue,
        }
