#!/usr/bin/env python3
"""Load generator for `tetriopt serve`: open-loop arrivals over HTTP, SLO attainment and overhead.

Arrivals are Poisson (or bursty: gamma inter-arrivals with a coefficient of variation > 1) at
--rate requests/s for --duration-s; each request draws a size and an SLO scale, and its
deadline is scale x the request's best latency alone on the server's cluster (same rule as
TetriServe's SLO scales). Requests go to POST /v1/images/generations and the script reports
SLO attainment (of all sent and of those accepted), goodput, 429s, client-side latency
percentiles (also as a multiple of each request's SLO) and the server's per-round scheduling
overhead (from GET /v1/stats).

--instance PATH writes what was actually sent (the server's arrival stamps as arrivals) as a tetriopt instance,
and --compare then runs `tetriopt solve` on it with the server's policy, so the server's
attainment on the sim executor can be checked against the offline simulation (the offline
solve schedules every request sent, 429s included; if it fails, the report says why).

    tetriopt serve --gpus 8 &
    python benchmarks/loadgen.py --rate 3 --duration-s 45 --instance /tmp/sent.json --compare
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from tetriopt.instance import make_cluster
from tetriopt.profile import load_profile
from tetriopt.server.admission import solo_latency_us


@dataclass
class Sent:
    id: str
    at_ms: float         # send time, ms after the first send
    width: int
    height: int
    steps: int
    slo_ms: float
    scale: float = 0.0
    status: int = 0
    latency_ms: float | None = None      # client-side, send to response
    met: bool = False                    # the server's verdict (image ready by the deadline)
    server_latency_ms: float | None = None   # the server's: arrival to image ready
    server_arrival_ms: float | None = None   # the server's arrival stamp (its clock: rounds at k x round_ms)
    job: str = ""                        # the server's job id (its logs name it)
    error: str = ""


def parse_weighted(text: str, conv) -> list[tuple[Any, float]]:
    out = []
    for part in text.split(","):
        v, _, w = part.partition(":")
        out.append((conv(v), float(w or 1)))
    return out


def arrivals(rate: float, duration_s: float, kind: str, cv: float, rng: random.Random) -> list[float]:
    """Arrival times in seconds: Poisson, or gamma inter-arrivals with coefficient of variation cv."""
    t, out = 0.0, []
    while True:
        if kind == "poisson":
            t += rng.expovariate(rate)
        else:
            shape = 1.0 / (cv * cv)
            t += rng.gammavariate(shape, 1.0 / (rate * shape))
        if t >= duration_s:
            return out
        out.append(t)


async def one(client: httpx.AsyncClient, s: Sent, t0: float, headers: dict[str, str]) -> None:
    await asyncio.sleep(max(0.0, t0 + s.at_ms / 1e3 - time.monotonic()))
    s.at_ms = (time.monotonic() - t0) * 1e3  # what was really sent, for the instance
    body = {"prompt": f"loadgen {s.id}", "size": f"{s.width}x{s.height}", "steps": s.steps, "slo_ms": s.slo_ms,
            "response_format": "b64_json"}
    try:
        r = await client.post("/v1/images/generations", json=body, headers=headers)
    except httpx.HTTPError as e:
        s.error = repr(e)
        return
    s.status = r.status_code
    s.latency_ms = (time.monotonic() - t0) * 1e3 - s.at_ms
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code == 200:
        s.met = bool(body["tetriopt"]["deadline_met"])
        s.server_latency_ms = body["tetriopt"]["latency_ms"]
        s.server_arrival_ms = body["tetriopt"]["arrival_ms"]
        s.job = body["tetriopt"]["job_id"]
    else:
        s.error = (body.get("error") or {}).get("message", r.text)[:200] if isinstance(body, dict) else r.text[:200]
        if "x-tetriopt-arrival-ms" in r.headers:  # a refusal's arrival on the server's clock
            s.server_arrival_ms = float(r.headers["x-tetriopt-arrival-ms"])


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


def server_arrivals(sent: list[Sent], round_ms: float) -> dict[str, float]:
    """Arrivals on the server's clock, shifted by whole rounds to start in the first round.

    The server's rounds start at multiples of round_ms on its own clock, the offline solve's at
    multiples from 0: with send times, each request would meet another phase of the rounds (up
    to a round more or less of waiting, a point or more of attainment on a short run). Refusals
    carry theirs in a header (`X-Tetriopt-Arrival-Ms`); a request without one (an older server, a
    transport error) gets its send time plus the median offset of the stamped ones.
    """
    offsets = [s.server_arrival_ms - s.at_ms for s in sent if s.server_arrival_ms is not None]
    off = float(np.median(offsets)) if offsets else 0.0
    at = {s.id: s.server_arrival_ms if s.server_arrival_ms is not None else s.at_ms + off for s in sent}
    base = (min(at.values(), default=0.0) // round_ms) * round_ms
    return {k: round(v - base, 3) for k, v in at.items()}


def differ(sent: list[Sent], offline: list[dict], arrival: dict[str, float], round_ms: float) -> list[dict]:
    """The requests whose verdict differs between the server and the offline solve of the same
    instance: what each side did with it (status and error on the server, latency on both)."""
    off = {r["id"]: r for r in offline}
    out = []
    for s in sent:
        o = off.get(s.id)
        if o is None or bool(o["met"]) == s.met:
            continue
        fin = o.get("finish_ms")
        out.append({"id": s.id, "job": s.job, "size": f"{s.width}x{s.height}", "scale": s.scale, "slo_ms": s.slo_ms,
                    "arrival_ms": arrival[s.id], "round_phase": round(arrival[s.id] % round_ms / round_ms, 3), "served_met": s.met, "status": s.status,
                    "error": s.error[:120], "served_latency_ms": s.server_latency_ms,
                    "offline_latency_ms": None if fin is None else round(fin - arrival[s.id], 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second")
    ap.add_argument("--duration-s", type=float, default=45.0)
    ap.add_argument("--arrival", choices=["poisson", "bursty"], default="poisson")
    ap.add_argument("--cv", type=float, default=3.0, help="bursty: coefficient of variation of inter-arrivals")
    ap.add_argument("--sizes", default="256x256:1,512x512:1,1024x1024:2,2048x2048:1",
                    help="WxH:weight,... (sizes outside the server's profile are an error)")
    ap.add_argument("--slo-scales", default="1.5:1,3:1,5:1", help="scale:weight,...")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--instance", default=None, help="write the sent workload as a tetriopt instance JSON")
    ap.add_argument("--compare", action="store_true", help="run `tetriopt solve` on --instance and report it")
    ap.add_argument("--deterministic", action="store_true",
                    help="--compare: the offline solve stops CP-SAT on its deterministic clock (a reference that "
                         "does not move with the machine's load; the server's limit is wall-clock)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the report as JSON")
    a = ap.parse_args(argv)
    if a.compare and not a.instance:
        ap.error("--compare needs --instance")

    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    info = httpx.get(a.url + "/v1/stats", headers=headers, timeout=10).json()
    profile = load_profile(info["profile"])
    cluster = make_cluster(info["gpus"], info.get("islands"))
    degrees = tuple(info["degrees"])
    round_us = int(round(info["round_ms"] * 1000))
    rng = random.Random(a.seed)
    sizes = parse_weighted(a.sizes, lambda v: tuple(int(x) for x in v.split("x")))
    scales = parse_weighted(a.slo_scales, float)
    for (w, h), _ in sizes:
        if not profile.covers(w, h):
            ap.error(f"--sizes: {w}x{h} is outside profile {profile.name}")
    sent = []
    for i, t in enumerate(arrivals(a.rate, a.duration_s, a.arrival, a.cv, rng)):
        (w, h), = rng.choices([s for s, _ in sizes], [x for _, x in sizes])
        scale, = rng.choices([s for s, _ in scales], [x for _, x in scales])
        solo = solo_latency_us(profile, cluster, degrees, w, h, a.steps, round_us)
        sent.append(Sent(id=f"q{i:05d}", at_ms=t * 1e3, width=w, height=h, steps=a.steps,
                         slo_ms=round(scale * solo / 1e3, 3), scale=scale))
    before = httpx.get(a.url + "/v1/stats", headers=headers, timeout=10).json()

    async def run() -> float:
        limits = httpx.Limits(max_connections=4096, max_keepalive_connections=256)
        async with httpx.AsyncClient(base_url=a.url, timeout=httpx.Timeout(600.0), limits=limits) as client:
            t0 = time.monotonic()
            await asyncio.gather(*(one(client, s, t0, headers) for s in sent))
            return time.monotonic() - t0

    print(f"sending {len(sent)} requests over {a.duration_s:g}s ({a.arrival}, {a.rate:g}/s) to {a.url} "
          f"[{info['profile']}, {info['gpus']} GPUs, policy {info['policy']}, round {info['round_ms']:g} ms]",
          file=sys.stderr)
    wall = asyncio.run(run())
    stats = httpx.get(a.url + "/v1/stats", headers=headers, timeout=10).json()
    ok = [s for s in sent if s.status == 200]
    met = sum(s.met for s in sent)
    lat = [s.latency_ms for s in ok if s.latency_ms is not None]
    over_slo = [s.latency_ms / s.slo_ms for s in ok if s.latency_ms is not None]
    codes: dict[str, int] = {}
    for s in sent:
        codes[str(s.status or "error")] = codes.get(str(s.status or "error"), 0) + 1
    report: dict[str, Any] = {
        "requests": len(sent), "status_codes": codes, "met": met,
        "slo_attainment": round(met / len(sent), 4) if sent else None,
        "goodput_rps": round(met / wall, 3), "wall_s": round(wall, 2),
        "accepted": len(ok), "rejected_429": codes.get("429", 0),
        "met_of_accepted": round(met / len(ok), 4) if ok else None,
        "latency_ms_p50": pct(lat, 50), "latency_ms_p99": pct(lat, 99),
        "latency_over_slo_p99": round(float(np.percentile(over_slo, 99)), 3) if over_slo else None,
        "by_size_and_scale": {f"{w}x{h} x{sc:g}": {"sent": len(g), "accepted": sum(x.status == 200 for x in g),
                                                   "met": sum(x.met for x in g)}
                              for (w, h, sc) in sorted({(x.width, x.height, x.scale) for x in sent})
                              for g in [[x for x in sent if (x.width, x.height, x.scale) == (w, h, sc)]]},
        "server": {k: stats.get(k) for k in ("policy", "round_ms", "time_limit_ms", "solve_ms_p50", "solve_ms_p99",
                                             "overhead_ms_p50", "overhead_ms_p99", "overhead_ms_max",
                                             "gpu_busy_fraction", "executor_failures")},
        "server_rounds": stats["rounds"] - before["rounds"],
        "server_fallback_rounds": stats["fallback_rounds"] - before["fallback_rounds"],
    }
    if a.instance:
        arrival = server_arrivals(sent, info["round_ms"])
        inst = {"description": f"loadgen: {len(sent)} requests, {a.arrival} {a.rate:g}/s, seed {a.seed}; "
                               "arrivals are the server's arrival stamps (send times where refused)",
                "model": info["profile"] if info["profile"] == profile.name else profile.path, "cluster": {"gpus": info["gpus"], "islands": info["islands"]},
                "round_ms": info["round_ms"], "degrees": degrees,
                "requests": [{"id": s.id, "arrival_ms": arrival[s.id], "deadline_ms": round(arrival[s.id] + s.slo_ms, 3),
                              "width": s.width, "height": s.height, "steps": s.steps} for s in sent]}
        with open(a.instance, "w") as f:
            json.dump(inst, f, indent=1)
        report["instance"] = a.instance
    if a.compare:
        cmd = [sys.executable, "-c", "from tetriopt.cli import main; main()", "solve", a.instance,
               "--policy", info["policy"], "--time-limit-ms", str(info["time_limit_ms"]), "--json", "-",
               "--no-progress", "--batching" if info.get("batching") else "--no-batching",
               "--immediate-start" if info.get("immediate_start") else "--no-immediate-start",
               *(["--deterministic", "--no-timings"] if a.deterministic else [])]
        out = subprocess.run(cmd, capture_output=True, text=True)
        try:
            res = json.loads(out.stdout)
            summ = res["summary"]
        except (ValueError, KeyError):  # the offline solve failed: report why, keep the server's figures
            lines = (out.stderr or out.stdout).strip().splitlines()
            report["solve"] = {"error": f"tetriopt solve exited {out.returncode}: {lines[-1] if lines else ''}"[:300]}
        else:
            report["solve"] = {k: summ[k] for k in ("slo_attainment", "met", "latency_ms_p50", "latency_ms_p99",
                                                    "rounds", "fallback_rounds")}
            report["solve"]["deterministic"] = a.deterministic
            report["attainment_gap_points"] = round(100 * (report["slo_attainment"] - summ["slo_attainment"]), 2)
            report["differ"] = differ(sent, res["requests"], arrival, info["round_ms"])
    text = json.dumps(report, indent=1)
    print(text)
    if a.json_out:  # the file also keeps each request's fate, to compare with the offline solve's
        report["sent"] = [{"id": s.id, "status": s.status, "met": s.met, "server_latency_ms": s.server_latency_ms,
                           "error": s.error} for s in sent]
        with open(a.json_out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
