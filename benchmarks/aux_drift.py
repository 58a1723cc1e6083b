"""Whether the plan's start times hold on the runtime now that the plan charges encode and decode.

The runtime encodes a new request's prompt on the leader of its first set inside its first task
(the set waits for the broadcast) and decodes a finished one on the leader of its last set inside
its last task; each GPU runs its tasks back to back. The plan charges both to those assignments
(`RoundState.aux_us`, in every duration: `tetriopt.plan.decision_us`), so a task should start
when the plan says. This checks it on the tiny whole pipeline (CLIP + T5 + VAE + FLUX transformer
from `tiny_pipeline`, CPU, 2 workers):

1. calibrate: run the round below `--calibrate` times and take the medians of a step at each
   degree, of an encode and of a decode, as a cost profile (what `tetriopt profile` measures);
2. plan the round with `make_plan` on that profile twice: charging encode/decode (today) and not
   (the plan before: `aux=False` zeroes them in the profile);
3. run the charged plan `--repeats` times and compare each task's start (from the first task's)
   with both plans: `delay_ms` is the unplanned delay now, `delay_uncharged_ms` what it was.

    python benchmarks/aux_drift.py [--size 256] [--steps 4] [--calibrate 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from tetriopt import RequestState, RoundState, make_cluster
from tetriopt.plan import RoundPlan, make_plan
from tetriopt.profile import CostProfile, ProfilePoint, tokens
from tetriopt_runtime import GenRequest, ModelSpec, Runtime
from tetriopt_runtime.tiny_pipeline import write_tiny_pipeline

# per GPU three requests that start and finish in this round, and one across both GPUs
ROUND = [("a0", (0,)), ("a1", (1,)), ("b0", (0,)), ("b1", (1,)), ("c0", (0,)), ("c1", (1,)), ("w", (0, 1))]


def execute(rt: Runtime, tag: str, rounds, size: int, steps: int) -> list[dict]:
    """Run one round; per task of ROUND (by request): start from the first task's (ms), its step
    time per step, encode and decode (ms)."""
    reqs = [GenRequest(f"{rid}-{tag}", f"a photo of {rid}", size, size, steps, seed=i) for i, (rid, _) in enumerate(ROUND)]
    res = rt.generate(reqs, rounds(reqs))
    t0 = min(t["began_s"] for t in res.timings)
    by_req = {t["request"]: t for t in res.timings}
    return [dict(start_ms=(by_req[r.id]["began_s"] - t0) * 1e3, step_ms=sum(by_req[r.id]["step_ms"]) / steps,
                 encode_ms=by_req[r.id]["encode_ms"], decode_ms=by_req[r.id]["decode_ms"]) for r in reqs]


def profile_of(runs: list[list[dict]], size: int) -> CostProfile:
    """The calibration runs' medians as a one-point cost profile (degrees 1 and 2)."""
    med = lambda xs: statistics.median(xs)  # noqa: E731
    step = {k: med([row["step_ms"] for run in runs for row, (_, g) in zip(run, ROUND) if len(g) == k]) for k in (1, 2)}
    us = lambda ms: int(round(ms * 1e3))  # noqa: E731
    point = ProfilePoint(tokens=tokens(size, size), width=size, height=size, step_us={k: us(v) for k, v in step.items()},
                         vae_decode_us=us(med([row["decode_ms"] for run in runs for row in run])))
    return CostProfile(name="tiny-flux-cpu-measured", model="tiny-flux", gpu="cpu (2 workers)", degrees=(1, 2),
                       points=(point,), text_encode_us=us(med([row["encode_ms"] for run in runs for row in run])),
                       default_round_us=60_000_000)


def plan_round(profile: CostProfile, reqs, steps: int, aux: bool = True) -> RoundPlan:
    if not aux:
        profile = replace(profile, text_encode_us=0, _memo={},
                          points=tuple(replace(p, vae_decode_us=0) for p in profile.points))
    state = RoundState(now_us=0, round_us=profile.default_round_us, cluster=make_cluster(2), profile=profile,
                       degrees=(1, 2), requests=tuple(RequestState(r.id, r.width, r.height, steps, 10**12)
                                                      for r in reqs))
    return make_plan(state, [(r.id, g, steps) for r, (_, g) in zip(reqs, ROUND)], "aux_drift", keep_order=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--calibrate", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    plain = lambda reqs: [[(r.id, g, a.steps) for r, (_, g) in zip(reqs, ROUND)]]  # noqa: E731
    with tempfile.TemporaryDirectory() as d:
        folder = write_tiny_pipeline("flux", Path(d) / "flux")
        with Runtime(ModelSpec(kind="flux", path=str(folder), dtype="float32"), 2, device="cpu", sp_backend="own") as rt:
            execute(rt, "warm", plain, a.size, a.steps)
            prof = profile_of([execute(rt, f"cal{i}", plain, a.size, a.steps) for i in range(a.calibrate)], a.size)
            plans = {}

            def charged(reqs):
                plans["now"], plans["before"] = plan_round(prof, reqs, a.steps), plan_round(prof, reqs, a.steps, False)
                return [plans["now"]]

            runs = []
            for i in range(a.repeats):
                run = execute(rt, f"run{i}", charged, a.size, a.steps)
                planned = {x.request: x.start_us / 1e3 for x in plans["now"].assignments}
                before = {x.request: x.start_us / 1e3 for x in plans["before"].assignments}
                ids = [f"{rid}-run{i}" for rid, _ in ROUND]
                runs.append([dict(row, planned_ms=planned[r], uncharged_ms=before[r]) for row, r in zip(run, ids)])
    print(json.dumps(dict(profile=dict(step_ms={k: v / 1e3 for k, v in prof.points[0].step_us.items()},
                                       encode_ms=prof.text_encode_us / 1e3, decode_ms=prof.points[0].vae_decode_us / 1e3))))
    med = lambda i, k: statistics.median(r[i][k] for r in runs)  # noqa: E731
    for i, (rid, gpus) in enumerate(ROUND):
        print(json.dumps(dict(task=rid, gpus=list(gpus), planned_start_ms=round(med(i, "planned_ms"), 1),
                              start_ms=round(med(i, "start_ms"), 1),
                              delay_ms=round(statistics.median(r[i]["start_ms"] - r[i]["planned_ms"] for r in runs), 1),
                              uncharged_start_ms=round(med(i, "uncharged_ms"), 1),
                              delay_uncharged_ms=round(statistics.median(r[i]["start_ms"] - r[i]["uncharged_ms"]
                                                                         for r in runs), 1))))


if __name__ == "__main__":
    main()
