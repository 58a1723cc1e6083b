"""The executor interface between the round engine and whatever runs denoising steps.

The types live with the engine (`tetriopt.engine`), which the simulator shares; they are
re-exported here for the server's executors. The engine hands an executor one checked
RoundPlan plus a `WorkItem` per request, on a worker thread. The executor runs the plan in its
planned start order, reports every assignment as it ends (`on_complete`, from any thread) and
raises `ExecutorFailure` (or anything) when a round breaks: the engine re-queues the steps of
every assignment it did not report, except those of requests named by `RequestsFailed`, which
fail alone.
"""

from __future__ import annotations

from typing import Mapping

from ...engine import ClockLike, Completion, Executor, ExecutorFailure, WorkItem


class RequestsFailed(ExecutorFailure):
    """Requests an executor can never run (e.g. a size its model cannot split over the planned
    degree): the server fails their jobs with `reasons[request]` instead of re-queueing them,
    which would plan the same refusal forever. The rest of the round ran and was reported;
    other unreported assignments are re-queued as after any failure."""

    def __init__(self, reasons: Mapping[str, str]):
        self.reasons = dict(reasons)
        super().__init__("; ".join(f"request {rid!r}: {why}" for rid, why in self.reasons.items()))


__all__ = ["ClockLike", "Completion", "Executor", "ExecutorFailure", "RequestsFailed", "WorkItem"]
