"""The recent and planned rounds, kept for the dashboard (GET /v1/schedule, GET /dashboard).

The round loop reports each plan once it is made (before its round starts, so the newest
one is the planned round); this keeps the last few hundred with what a Gantt chart needs.
"""

from __future__ import annotations

import collections
from typing import Any

from ..plan import RoundPlan
from ..state import RoundState

MAX_QUEUE_SHOWN = 300


class ScheduleLog:
    def __init__(self, rounds: int = 240):
        self.rounds: collections.deque[dict[str, Any]] = collections.deque(maxlen=rounds)

    def planned(self, state: RoundState, plan: RoundPlan, late_ms: float, overhead_ms: float) -> None:
        by_id = {r.id: r for r in state.requests}
        rows = []
        for a in plan.assignments:
            r = by_id[a.request]
            due = r.deadline_us - state.decode_us(r)
            rows.append({"task": a.request, "job": a.request.rsplit(".", 1)[0], "gpus": list(a.gpus),
                         "start_us": a.start_us, "end_us": a.end_us, "steps": a.steps,
                         "size": f"{r.width}x{r.height}", "late": a.end_us > due,
                         "last": a.steps == r.remaining_steps})
        self.rounds.append({"round": state.round_index, "start_us": state.now_us, "end_us": state.end_us,
                            "pending": len(state.requests), "status": plan.status, "backend": plan.backend,
                            "solve_ms": round(plan.solve_ms, 3), "overhead_ms": round(overhead_ms, 3),
                            "late_ms": round(late_ms, 3), "note": plan.note, "assignments": rows})

    def snapshot(self, svc: Any) -> dict[str, Any]:
        now = svc.clock.now_us()
        tasks = sorted(svc.store.tasks.values(), key=lambda t: (t.deadline_us, t.id))
        queue = [{"task": t.id, "job": t.job.id, "size": f"{t.width}x{t.height}", "steps": t.steps, "done": t.done,
                  "status": t.job.status, "deadline_in_ms": round((t.deadline_us - now) / 1e3, 1),
                  "late": now > t.deadline_us} for t in tasks[:MAX_QUEUE_SHOWN]]
        return {"now_us": now, "gpus": svc.cfg.gpus, "round_us": svc.timing.round_us, "policy": svc.cfg.policy,
                "rounds": list(self.rounds)[-60:], "queue": queue, "queue_length": len(tasks),
                "series": list(svc.metrics.series), "stats": svc.stats()}
