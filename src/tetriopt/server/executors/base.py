"""The executor interface between the round engine and whatever runs denoising steps.

The types live with the engine (`tetriopt.engine`), which the simulator shares; they are
re-exported here for the server's executors. The engine hands an executor one checked
RoundPlan plus a `WorkItem` per request, on a worker thread. The executor runs the plan in its
planned start order, reports every assignment as it ends (`on_complete`, from any thread) and
raises `ExecutorFailure` (or anything) when a round breaks: the engine re-queues the steps of
every assignment it did not report.
"""

from __future__ import annotations

from ...engine import ClockLike, Completion, Executor, ExecutorFailure, WorkItem

__all__ = ["ClockLike", "Completion", "Executor", "ExecutorFailure", "WorkItem"]
