"""Routers across GPU nodes vs one global planner, in simulation (issue 16).

8 nodes x 8 GPUs (FLUX.1-dev on H100s, SP inside a node only), workloads from `tetriopt
workload` at 10x, 20x and 40x the paper's rate (the paper: 12 req/min on 8 GPUs; 120, 240 and 480
req/min on 64 GPUs are 1.25x, 2.5x and 5x its load per GPU), both size mixes, SLO scale 1.0. On each
workload: cpsat on every node behind each router, and one cpsat over all 64 GPUs ("global",
the same islands: a set never crosses a node). Printed per row: SLO attainment, goodput
(requests finished on time per minute, over the span from the first arrival to the last
finish), requests the deadline-aware router would answer 429 (no node can keep it; some idle
node could) or 400 (not even an idle node could; the server's admission refuses those first)
-- both still run best effort here --,
not-started requests moved between nodes, GPU-hours, and decision time per round (routing plus
the slowest node's plan: nodes plan in parallel on their own machines; for global, its solve).

    python benchmarks/multinode.py [--rates 120,240] [--mix uniform,skewed] [--time-limit-ms 100] [-n 300] [-j 2]

Defaults take about 5 minutes on 2 cores. `--json FILE` keeps every row. `--features off,on` runs
every row without and with batching and immediate starts (issue 13; default: off, the paper's
model, as the docs/ray.md figures), `--seeds 0,1,2` several workloads, `--deterministic` CP-SAT on
its deterministic clock (met counts independent of the machine's load).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

ROUTERS = ("global", "round-robin", "least-work", "deadline-aware")


def one(args: tuple) -> dict:
    mix, rate, router, feat, seed, a = args
    from tetriopt.cluster.multinode import run_routed
    from tetriopt.instance import parse_instance
    from tetriopt.workload import generate

    data = generate("flux.1-dev-h100", a.gpus, a.n, rate, mix=mix, slo_scale=a.slo_scale, seed=seed,
                    steps=a.steps)
    data["cluster"]["nodes"] = a.nodes
    inst = parse_instance(data, name=f"{mix}-r{rate:g}")
    t0 = time.perf_counter()
    on = feat == "on"
    run = run_routed(inst, a.nodes, "cpsat", router, time_limit_ms=a.time_limit_ms, seed=0, workers=1,
                     batching=on, immediate_start=on, deterministic=a.deterministic)
    s = run.summary
    res = run.result
    span_min = (max(o.finish_us for o in res.requests) - min(r.arrival_us for r in inst.requests)) / 60e6
    return {"mix": mix, "rate": rate, "router": router, "features": feat, "seed": seed,
            "immediate_starts": s.get("immediate_starts", 0), "slo_attainment": s["slo_attainment"], "met": s["met"],
            "goodput_per_min": round(s["met"] / span_min, 2), "rejected": s["rejected"], "infeasible": s["infeasible"],
            "moved": s["moved"],
            "gpu_hours": s["gpu_hours"], "decision_ms_p50": s["decision_ms_p50"],
            "decision_ms_p99": s["decision_ms_p99"], "fallback_rounds": s["fallback_rounds"],
            "routed_per_node": s["routed_per_node"], "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="120,240,480", help="requests/min over the whole cluster")
    ap.add_argument("--mix", default="uniform,skewed")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--slo-scale", type=float, default=1.0)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps per request (FLUX's default: 28)")
    ap.add_argument("--features", default="off", help="off, on or off,on: batching and immediate starts")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--time-limit-ms", type=float, default=100.0, help="CP-SAT limit per round (every planner)")
    ap.add_argument("--routers", default=",".join(ROUTERS))
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    work = [(m, float(r), rt, f, int(sd), a) for m in a.mix.split(",") for r in a.rates.split(",")
            for rt in a.routers.split(",") for f in a.features.split(",") for sd in a.seeds.split(",")]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(one, work))
    print(f"{a.nodes} nodes x {a.gpus} GPUs, flux.1-dev-h100, {a.n} requests, {a.steps} steps, SLO scale {a.slo_scale:g}, seeds {a.seeds}, "
          f"cpsat {a.time_limit_ms:g} ms/round, 1 worker ({time.perf_counter() - t0:.0f} s)")
    print("| mix | req/min | router | features | seed | SLO % | goodput met/min | 429 / 400 | moved | immediate | GPU-h "
          "| decision ms p50 / p99 | fallbacks |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mix']} | {r['rate']:g} | {r['router']} | {r['features']} | {r['seed']} | {100 * r['slo_attainment']:.1f} "
              f"| {r['goodput_per_min']:.1f} "
              f"| {r['rejected']} / {r['infeasible']} | {r['moved']} | {r['immediate_starts']} | {r['gpu_hours']:.3f} | {r['decision_ms_p50']:.0f} / "
              f"{r['decision_ms_p99']:.0f} | {r['fallback_rounds']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
