"""tetriopt runtime: executes round plans (request, GPU set, steps) with step-level sequence
parallelism on diffusers DiT transformers. Import as `tetriopt_runtime` (needs the `runtime`
extra: torch, diffusers)."""

from .driver import GenRequest, RunResult, Runtime
from .models import ModelSpec
from .plan import PlanError, Task, aligned_blocks, compile_plan

__all__ = ["GenRequest", "ModelSpec", "PlanError", "RunResult", "Runtime", "Task", "aligned_blocks",
           "compile_plan"]
