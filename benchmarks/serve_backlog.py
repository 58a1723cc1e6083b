#!/usr/bin/env python3
"""The round loop at a large backlog: submit N async jobs (default 1000, mixed sizes, long
deadlines, best-effort so none is refused) to a server on loopback, wait, and report per-round
solve and overhead times and how late each plan was against its round's start.

    python benchmarks/serve_backlog.py --jobs 1000 --wait-s 10 [--max-plan-requests 1000000]

(--max-plan-requests 1000000 turns the planning window off: the server before issue 15.)
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "server"))
from serverkit import ServerThread  # noqa: E402

from tetriopt.server.config import ServerConfig  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--wait-s", type=float, default=10.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--max-plan-requests", type=int, default=ServerConfig.max_plan_requests)
    a = ap.parse_args()
    cfg = ServerConfig(gpus=a.gpus, port=0, admission="best-effort", max_backlog_gpu_s=1e12, max_request_gpu_s=1e12,
                       max_queue=10**7, max_plan_requests=a.max_plan_requests, log_level="warning")
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        t0 = time.perf_counter()
        for i in range(a.jobs):
            r = c.post("/v1/jobs", json={"prompt": "p", "size": ("512x512", "1024x1024", "2048x2048")[i % 3],
                                         "steps": 28, "slo_ms": 20000 + 60 * i})
            assert r.status_code == 202, r.text
        submit_s = time.perf_counter() - t0
        time.sleep(a.wait_s)
        st = c.get("/v1/stats").json()
        rounds = c.get("/v1/schedule").json()["rounds"]
    late = [r["late_ms"] for r in rounds]
    report = {"jobs": a.jobs, "submit_s": round(submit_s, 2), "max_plan_requests": a.max_plan_requests,
              "rounds": len(rounds), "late_rounds": sum(x > 0 for x in late), "late_ms_max": max(late, default=None),
              "pending_planned_max": max((r["pending"] for r in rounds), default=0),
              **{k: st[k] for k in ("solve_ms_p50", "solve_ms_p99", "overhead_ms_p50", "overhead_ms_p99",
                                    "overhead_ms_max", "fallback_rounds")},
              "notes": dict(collections.Counter(r["note"][:60] for r in rounds))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
