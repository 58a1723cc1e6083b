"""`cpu` and `cuda` executors: a bridge to the model runtime in the repository's runtime/ folder.

The bridge expects runtime/executor.py (issue 4; importable as `tetriopt_runtime.executor`) to provide

    class RoundExecutor:
        def __init__(self, device: str, world: int, model: str): ...   # spawns the workers
        def run_round(self, assignments, work, on_done) -> None: ...   # blocking, one round
        def close(self) -> None: ...

runtime/driver.py's `Runtime.generate(requests, rounds)` runs a whole multi-round plan in one
call; a server needs one round at a time with each request's latent kept on its GPU set
between calls, which is what RoundExecutor adds. Here `assignments` are tetriopt Assignments, `work` maps request id to a dict
(prompt, width, height, total_steps, done_steps, seed) and `on_done(assignment, png_bytes|None)`
is called as each assignment ends. Until that exists, `--executor cpu/cuda` stops at start-up
with a message naming what is missing, rather than serving placeholder images as if they were real.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable, Mapping

from ...errors import InputError
from ...plan import RoundPlan
from ...profile import CostProfile
from ..clock import Clock
from .base import Completion, ExecutorFailure, WorkItem

RUNTIME_DIR = Path(__file__).resolve().parents[4] / "runtime"


def _load_runtime(device: str) -> Any:
    if device == "cuda":
        try:
            import torch
        except ModuleNotFoundError:
            raise InputError("executor", device, "needs PyTorch with CUDA (pip install torch); "
                             "use --executor sim on a machine without GPUs") from None
        if not torch.cuda.is_available():
            raise InputError("executor", device, "no CUDA device is visible; use --executor sim or cpu")
    if importlib.util.find_spec("tetriopt_runtime") is None or not (RUNTIME_DIR / "executor.py").is_file():
        raise InputError("executor", device,
                         f"needs the model runtime's round-by-round executor: {RUNTIME_DIR}/executor.py providing "
                         "RoundExecutor(device, world, model) with run_round(assignments, work, on_done), "
                         "keeping latents between rounds (issue 4), is not there yet (runtime/driver.py's "
                         "Runtime.generate runs only whole plans); use --executor sim")
    try:
        mod = importlib.import_module("tetriopt_runtime.executor")
    except ModuleNotFoundError as e:
        raise InputError("executor", device, f"the runtime needs a package that is not installed: {e.name}") from None
    if not hasattr(mod, "RoundExecutor"):
        raise InputError("executor", device, "runtime/executor.py has no RoundExecutor class")
    return mod.RoundExecutor


class RuntimeExecutor:
    """Rounds run one at a time, in order (the runtime checks each request's step count), and a
    failure restarts the workers empty: requests that had started lose their latents."""

    resumable = False
    concurrent_rounds = False

    def __init__(self, device: str, gpus: int, profile: CostProfile, model: str):
        cls = _load_runtime(device)
        self.name = device
        self.profile = profile
        try:
            self._impl = cls(device=device, world=gpus, model=model)
        except Exception as e:  # noqa: BLE001 - missing weights or packages: say so at start-up
            raise InputError("executor", device, f"the runtime could not load model {model!r}: "
                             f"{type(e).__name__}: {str(e).strip()[:300]}") from None
        self.clock: Clock | None = None

    def start(self, clock: Clock) -> None:
        self.clock = clock

    def execute(self, plan: RoundPlan, work: Mapping[str, WorkItem], round_index: int,
                on_complete: Callable[[Completion], None]) -> None:
        assert self.clock is not None
        clock = self.clock
        items = {k: {"prompt": w.prompt, "width": w.width, "height": w.height, "total_steps": w.total_steps,
                     "done_steps": w.done_steps, "seed": w.seed} for k, w in work.items()}

        def done(a, png: bytes | None) -> None:
            on_complete(Completion(assignment=a, finish_us=clock.now_us(), image=png))

        try:
            self._impl.run_round(list(plan.assignments), items, done)
        except ExecutorFailure:
            raise
        except Exception as e:  # a worker died or a collective timed out: the loop re-queues
            raise ExecutorFailure(f"{self.name} runtime failed in round {round_index}: {e!r}") from e

    def close(self) -> None:
        self._impl.close()
