"""Executors run one round's assignments: `sim` (virtual GPUs), `cpu` and `cuda` (runtime/)."""

from __future__ import annotations

from .base import Completion, Executor, ExecutorFailure, WorkItem, make_executor

__all__ = ["Completion", "Executor", "ExecutorFailure", "WorkItem", "make_executor"]
