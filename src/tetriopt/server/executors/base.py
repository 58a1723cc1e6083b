"""The executor interface between the round loop and whatever runs denoising steps.

The loop hands an executor one validated RoundPlan plus what it needs to know about each
request (`WorkItem`), on a worker thread. The executor reports every assignment as it ends
(`on_complete`, from any thread) and raises `ExecutorFailure` (or anything) when a round
breaks: the loop re-queues the unfinished steps of every assignment it did not report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from ...state import Assignment, RoundPlan
from ..clock import Clock


@dataclass(frozen=True)
class WorkItem:
    """What an executor needs about a request besides the assignment itself."""

    id: str
    prompt: str
    width: int
    height: int
    total_steps: int
    done_steps: int      # steps finished before this round
    seed: int


@dataclass(frozen=True)
class Completion:
    """An assignment that ran to its end; `image` (PNG bytes) when it ran the request's last step."""

    assignment: Assignment
    finish_us: int              # on the scheduler clock; includes the VAE decode when finished
    image: bytes | None = None


class ExecutorFailure(RuntimeError):
    """A round broke (a worker died, a collective timed out): unreported assignments are lost."""


class Executor(Protocol):
    name: str
    resumable: bool          # after a failure, requests resume from their last finished step
    concurrent_rounds: bool  # may run round k+1 while round k's tail (decode) still runs

    def start(self, clock: Clock) -> None:
        """Bring workers up; called once before the first round."""

    def execute(self, plan: RoundPlan, work: Mapping[str, WorkItem], round_index: int,
                on_complete: Callable[[Completion], None]) -> None:
        """Run one round's assignments (blocking); call on_complete as each ends."""

    def close(self) -> None:
        """Stop workers; called once at shutdown."""


def make_executor(name: str, gpus: int, profile, fail_rounds: frozenset[int] = frozenset(),
                  model: str | None = None) -> Executor:
    if name == "sim":
        from .sim import SimExecutor

        return SimExecutor(gpus=gpus, profile=profile, fail_rounds=fail_rounds)
    if name in ("cpu", "cuda"):
        from .runtime import RuntimeExecutor

        return RuntimeExecutor(device=name, gpus=gpus, profile=profile, model=model or profile.model)
    from ...errors import InputError

    raise InputError("executor", name, "unknown executor; choose from sim, cpu, cuda")
