"""Executors run one round's assignments: `sim` (virtual GPUs), `cpu` and `cuda` (runtime/).

`make_executor` lives here, above the executors it builds, so that no executor module imports
the package that imports it (base.py holds only the interface).
"""

from __future__ import annotations

from ...errors import InputError
from ...profile import CostProfile
from .base import Completion, Executor, ExecutorFailure, WorkItem

EXECUTORS = ("sim", "cpu", "cuda")


def make_executor(name: str, gpus: int, profile: CostProfile, fail_rounds: frozenset[int] = frozenset(),
                  model: str | None = None) -> Executor:
    if name == "sim":
        from .sim import SimExecutor

        return SimExecutor(gpus=gpus, profile=profile, fail_rounds=fail_rounds)
    if name in ("cpu", "cuda"):
        from .runtime import RuntimeExecutor

        return RuntimeExecutor(device=name, gpus=gpus, profile=profile, model=model or profile.model)
    raise InputError("executor", name, f"unknown executor; choose from {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Completion", "Executor", "ExecutorFailure", "WorkItem", "make_executor"]
