"""On small rounds CP-SAT reaches the true optimum of the formulation, and PuLP agrees.

The brute force enumerates every choice (GPU set, steps, keep) and scores it from the
formulation's definition (formulation.py docstring), not from the linear model the backends see:
with `convex` (the default, as MipPolicy's) a kept request's remaining steps cost the lower convex
envelope of its least future GPU-ms at u (`least_future`: tested against an exhaustive table in
test_convex.py), which the model encodes as a variable above the envelope's rows.
"""

from __future__ import annotations

import itertools
import random

import pytest

from tetriopt import RequestState, RoundState, load_profile, make_cluster
from tetriopt.policies.backends import solve_cpsat, solve_pulp
from tetriopt.plan import decisions_of
from tetriopt.policies import make_policy
from tetriopt.policies.formulation import build, complete, gpu_ms, keepable, least_future


def random_state(seed: int) -> RoundState:
    """Random small rounds; every third one crowds requests due inside the round onto 1-2 GPUs."""
    rng = random.Random(seed)
    crowded = seed % 3 == 0
    gpus = rng.choice([1, 2]) if crowded else rng.choice([2, 4])
    prof = load_profile("flux.1-dev-h100")
    now = rng.choice([0, 3000])
    reqs = []
    for i in range(rng.choice([2, 3])):
        size = rng.choice([256, 512, 1024, 2048])
        loc = rng.choice([(), (0,), (0, 1)]) if gpus >= 2 else ()
        steps = rng.randint(1, 4) if crowded else rng.choice([rng.randint(1, 4), rng.randint(5, 20)])
        due = rng.randint(100_000, 400_000) if crowded else rng.randint(150_000, 4_000_000)
        size = rng.choice([256, 512, 1024]) if crowded else size
        reqs.append(RequestState(id=f"q{i}", width=size, height=size, remaining_steps=steps,
                                 deadline_us=now + due, arrival_us=0, location=loc))
    return RoundState(now_us=now, round_us=rng.choice([200_000, 300_000]), cluster=make_cluster(gpus),
                      profile=prof, degrees=tuple(d for d in prof.degrees if d <= gpus), requests=tuple(reqs))


def brute_force(state: RoundState, convex: bool = True) -> int:
    rm = build(state, convex=convex)
    w = rm.weights
    reqs = sorted(state.requests, key=lambda r: (r.deadline_us, r.id))
    # the price of u steps left by a kept request: the envelope at u, or u at its cheapest per-step cost
    future = {r.id: least_future(state, r, rm.looks[r.id]) for r in reqs} if convex else {}

    def price(r, u: int) -> int:
        got = future.get(r.id)
        return got[1][u] if got is not None else gpu_ms(rm.looks[r.id].cheapest_cost) * u

    options = []
    for r in reqs:
        opts = [(None, 0, 0)]
        for gpus, t, x, s in rm.cand[r.id]:
            for n in range(1, state.max_steps(r, len(gpus)) + 1):
                opts.append((gpus, n, t))
        options.append(opts)
    best = None
    for combo in itertools.product(*options):
        load = {}
        for r, (gpus, n, t) in zip(reqs, combo):  # a task's encode / decode loads its GPUs too
            for g in gpus or ():
                load[g] = load.get(g, 0) + n * t + state.aux_us(r, n)
        if any(v > state.round_us for v in load.values()):
            continue
        base = 0
        for r, (gpus, n, t) in zip(reqs, combo):
            e = gpu_ms(rm.looks[r.id].cheapest_cost)
            if gpus:
                base += n * (w.progress * e - w.gpu * gpu_ms(len(gpus) * t))
                if gpus == r.location:
                    base += max(1, e // 4)
            if n == r.remaining_steps:
                base += w.done * e
        # requests due inside the round run first, earliest deadline first, on their GPUs
        urgent_done: dict[str, bool] = {}
        gpu_clock: dict[int, int] = {}
        for r, (gpus, n, t) in zip(reqs, combo):
            can, slack = keepable(state, r, rm.looks[r.id])
            if can and slack is None:
                for g in gpus or ():
                    gpu_clock[g] = gpu_clock.get(g, 0) + n * t + state.aux_us(r, n)
                budget = r.deadline_us - state.now_us  # its own decode is in its clock
                urgent_done[r.id] = n == r.remaining_steps and all(gpu_clock[g] <= budget for g in gpus or ())
        for keep in itertools.product([0, 1], repeat=len(reqs)):
            val, ok, us = base, True, []
            for r, (gpus, n, t), k in zip(reqs, combo, keep):
                o = rm.looks[r.id]
                can, slack = keepable(state, r, o)
                u = (r.remaining_steps - n) if k else 0
                if k:
                    if not can:
                        ok = False
                        break
                    if slack is None:
                        if not urgent_done[r.id]:
                            ok = False
                            break
                    elif u > slack:
                        ok = False
                        break
                val += k * (w.keep - w.remaining * price(r, u))
                # kept and unfinished: its steps left by their due time, and the decode still to
                # come on its set by its deadline
                us.append((r.deadline_us - state.decode_us(r), gpu_ms(o.cheapest_cost) * u))
                if u:
                    us.append((r.deadline_us, gpu_ms(o.cheapest_degree * state.decode_us(r))))
            if not ok:
                continue
            for d, _ in us:  # joint test at every deadline
                if sum(c for dd, c in us if dd <= d) > max(0, state.cluster.gpus * (d - state.end_us)) // 1000:
                    ok = False
                    break
            if ok and (best is None or val > best):
                best = val
    return best


@pytest.mark.parametrize("seed,convex", [(seed, True) for seed in range(60)] + [(seed, False) for seed in range(0, 60, 3)])
def test_cpsat_matches_brute_force_and_pulp(seed, convex):
    state = random_state(seed)
    rm = build(state, convex=convex)
    cp = solve_cpsat(rm.model, 20.0, seed=0, workers=1)
    assert cp.status == "OPTIMAL"
    assert cp.objective == brute_force(state, convex)
    # the heuristics' plans complete into feasible model solutions (the solver's warm starts)
    for name in ("greedy", "tetriserve"):
        p = make_policy(name).plan(state)
        sol = complete(rm, decisions_of(p), p.kept or ())
        assert sol is not None and rm.model.value(sol) <= cp.objective, name
    pl = solve_pulp(rm.model, 20.0)
    assert pl.status == "OPTIMAL"
    assert pl.objective == pytest.approx(cp.objective, abs=0.5)


def test_the_convex_price_is_in_the_brute_forces_rounds():
    """The convex rounds above test the envelope where it matters: in most of them some request's
    remaining steps are priced off the linear price (u x its cheapest per-step GPU-ms)."""
    bent = 0
    for seed in range(60):
        rm = build(random_state(seed), convex=True)
        bent += any(env[u] != gpu_ms(rm.looks[i].cheapest_cost) * u
                    for i, (*_, env) in rm.convex.items() for u in range(len(env)))
    assert bent >= 30
