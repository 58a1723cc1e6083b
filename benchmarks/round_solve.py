"""Per-round solve time and proved optimality gap as pending requests grow.

Random round states in the paper's mix (FLUX.1-dev on H100), on 8 and 64 GPUs, with 8 to 512
pending requests at random progress, deadlines and latent locations. For each size it prints the
decision time p50/p99/max (wall, from the call to the plan: warm starts, model, search, repair; one
policy object per row, as in a server, so that its stage-cost estimates learn), how many rounds
were proved optimal, fell back to a heuristic, the mean number of requests kept (aiming for
their deadline) against the greedy EDF admission's count, and the largest relative gap
(bound - objective) / |bound| of the whole lexicographic objective where CP-SAT proved a bound.

    python benchmarks/round_solve.py [--rounds 10] [--time-limit-ms 200] [--gpus 8,64] [--pending 8,32,128,512]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from tetriopt import RequestState, RoundState, load_profile, make_cluster
from tetriopt.policies import make_policy
from tetriopt.policies.greedy import greedy_decisions

TARGET = {256: 1.5, 512: 2.0, 1024: 3.0, 2048: 5.0}


def random_state(rng: random.Random, gpus: int, pending: int) -> RoundState:
    prof = load_profile("flux.1-dev-h100")
    now = 60_000_000
    sets = {k: make_cluster(gpus).sets(k) for k in (1, 2, 4, 8)}
    reqs = []
    for i in range(pending):
        s = rng.choice([256, 512, 1024, 2048])
        steps = rng.randint(1, 20)
        slack = TARGET[s] * rng.uniform(0.3, 1.5) * (gpus / 8) ** 0 * (pending / gpus) ** 0.5
        k = rng.choice([1, 2, 4, 8])
        loc = rng.choice(sets[k]) if rng.random() < 0.5 else ()
        reqs.append(RequestState(id=f"r{i}", width=s, height=s, remaining_steps=steps,
                                 deadline_us=now + int(slack * 1e6), arrival_us=now - 1_000_000, location=loc))
    return RoundState(now_us=now, round_us=prof.default_round_us, cluster=make_cluster(gpus), profile=prof,
                      degrees=(1, 2, 4, 8), requests=tuple(reqs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--time-limit-ms", type=float, default=200.0)
    ap.add_argument("--gpus", default="8,64")
    ap.add_argument("--pending", default="8,32,128,512")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--policy", default="cpsat", help="with MipPolicy switches, e.g. cpsat[symmetry=0]")
    a = ap.parse_args()
    # wall-clock figures: the machine's load beside them (docs/solver.md, section 2)
    print(f"{a.policy} round solve, time limit {a.time_limit_ms:g} ms, {a.workers} worker(s), {a.rounds} random rounds per row, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'gpus':>5} {'pending':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'optimal':>8} {'fallback':>8} "
          f"{'kept':>6} {'kept(EDF)':>9} {'gap':>8}")
    for gpus in map(int, a.gpus.split(",")):
        for pending in map(int, a.pending.split(",")):
            rng = random.Random(gpus * 1000 + pending)
            times, opt, fb, gaps, kept, kept_g = [], 0, 0, [], [], []
            # one policy per row, as in a server: its per-stage cost estimates learn from the rounds
            pol = make_policy(a.policy, time_limit_ms=a.time_limit_ms, workers=a.workers)
            for _ in range(a.rounds):
                st = random_state(rng, gpus, pending)
                t0 = time.perf_counter()
                plan = pol.plan(st)
                times.append((time.perf_counter() - t0) * 1e3)
                opt += plan.status == "OPTIMAL"
                fb += plan.status == "FALLBACK"
                kept.append(len(plan.kept or ()))
                kept_g.append(len(greedy_decisions(st)[1]))
                if plan.bound is not None and plan.objective is not None and plan.bound:
                    gaps.append((plan.bound - plan.objective) / abs(plan.bound))
            times.sort()
            p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
            gap = f"{100 * max(gaps):.3f}%" if gaps else "n/a"
            print(f"{gpus:5d} {pending:8d} {statistics.median(times):8.1f} {p99:8.1f} {max(times):8.1f} {opt:8d} "
                  f"{fb:8d} {statistics.mean(kept):6.1f} {statistics.mean(kept_g):9.1f} {gap:>8}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
