"""Round-level problem: what a scheduler knows at a round boundary (its answer is in `plan`).

These are the types another scheduler uses with `solve_round`: it builds a `RoundState` from its
own bookkeeping and gets back a `tetriopt.plan.RoundPlan` it can execute.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .instance import Cluster
from .profile import CostProfile


@dataclass(frozen=True)
class RequestState:
    """A pending request at a round boundary."""

    id: str
    width: int
    height: int
    remaining_steps: int
    deadline_us: int
    arrival_us: int = 0
    location: tuple[int, ...] = ()  # GPUs that hold its latent (empty: not started)


@dataclass(frozen=True)
class RoundState:
    now_us: int
    round_us: int
    cluster: Cluster
    profile: CostProfile
    degrees: tuple[int, ...]
    requests: tuple[RequestState, ...]
    round_index: int = 0

    @property
    def end_us(self) -> int:
        return self.now_us + self.round_us

    @cached_property
    def sets(self) -> dict[int, tuple[tuple[int, ...], ...]]:
        return {k: self.cluster.sets(k) for k in self.degrees}

    def step_us(self, r: RequestState, k: int, batch: int = 1) -> int:
        return self.profile.step_us(r.width, r.height, k, batch)

    def decode_us(self, r: RequestState) -> int:
        return self.profile.vae_decode_us(r.width, r.height)

    def due_us(self, r: RequestState) -> int:
        """When r's last step must end: its deadline less the VAE decode that follows it."""
        return r.deadline_us - self.decode_us(r)

    @cached_property
    def memo(self) -> dict:
        """Per-request figures computed once per round (lookahead.outlook fills it), so that every
        policy, the model and its warm starts share them instead of recomputing."""
        return {}

    def max_steps(self, r: RequestState, k: int) -> int:
        """Most steps of r that fit in one round at degree k."""
        return min(r.remaining_steps, self.round_us // self.step_us(r, k))
