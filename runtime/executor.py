"""Round-by-round execution for a server: one call per round, latents kept on their GPU sets.

`tetriopt.server.executors.runtime` drives this: each round's assignments arrive as tetriopt
Assignments (run in their planned start order) with a `work` entry per request (prompt, size,
total and done steps, seed), and `on_done(assignment, png|None, images)` is called as each
assignment ends (png: its request's PNG when it ran the last step; images: (member, PNG) of the
other members of a batched assignment that it finished). A batched assignment (`batch`: same-size
requests sharing every step) runs as one stacked step per step, with per-sample timesteps.

Failures stay small:
- An assignment this runtime cannot run (a degree that does not split the request's tokens or
  the model's heads, or progress that disagrees with what the runtime holds) is refused before
  dispatch, alone: `on_failed(assignment, reason)`; the rest of the round runs.
- Each assignment's leader also reports the request's full latent as it ends (a checkpoint,
  kept here with the request's conditioning; about 1 MB for FLUX at 1024 px). A worker death or
  a collective timeout therefore fails one round, once: the workers restart (at the start of the
  next call, or before it if the death happened between rounds, which then costs no failure) and
  every request resumes from its last finished assignment on whatever set the next plan gives it.
  Only the steps of the failed round's unreported assignments are lost.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from dataclasses import replace
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from .driver import GenRequest, Runtime, batch_problem
from .models import Conditioning, ModelSpec
from .plan import PlanError, PlanState, Task

RECENT = 64  # finished latents and task reports kept for inspection (tests, debugging)
DEFAULT_PATHS = {"flux": "black-forest-labs/FLUX.1-dev", "sd3": "stabilityai/stable-diffusion-3-medium-diffusers"}


def spec_for(model: str, device: str, path: Optional[str] = None) -> ModelSpec:
    """A profile's model name -> what to load: tiny-flux / tiny-sd3, or the real model from `path`,
    $TETRIOPT_MODEL_PATH, or its hub id (which needs the weights in the local HF cache or network)."""
    if model in ("tiny-flux", "tiny-sd3"):
        return ModelSpec(kind=model)
    kind = "sd3" if "sd3" in model.lower() else "flux"
    return ModelSpec(kind=kind, path=path or os.environ.get("TETRIOPT_MODEL_PATH") or DEFAULT_PATHS[kind],
                     dtype="float32" if device == "cpu" else "bfloat16")


@dataclass
class _Held:
    """A request this executor has seen and not finished: enough to resume it after a restart."""

    req: GenRequest
    cond: Optional[Conditioning] = None     # encoded here when the driver holds the aux models
    done: int = 0                            # steps finished (reported)
    latent: Optional[torch.Tensor] = None    # full latent after `done` steps (fp32, CPU)


class RoundExecutor:
    def __init__(self, device: str, world: int, model: str, path: Optional[str] = None,
                 sp_backend: str = "auto", timeout_s: float = 300.0, aux_device: Optional[str] = None,
                 compile: bool = False, warm_sizes: Sequence[tuple[int, int]] = ()):
        self.spec = spec_for(model, device, path)
        self.device, self.world, self.sp_backend, self.timeout_s = device, world, sp_backend, timeout_s
        self.options = dict(aux_device=aux_device, compile=compile, warm_sizes=tuple(warm_sizes))
        self.runtime: Optional[Runtime] = None
        self.plan = PlanState(world)
        self.held: dict[str, _Held] = {}
        self.restarts = 0
        self._forgotten: set[str] = set()  # cancelled since the last round (any thread adds; see forget)
        self._lock = threading.Lock()
        # final latents of the last RECENT finished requests, and the last 16 x RECENT task reports
        # (the workers' timings plus the request's seed; a batch's members each report, with
        # `batch` listing them): what ran, for tests and debugging
        self.last_latents: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.reports: deque[dict[str, Any]] = deque(maxlen=16 * RECENT)
        self._start()

    def _start(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.restarts += 1
        self.runtime = Runtime(self.spec, self.world, device=self.device, sp_backend=self.sp_backend,
                               timeout_s=self.timeout_s, **self.options)
        self.plan = PlanState(self.world)  # a fresh runtime holds no latent: requests resume from `held`

    def _admit(self, plan: PlanState, rid: str, degree: int, w: Mapping[str, Any]) -> Optional[str]:
        """Make sure request `rid` can run an assignment on `degree` ranks; why not, if it cannot."""
        done = int(w["done_steps"])
        h = self.held.get(rid)
        if h is not None and h.done != done:
            if done != 0:
                return (f"the runtime holds {h.done} finished steps of {rid!r}, the scheduler says {done}; "
                        "it must restart from step 0")
            plan.forget(rid)  # the scheduler restarts it from scratch
            h = None
        if h is None:
            if done != 0:
                return f"{rid!r} has {done} steps done but its latent is not on this runtime"
            req = GenRequest(rid, str(w["prompt"]), int(w["width"]), int(w["height"]), int(w["total_steps"]),
                             int(w.get("seed", 0)), w.get("guidance_scale"), w.get("negative_prompt"))
            h = self.held[rid] = _Held(req)
        why = self.runtime.split_problem(h.req.width, h.req.height, degree)
        if why:
            return why
        if rid not in plan.total:  # new, or resumed after a restart: starts from the driver's copy
            plan.add_request(rid, h.req.steps, done=h.done)
        return None

    def _refuse(self, plan: PlanState, assignments: Sequence[Any],
                work: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Requests this round cannot run, with why. An assignment with a refused member does not
        run, so the rest of its batch is refused with it (and so on, to a fixed point)."""
        refused: dict[str, str] = {}
        for a in assignments:
            rids = _requests(a)
            why = batch_problem(rids, {r: (work[r]["width"], work[r]["height"]) for r in rids})
            for rid in rids:
                if rid not in refused:
                    why_r = why or self._admit(plan, rid, len(a.gpus), work[rid])
                    if why_r:
                        refused[rid] = why_r
        grew = True
        while grew:
            grew = False
            for a in assignments:
                bad = [r for r in _requests(a) if r in refused]
                for rid in _requests(a):
                    if bad and rid not in refused:
                        refused[rid] = f"batched with {bad[0]!r}: {refused[bad[0]]}"
                        grew = True
        for rid in refused:
            plan.forget(rid)
        return refused

    def run_round(self, assignments: Sequence[Any], work: Mapping[str, Mapping[str, Any]],
                  on_done: Callable[[Any, Optional[bytes], tuple[tuple[str, bytes], ...]], None],
                  on_failed: Optional[Callable[[Any, str], None]] = None) -> None:
        """Run one round (blocking). Assignments refused before dispatch go to `on_failed` (with
        none given, a PlanError names them after the rest has run)."""
        if self.runtime is None or not self.runtime.alive():
            self._start()
        rt = self.runtime
        with self._lock:
            gone, self._forgotten = self._forgotten, set()
        for rid in gone:  # cancelled: its checkpoint here and its history go now, the workers' copies below
            self.held.pop(rid, None)
            self.plan.forget(rid)
        # planned before a member was cancelled: the rest of a batch still runs (reported as planned)
        origin: dict[int, Any] = {}
        live = []
        for a in assignments:
            rids = [r for r in _requests(a) if r not in gone]
            if len(rids) == len(_requests(a)):
                live.append(a)
            elif rids:
                b = replace(a, request=rids[0], batch=tuple(rids[1:]))
                origin[id(b)] = a
                live.append(b)
        assignments = live
        plan = PlanState.copy(self.plan)  # committed only if the round compiles
        refused = self._refuse(plan, assignments, work)
        run = [a for a in assignments if not any(r in refused for r in _requests(a))]
        tasks = plan.add_round(run)
        meta, inits = {}, {}
        for t in tasks:
            if t.is_first:
                h = self.held[t.request]
                meta[t.request] = rt.meta_of(h.req)
                inits[t.request], _ = rt.init_of(h.req, h.latent, h.cond)
                h.cond = inits[t.request].cond
        by_task = _match(tasks, run)
        task_of = {t.index: t for t in tasks}
        left = {id(a): len(_requests(a)) for a in run}  # member tasks of each assignment still to report
        pngs: dict[int, dict[str, bytes]] = {}

        def on_task(timing: dict[str, Any], latent: Optional[torch.Tensor], final: bool, image: Any) -> None:
            t, a = task_of[timing["task"]], by_task[timing["task"]]
            h = self.held[t.request]
            h.done, h.latent = t.step_start + t.steps, latent
            self.reports.append({**timing, "seed": h.req.seed})
            if final:
                del self.held[t.request]
                self.last_latents[t.request] = latent
                while len(self.last_latents) > RECENT:
                    self.last_latents.popitem(last=False)
                pngs.setdefault(id(a), {})[t.request], _ = rt.image_of(h.req, latent, image)
            left[id(a)] -= 1
            if left[id(a)] == 0:  # a batch completes when its last member reports
                got = pngs.pop(id(a), {})
                planned = origin.get(id(a), a)
                on_done(planned, got.pop(planned.request, None), tuple(got.items()))

        self.plan = plan
        try:
            if tasks:
                rt.run_tasks(tasks, meta, inits, on_task, checkpoint=True, forget=sorted(gone))
            elif gone:
                with self._lock:  # no job this round to carry them: the next one does
                    self._forgotten |= gone
        except Exception:
            self.plan = PlanState(self.world)  # the runtime closed itself; `held` has every checkpoint
            raise
        finally:
            for a in assignments:
                bad = [r for r in _requests(a) if r in refused]
                if bad and on_failed is not None:
                    on_failed(origin.get(id(a), a), refused[bad[0]])
        if refused and on_failed is None:
            raise PlanError("; ".join(f"{rid}: {why}" for rid, why in refused.items()))

    def discard(self, rid: str) -> None:
        """Drop a request refused before dispatch, now (on the thread that runs rounds): its
        checkpoint here and its place in the plan; planned again, it starts from scratch."""
        self.held.pop(rid, None)
        self.plan.forget(rid)

    def forget(self, rid: str) -> None:
        """Drop a request (cancelled or failed), from any thread: at the start of the next round its
        checkpoint here and its place in the plan go, and every worker frees its shard and
        conditioning (a round in flight may still run it; its report is then the last)."""
        with self._lock:
            self._forgotten.add(rid)

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()


def _requests(a: Any) -> tuple[str, ...]:
    """Every request an assignment advances (a batch: all its members)."""
    return (a.request, *getattr(a, "batch", ()))


def _match(tasks: Sequence[Task], assignments: Sequence[Any]) -> dict[int, Any]:
    """Task index -> the assignment it came from (tasks carry request, set and steps; a batch's
    member tasks all map to its one assignment)."""
    pool: dict[tuple, list] = {}
    for a in assignments:
        for rid in _requests(a):
            pool.setdefault((rid, tuple(a.gpus), int(a.steps)), []).append(a)
    return {t.index: pool[(t.request, t.gpus, t.steps)].pop(0) for t in tasks}
