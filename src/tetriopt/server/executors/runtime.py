"""`cpu` and `cuda` executors: the bridge to the model runtime, the installed `tetriopt_runtime`
package (the repository's runtime/ folder, packaged under that name by pyproject.toml).

`tetriopt_runtime.executor.RoundExecutor` runs one round per call and keeps each request's
latent on its GPU set between calls: `run_round(assignments, work, on_done)` takes tetriopt
Assignments (run in their planned start order; a batched one as stacked steps), `work` maps
request id to a dict (prompt, width, height, total_steps, done_steps, seed) and
`on_done(assignment, png_bytes|None, member_pngs)` is called as each assignment ends. Without torch/diffusers installed, `--executor cpu/cuda` stops
at start-up with one line naming what is missing.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from ...errors import InputError
from ...plan import RoundPlan
from ...profile import CostProfile
from ..clock import Clock
from .base import Completion, ExecutorFailure, RequestsFailed, WorkItem


def _load_runtime(device: str) -> Any:
    """RoundExecutor from the installed runtime package, or one clear line saying what is missing."""
    try:
        mod = importlib.import_module("tetriopt_runtime.executor")
    except ModuleNotFoundError as e:
        raise InputError("executor", device, f"the runtime needs a package that is not installed: {e.name} "
                         "(pip install 'tetriopt[runtime]')") from None
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("executor", device, "no CUDA device is visible; use --executor sim or cpu")
    return mod.RoundExecutor


class RuntimeExecutor:
    """Rounds run one at a time, in their planned start order. The runtime keeps a copy of every
    request's latent after each assignment, so after a failure (a worker died, a collective timed
    out) requests resume from their last reported step: the round fails once, the workers restart."""

    resumable = True
    concurrent_rounds = False

    def __init__(self, device: str, gpus: int, profile: CostProfile, model: str, **options: Any):
        cls = _load_runtime(device)
        self.name = device
        self.profile = profile
        try:
            self._impl = cls(device=device, world=gpus, model=model, **options)
        except Exception as e:  # noqa: BLE001 - missing weights or packages: say so at start-up
            raise InputError("executor", device, f"the runtime could not load model {model!r}: "
                             f"{type(e).__name__}: {str(e).strip()[:300]}") from None
        self.clock: Clock | None = None

    @property
    def heads(self) -> int:
        """Attention heads of the transformer the runtime loaded (admission's split rule uses these,
        not the count its model name suggests)."""
        return self._impl.runtime.heads

    def start(self, clock: Clock) -> None:
        self.clock = clock

    def execute(self, plan: RoundPlan, work: Mapping[str, WorkItem], round_index: int,
                on_complete: Callable[[Completion], None]) -> None:
        assert self.clock is not None
        clock = self.clock
        items = {k: {"prompt": w.prompt, "width": w.width, "height": w.height, "total_steps": w.total_steps,
                     "done_steps": w.done_steps, "seed": w.seed, "guidance_scale": w.guidance_scale,
                     "negative_prompt": w.negative_prompt} for k, w in work.items()}
        refused: dict[str, str] = {}  # never runnable here: those requests fail
        stale: dict[str, str] = {}    # progress disagreed (a plan made before a failure): re-queued

        def done(a, png: bytes | None, images: tuple[tuple[str, bytes], ...] = ()) -> None:
            on_complete(Completion(assignment=a, finish_us=clock.now_us(), image=png, images=images))

        def failed(a, why: str) -> None:
            for rid in a.requests:  # a batch is refused whole
                w = work.get(rid)
                if w is None:  # cancelled meanwhile
                    continue
                if self._impl.runtime.split_problem(w.width, w.height, len(a.gpus)):
                    refused[rid] = why
                else:
                    stale[rid] = why

        try:
            self._impl.run_round(list(plan.assignments), items, done, failed)
        except ExecutorFailure:
            raise
        except Exception as e:  # a worker died or a collective timed out: the loop re-queues
            raise ExecutorFailure(f"{self.name} runtime failed in round {round_index}: {e!r}") from e
        for rid in refused:
            self._impl.discard(rid)
        if refused:
            raise RequestsFailed(refused)
        if stale:  # the engine re-plans them on their true progress, which the runtime holds
            raise ExecutorFailure("; ".join(f"request {rid!r}: {why}" for rid, why in stale.items()))

    @property
    def reports(self) -> list[dict]:
        """What the runtime ran lately: one report per task (a batch: one per member, each with
        `batch` naming them all), from the workers (see tetriopt_runtime.executor)."""
        return list(self._impl.reports)

    def forget(self, request_id: str) -> None:
        """A cancelled (or failed) request: the runtime frees its checkpoint and its latent shards
        and conditioning on the workers at the start of the next round."""
        self._impl.forget(request_id)

    def close(self) -> None:
        self._impl.close()
