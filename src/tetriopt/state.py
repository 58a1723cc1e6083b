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

    @cached_property
    def widest(self) -> int:
        """The largest degree with GPU sets in the cluster (0: none): its sets are the blocks that
        2,048 px requests need whole (burst.wide)."""
        return max((k for k in self.degrees if self.sets.get(k)), default=0)

    def step_us(self, r: RequestState, k: int, batch: int = 1) -> int:
        return self.profile.step_us(r.width, r.height, k, batch)

    def decode_us(self, r: RequestState) -> int:
        """The VAE decode of r's final latent (see aux_us)."""
        return self.profile.vae_decode_us(r.width, r.height)

    def due_us(self, r: RequestState) -> int:
        """When r's last step must end: its deadline less the VAE decode that follows it."""
        return r.deadline_us - self.decode_us(r)

    @cached_property
    def memo(self) -> dict:
        """Per-request figures computed once per round (lookahead.outlook fills it), so that every
        policy, the model and its warm starts share them instead of recomputing."""
        return {}

    def encode_us(self, r: RequestState) -> int:
        """Text encoding r still needs before its first step: none once its latent is on a GPU set."""
        return 0 if r.location else self.profile.text_encode_us

    def aux_us(self, r: RequestState, steps: int, before: int = 0) -> int:
        """What an assignment of `steps` steps of r runs besides its steps, on its set's leader (the
        runtime: tetriopt_runtime.worker): the prompt's text encoding if r has not started (its
        latent is on no set, and no earlier assignment this round ran `before` of its steps), and
        the VAE decode if these steps finish it. The one place this is decided; every assignment's
        duration (plan.decision_us) includes it, so the planner's capacities, the plan's start
        times, check_plan and the simulated executor agree with what the runtime's leader does."""
        return ((self.encode_us(r) if before == 0 else 0)
                + (self.decode_us(r) if before + steps >= r.remaining_steps else 0))

    def fit_steps(self, rs: "RequestState | tuple[RequestState, ...]", k: int, free_us: int,
                  want: int | None = None) -> int:
        """Most steps (at most `want`, default: until the first member finishes) that r, or the batch
        `rs` sharing every step, can run at degree k in `free_us` of GPU time, aux work included."""
        rs = (rs,) if isinstance(rs, RequestState) else tuple(rs)
        t = self.step_us(rs[0], k, len(rs))
        cap = min(q.remaining_steps for q in rs)
        n = min(cap if want is None else min(want, cap), (free_us - sum(self.encode_us(q) for q in rs)) // t)
        if n > 0 and n * t + sum(self.aux_us(q, n) for q in rs) > free_us:
            n -= 1  # its decode does not fit after the last step: stop one short of finishing
        return max(0, n)

    def max_steps(self, r: RequestState, k: int) -> int:
        """Most steps of r that fit in one round at degree k (its encode / decode included)."""
        return self.fit_steps(r, k, self.round_us)
