"""Admission: the earliest a request could finish alone on the whole cluster, from its arrival.

A request is first planned at the next round boundary whose planning starts after it arrives
(`first_round_us`); from there it can run at most floor(round / step) steps per round on one
GPU set, then the VAE decode. If even that misses the deadline, no schedule can meet it, and
the server says so at once (or accepts it best-effort, by flag) instead of queueing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..instance import Cluster
from ..lookahead import useful
from ..profile import CostProfile


@dataclass(frozen=True)
class Timing:
    round_us: int
    lead_us: int          # planning of round k starts lead_us before its boundary

    def first_round_us(self, arrival_us: int) -> int:
        """Start of the first round whose planning can see a request that arrived at arrival_us."""
        k = -(-(arrival_us + self.lead_us) // self.round_us)
        return k * self.round_us


def useful_steps(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], width: int, height: int,
                 round_us: int) -> dict[int, int]:
    """Per-step latency by degree, for the useful degrees (lookahead.useful)."""
    return useful({k: profile.step_us(width, height, k) for k in degrees if cluster.sets(k)}, round_us)


def best_finish_us(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], timing: Timing,
                   width: int, height: int, steps: int, arrival_us: int) -> int | None:
    """Earliest finish (decode included) alone on the cluster; None if no step fits in a round."""
    start = timing.first_round_us(arrival_us)
    best = None
    for k, step in useful_steps(profile, cluster, degrees, width, height, timing.round_us).items():
        per = timing.round_us // step
        full = (steps - 1) // per
        last = steps - full * per
        fin = start + full * timing.round_us + last * step
        best = fin if best is None else min(best, fin)
    if best is None:
        return None
    return best + profile.vae_decode_us(width, height)


def solo_latency_us(profile: CostProfile, cluster: Cluster, degrees: tuple[int, ...], width: int, height: int,
                    steps: int, round_us: int) -> int | None:
    """Best latency alone from a round boundary (the unit that SLO scales multiply)."""
    return best_finish_us(profile, cluster, degrees, Timing(round_us, 0), width, height, steps, 0)
