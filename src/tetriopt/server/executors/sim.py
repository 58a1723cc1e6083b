"""Virtual GPUs that take the profile's time per step, sleeping in real time.

The plan's times are honoured on the scheduler clock: an assignment starts at its planned
start or when its GPUs free up (if an earlier round ran late) and keeps its GPUs for its planned
duration (plan.decision_us, which check_plan verified: its steps plus a new request's text encode
and a finishing one's VAE decode, as the runtime runs them on the set's leader). So a server on
`sim` behaves, round by round, like `tetriopt solve` on the same arrivals. `fail_rounds` injects a crash half-way through
those executed rounds (1 = the first round this executor runs), to exercise re-queueing.
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping

from ...engine import ClockLike
from ...plan import RoundPlan
from ...profile import CostProfile
from .base import Completion, ExecutorFailure, WorkItem
from .png import placeholder_png


class SimExecutor:
    name = "sim"
    resumable = True
    concurrent_rounds = True

    def __init__(self, gpus: int, profile: CostProfile, fail_rounds: frozenset[int] = frozenset(),
                 images: bool = True):
        self.gpus = gpus
        self.profile = profile
        self.images = images  # False: no placeholder PNGs (`tetriopt solve` needs only the times)
        self._fail = set(fail_rounds)
        self._executed = 0
        self._free_us = [0] * gpus  # when each virtual GPU finishes its queued work
        self._lock = threading.Lock()
        self.clock: ClockLike | None = None

    def start(self, clock: ClockLike) -> None:
        self.clock = clock

    def execute(self, plan: RoundPlan, work: Mapping[str, WorkItem], round_index: int,
                on_complete: Callable[[Completion], None]) -> None:
        assert self.clock is not None, "start() first"
        clock = self.clock
        events = []
        done: dict[str, int] = {}   # a request's steps through its assignments so far (several a round)
        ready: dict[str, int] = {}  # when its previous assignment in this round ends
        with self._lock:
            for a in sorted(plan.assignments, key=lambda a: (a.start_us, a.gpus)):
                w = work[a.request]
                start = max([a.start_us, clock.now_us()] + [ready.get(i, 0) for i in a.requests]
                            + [self._free_us[g] for g in a.gpus])
                end = start + (a.end_us - a.start_us)
                for g in a.gpus:
                    self._free_us[g] = end
                for i in a.requests:  # a batch advances every member
                    ready[i] = end
                    done[i] = done.get(i, work[i].done_steps if i in work else 0) + a.steps
                finish = end  # a finishing assignment's duration holds its decode
                image = (_image(w) if self.images and done[a.request] >= w.total_steps else None)
                images = tuple((i, _image(work[i])) for i in a.batch
                               if self.images and i in work and done[i] >= work[i].total_steps)
                events.append((finish, a, image, images))
        events.sort(key=lambda e: e[0])
        crash_at = None
        with self._lock:
            self._executed += 1
            fail = self._executed in self._fail
        if fail:
            # crash half-way through the round's work: earlier completions stand, later ones are lost
            if events:
                crash_at = (min(e[1].start_us for e in events) + events[-1][0]) // 2
        for finish, a, image, images in events:
            if crash_at is not None and finish > crash_at:
                clock.sleep_until(crash_at)
                with self._lock:
                    for g in range(self.gpus):
                        self._free_us[g] = min(self._free_us[g], crash_at)
                raise ExecutorFailure(f"sim: injected crash in round {round_index} at {crash_at} us")
            clock.sleep_until(finish)
            on_complete(Completion(assignment=a, finish_us=finish, image=image, images=images))

    def forget(self, request_id: str) -> None:
        """Nothing to free: virtual GPUs keep no latents."""

    def close(self) -> None:
        pass


def _image(w: WorkItem) -> bytes:
    """The placeholder, carrying what it was asked to be (the conditioning a model would use)."""
    return placeholder_png(w.width, w.height, w.prompt, {
        "prompt": w.prompt, "seed": w.seed, "steps": w.total_steps, "guidance_scale": w.guidance_scale,
        "negative_prompt": w.negative_prompt})
