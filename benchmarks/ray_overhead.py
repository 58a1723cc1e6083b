"""The Ray path against the single-process server, in the same run, on one machine (issue 16).

Starts a 3-node Ray cluster with Ray's own test harness (`ray.cluster_utils.Cluster`: separate
raylets and worker processes per node, one machine), the Ray front-end with one node actor per
node, and beside it the single-process server with the same settings (4 virtual GPUs per node,
the tests' millisecond profile, sim executors, greedy planning). Then:

1. overhead: N small synchronous requests (OpenAI Images API, 256 px, 1 step), alternating
   between the two servers one at a time, so both see the same machine load, each sent at a
   random phase of the 60 ms round (else the wait for the next round boundary, most of the
   latency, depends on how the client's rhythm meets each server's rounds): end-to-end client
   latency p50 / mean of each, their ratio and difference (what routing, two Ray calls and the
   cross-process result cost per request);
2. spread: a burst of jobs through the Ray front-end; how many each node actor took;
3. failure: a burst, a node removed mid-load; accepted jobs that did not succeed (must be 0),
   jobs re-routed, duplicate results (must be 0).

    python benchmarks/ray_overhead.py [-n 200] [--router deadline-aware]

About a minute on 2 cores. Needs the ray and serve extras.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import httpx
import ray

from tetriopt.cluster.ray_serve import create_cluster_app
from tetriopt.cluster.testbed import ServerThread, local_ray_cluster, stop_ray, wait_jobs
from tetriopt.server.config import ServerConfig

FAST = str(Path(__file__).resolve().parents[1] / "tests" / "server" / "fast-profile.json")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="synchronous requests per server")
    ap.add_argument("--router", default="deadline-aware")
    ap.add_argument("--burst", type=int, default=60)
    a = ap.parse_args()
    cfg = ServerConfig(gpus=4, profile=FAST, port=0, policy="greedy", default_steps=8, default_size="512x512",
                       job_ttl_s=600, drain_timeout_s=60, max_queue=100_000, log_level="warning")
    t0 = time.monotonic()
    cluster, workers = local_ray_cluster(3)
    front = ServerThread(cfg, lambda c, on_drained=None: create_cluster_app(c, 3, a.router, on_drained=on_drained))
    single = ServerThread(cfg)
    ray_url, one_url = front.url, single.url
    print(f"3-node Ray cluster and both servers up in {time.monotonic() - t0:.1f} s "
          f"(round {cfg.round_ms or 60:g} ms, {cfg.gpus} GPUs per node, {a.router} router); machine shared")
    body = {"prompt": "p", "size": "256x256", "steps": 1, "slo_ms": 10000}
    lat: dict[str, list[float]] = {"single": [], "ray": []}
    with httpx.Client(base_url=ray_url, timeout=60) as rc, httpx.Client(base_url=one_url, timeout=60) as oc:
        for c in (rc, oc):  # warm both paths
            for _ in range(5):
                c.post("/v1/images/generations", json=body).raise_for_status()
        rng = random.Random(0)
        for i in range(a.n):
            for name, c in (("single", oc), ("ray", rc)) if i % 2 else (("ray", rc), ("single", oc)):
                # a random phase within the round: the wait for the next round boundary is then
                # the same in distribution for both servers (their rounds started at other times)
                time.sleep(rng.uniform(0, 0.06))
                s = time.perf_counter()
                r = c.post("/v1/images/generations", json=body)
                lat[name].append((time.perf_counter() - s) * 1e3)
                r.raise_for_status()
        p50 = {k: statistics.median(v) for k, v in lat.items()}
        mean = {k: statistics.fmean(v) for k, v in lat.items()}
        print(f"end-to-end ms per request ({a.n} each, alternating): single-process p50 {p50['single']:.1f} "
              f"mean {mean['single']:.1f} p99 {pct(lat['single'], 99):.1f}; ray p50 {p50['ray']:.1f} "
              f"mean {mean['ray']:.1f} p99 {pct(lat['ray'], 99):.1f}")
        print(f"ratio ray / single: p50 {p50['ray'] / p50['single']:.2f}, mean {mean['ray'] / mean['single']:.2f}; "
              f"difference p50 {p50['ray'] - p50['single']:+.1f} ms, mean {mean['ray'] - mean['single']:+.1f} ms")
        actor = front.service.scheduler.nodes[0].actor
        calls = []
        for _ in range(200):
            s = time.perf_counter()
            ray.get(actor.hello.remote())
            calls.append((time.perf_counter() - s) * 1e3)
        print(f"one front-end -> node actor call (the Ray path makes two per job, sent together): "
              f"p50 {statistics.median(calls):.2f} ms, p99 {pct(calls, 99):.2f} ms")

        before = {n["index"]: n["routed"] for n in rc.get("/v1/cluster").json()["nodes"]}
        ids = [rc.post("/v1/jobs", json={"prompt": "p", "size": "1024x1024", "steps": 16, "slo_ms": 4000}).json()["id"]
               for _ in range(a.burst)]
        done = wait_jobs(rc, ids, 120)
        after = {n["index"]: n["routed"] for n in rc.get("/v1/cluster").json()["nodes"]}
        print(f"spread of a burst of {a.burst} jobs over the node actors: "
              f"{[after[i] - before[i] for i in sorted(after)]}; succeeded "
              f"{sum(b['status'] == 'succeeded' for b in done.values())}, deadline met "
              f"{sum(bool(b.get('result', {}).get('tetriopt', {}).get('deadline_met')) for b in done.values())}")

        ids = [rc.post("/v1/jobs", json={"prompt": "p", "size": "1024x1024", "steps": 20, "slo_ms": 60000}).json()["id"]
               for _ in range(a.burst)]
        view = rc.get("/v1/cluster").json()
        victim = max(view["nodes"], key=lambda n: n["unfinished_jobs"])
        cluster.remove_node(next(w for w in workers if w.node_id == victim["ray_node"]))
        t_kill = time.monotonic()
        done = wait_jobs(rc, ids, 120)
        view = rc.get("/v1/cluster").json()
        lost = len(ids) - sum(b["status"] == "succeeded" for b in done.values())
        print(f"node {victim['index']} removed with {victim['unfinished_jobs']} unfinished jobs of a burst of "
              f"{a.burst}: not succeeded {lost}, re-routed {view['rerouted']}, duplicate results "
              f"{view['duplicate_results']}, all done {time.monotonic() - t_kill:.1f} s after the kill")
    for s in (front, single):
        s.stop(wait_s=30)
    stop_ray(cluster)


if __name__ == "__main__":
    main()
