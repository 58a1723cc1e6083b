"""Round-by-round execution for a server: one call per round, latents kept on their GPU sets.

`tetriopt.server.executors.runtime` drives this: each round's assignments arrive as tetriopt
Assignments with a `work` entry per request (prompt, size, total and done steps, seed), and
`on_done(assignment, png|None)` is called as each assignment ends (PNG when it ran the last step).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from .driver import GenRequest, Runtime
from .models import ModelSpec
from .plan import PlanState
from .png import encode_png

DEFAULT_PATHS = {"flux": "black-forest-labs/FLUX.1-dev", "sd3": "stabilityai/stable-diffusion-3-medium-diffusers"}


def spec_for(model: str, device: str, path: Optional[str] = None) -> ModelSpec:
    """A profile's model name -> what to load: tiny-flux / tiny-sd3, or the real model from `path`,
    $TETRIOPT_MODEL_PATH, or its hub id (which needs the weights in the local HF cache or network)."""
    if model in ("tiny-flux", "tiny-sd3"):
        return ModelSpec(kind=model)
    kind = "sd3" if "sd3" in model.lower() else "flux"
    return ModelSpec(kind=kind, path=path or os.environ.get("TETRIOPT_MODEL_PATH") or DEFAULT_PATHS[kind],
                     dtype="float32" if device == "cpu" else "bfloat16")


class RoundExecutor:
    def __init__(self, device: str, world: int, model: str, path: Optional[str] = None,
                 sp_backend: str = "auto", timeout_s: float = 300.0):
        self.spec = spec_for(model, device, path)
        self.device, self.world, self.sp_backend, self.timeout_s = device, world, sp_backend, timeout_s
        self.runtime: Optional[Runtime] = None
        self.plan = PlanState(world)
        self.last_latents: dict[str, torch.Tensor] = {}  # final latents of the last round (tests, debugging)
        self._start()

    def _start(self) -> None:
        self.runtime = Runtime(self.spec, self.world, device=self.device, sp_backend=self.sp_backend,
                               timeout_s=self.timeout_s)
        self.plan = PlanState(self.world)  # a fresh runtime holds no request

    def run_round(self, assignments: Sequence[Any], work: Mapping[str, Mapping[str, Any]],
                  on_done: Callable[[Any, Optional[bytes]], None]) -> None:
        """Run one round (blocking). A request not yet on the runtime must have done_steps == 0;
        after a failure the workers restart empty, so requests that were in flight cannot resume."""
        if self.runtime is None or not self.runtime._procs:
            self._start()
        plan = copy.deepcopy(self.plan)  # committed only if the round compiles
        new: list[GenRequest] = []
        for a in assignments:
            w = work[a.request]
            if a.request in plan.total:
                if plan.done[a.request] != int(w["done_steps"]):
                    raise RuntimeError(f"request {a.request!r}: runtime has {plan.done[a.request]} steps done, "
                                       f"scheduler says {w['done_steps']}")
                continue
            if int(w["done_steps"]) != 0:
                raise RuntimeError(f"request {a.request!r} has {w['done_steps']} steps done but its latent is not "
                                   "on this runtime (lost when the workers restarted)")
            plan.add_request(a.request, int(w["total_steps"]))
            new.append(GenRequest(a.request, str(w["prompt"]), int(w["width"]), int(w["height"]),
                                  int(w["total_steps"]), int(w.get("seed", 0))))
        tasks = plan.add_round(assignments)
        rt = self.runtime
        meta, inits, _ = rt._prepare(new)
        by_task = {}
        pool = {}
        for a in assignments:
            pool.setdefault((a.request, tuple(a.gpus), int(a.steps)), []).append(a)
        for t in tasks:
            by_task[t.index] = pool[(t.request, t.gpus, t.steps)].pop(0)
        self.last_latents = {}

        def on_task(timing: dict[str, Any], latent: Optional[torch.Tensor]) -> None:
            a = by_task[timing["task"]]
            png = None
            if latent is not None:
                w = work[a.request]
                self.last_latents[a.request] = latent
                png = encode_png(rt.aux.decode(latent, int(w["width"]), int(w["height"])))
            on_done(a, png)

        self.plan = plan
        try:
            rt.run_tasks(tasks, meta, inits, on_task)
        except Exception:
            self.plan = PlanState(self.world)  # the runtime closed itself: nothing survives
            raise

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
