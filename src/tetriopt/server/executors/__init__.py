"""Executors run one round's assignments: `sim` (virtual GPUs), `cpu` and `cuda` (runtime/).

`make_executor` lives here, above the executors it builds, so that no executor module imports
the package that imports it (base.py holds only the interface).
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import InputError
from ...profile import CostProfile
from .base import Completion, Executor, ExecutorFailure, RequestsFailed, WorkItem

EXECUTORS = ("sim", "cpu", "cuda")
SP_BACKENDS = ("auto", "own", "yunchang", "xfuser")  # the runtime's names (`sp_attention.BACKENDS`, less an alias)


def runtime_options(name: str, profile: CostProfile, model_path: str | None = None, sp_backend: str = "auto",
                    compile: bool = False, aux_device: str | None = None) -> dict[str, Any]:
    """`tetriopt serve`'s runtime flags, checked here (without torch) and named as
    `tetriopt_runtime.executor.RoundExecutor` takes them. The sim executor has no runtime: any
    flag but the model path (which may come from the environment) is refused with it."""
    if sp_backend not in SP_BACKENDS:
        raise InputError("sp_backend", sp_backend, f"choose from {', '.join(SP_BACKENDS)}")
    if aux_device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", aux_device):
        raise InputError("aux_device", aux_device, "must be cpu, cuda or cuda:N")
    if name == "sim":
        for field, value, default in (("sp_backend", sp_backend, "auto"), ("compile", compile, False),
                                      ("aux_device", aux_device, None)):
            if value != default:
                raise InputError(field, value, "applies to --executor cpu or cuda only, not sim")
        return {}
    if name == "cpu" and aux_device is not None and aux_device != "cpu":
        raise InputError("aux_device", aux_device, "the cpu executor has no CUDA device; use cpu or leave it out")
    # --compile warms every profiled size at start-up, so no request waits for a compile
    warm = tuple((p.width, p.height) for p in profile.points) if compile else ()
    return dict(path=model_path or None, sp_backend=sp_backend, compile=compile, aux_device=aux_device,
                warm_sizes=warm)


def make_executor(name: str, gpus: int, profile: CostProfile, fail_rounds: frozenset[int] = frozenset(),
                  model: str | None = None, **options: Any) -> Executor:
    """The named executor; `options` (from `runtime_options`) go to the runtime executor."""
    if name == "sim":
        from .sim import SimExecutor

        return SimExecutor(gpus=gpus, profile=profile, fail_rounds=fail_rounds)
    if name in ("cpu", "cuda"):
        from .runtime import RuntimeExecutor

        return RuntimeExecutor(device=name, gpus=gpus, profile=profile, model=model or profile.model, **options)
    raise InputError("executor", name, f"unknown executor; choose from {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "SP_BACKENDS", "Completion", "Executor", "ExecutorFailure", "RequestsFailed", "WorkItem", "make_executor", "runtime_options"]
