"""The outcome of scheduling a whole workload, its summary figures and its JSON form."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .instance import Instance
from .plan import Assignment, PlanStatus, rollout_choice
from .units import gpu_hours, us_to_ms


@dataclass(frozen=True)
class RequestOutcome:
    id: str
    finish_us: int
    met: bool


@dataclass(frozen=True)
class RoundRecord:
    round: int
    start_us: int
    pending: int
    kept: int | None
    backend: str
    status: str
    solve_ms: float
    objective: float | None
    bound: float | None
    note: str = ""


@dataclass(frozen=True)
class SolveResult:
    policy: str
    instance: Instance
    requests: tuple[RequestOutcome, ...]
    assignments: tuple[tuple[int, Assignment], ...]  # (round, assignment)
    rounds: tuple[RoundRecord, ...]

    @cached_property
    def summary(self) -> dict[str, Any]:
        n = len(self.requests)
        met = sum(r.met for r in self.requests)
        arrival = {r.id: r.arrival_us for r in self.instance.requests}
        lat = [us_to_ms(r.finish_us - arrival[r.id]) for r in self.requests]
        solve = [r.solve_ms for r in self.rounds]
        gpu_us = sum((a.end_us - a.start_us) * a.degree for _, a in self.assignments)
        batched = sum(bool(a.batch) for _, a in self.assignments)
        immediate = sum(a.immediate for _, a in self.assignments)

        fallback = [r for r in self.rounds if r.status == PlanStatus.FALLBACK]
        rollout = sum(rollout_choice(r.status, r.note) for r in fallback)

        def pct(xs, q):
            return round(float(np.percentile(xs, q)), 3) if xs else 0.0

        return {
            "requests": n,
            "met": met,
            "slo_attainment": round(met / n, 6) if n else 1.0,
            "gpu_hours": round(gpu_hours(gpu_us), 6),
            "latency_ms_p50": pct(lat, 50),
            "latency_ms_p99": pct(lat, 99),
            "rounds": len(self.rounds),
            "solver_ms_p50": pct(solve, 50),
            "solver_ms_p99": pct(solve, 99),
            "solver_ms_max": round(max(solve), 3) if solve else 0.0,
            "fallback_rounds": len(fallback),
            # of those, the rollout's choice of the heuristic's plan over CP-SAT's (CP-SAT did decide)
            **({"rollout_rounds": rollout} if rollout else {}),
            **({"batched_assignments": batched} if batched else {}),
            **({"immediate_starts": immediate} if immediate else {}),
        }

    def to_json(self, timings: bool = True) -> dict[str, Any]:
        """The machine-readable result; timings=False drops wall-clock fields (byte-stable output)."""
        summary = dict(self.summary)
        if not timings:
            for k in ("solver_ms_p50", "solver_ms_p99", "solver_ms_max"):
                summary[k] = None
        return {
            "policy": self.policy,
            "instance": self.instance.name,
            "model": self.instance.profile.name,
            "summary": summary,
            "requests": [{"id": r.id, "finish_ms": us_to_ms(r.finish_us), "met": r.met} for r in self.requests],
            "assignments": [{"round": rd, "request": a.request, "gpus": list(a.gpus), "steps": a.steps,
                             "start_ms": us_to_ms(a.start_us), "end_ms": us_to_ms(a.end_us),
                             **({"batch": list(a.batch)} if a.batch else {}),
                             **({"immediate": True} if a.immediate else {})}
                            for rd, a in self.assignments],
            "rounds": [{"round": r.round, "start_ms": us_to_ms(r.start_us), "pending": r.pending, "kept": r.kept,
                        "backend": r.backend, "status": r.status,
                        "solve_ms": round(r.solve_ms, 3) if timings else None,
                        "objective": r.objective, "bound": r.bound, **({"note": r.note} if r.note else {})}
                       for r in self.rounds],
        }
