"""An independent check of a solve result (its JSON form) against the instance.

It recomputes everything from the instance and the profile, sharing nothing with the policies
or the simulator beyond the profile lookup, so a bug there cannot hide itself here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .instance import Instance


def validate_result(inst: Instance, out: dict[str, Any]) -> list[str]:
    """Every violation found (empty when the plan is valid)."""
    errs: list[str] = []
    reqs = inst.by_id
    R = inst.round_us
    per_gpu: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    per_req: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    gpu_us = 0
    for i, a in enumerate(out["assignments"]):
        ids = [a["request"], *a.get("batch", [])]
        rid, gpus, steps = ids[0], tuple(a["gpus"]), a["steps"]
        start, end = round(a["start_ms"] * 1000), round(a["end_ms"] * 1000)
        where = f"assignment {i} ({rid}{' batch ' + ','.join(ids[1:]) if len(ids) > 1 else ''})"
        unknown = [q for q in ids if q not in reqs]
        if unknown:
            errs.append(f"{where}: unknown request {unknown[0]}")
            continue
        r = reqs[rid]
        k = len(gpus)
        if len(set(gpus)) != k or k not in inst.degrees:
            errs.append(f"{where}: degree {k} / GPUs {gpus} not allowed (degrees {inst.degrees})")
            continue
        if len(set(ids)) != len(ids):
            errs.append(f"{where}: a request twice in one batch")
        if any((reqs[q].width, reqs[q].height) != (r.width, r.height) for q in ids):
            errs.append(f"{where}: a batch mixes resolutions")
            continue
        if len(ids) not in inst.profile.batch_sizes:
            errs.append(f"{where}: batch of {len(ids)} not priced by the profile {list(inst.profile.batch_sizes)}")
            continue
        if gpus not in inst.cluster.sets(k):
            errs.append(f"{where}: GPUs {gpus} are not an aligned set of the cluster")
        if steps < 1:
            errs.append(f"{where}: {steps} steps")
        step = inst.profile.step_us(r.width, r.height, k, len(ids))
        if end - start != steps * step:
            errs.append(f"{where}: lasts {end - start} us, profile says {steps} x {step} us")
        rd = a["round"]
        if not (rd * R <= start and end <= (rd + 1) * R):
            errs.append(f"{where}: [{start}, {end}] outside round {rd} [{rd * R}, {(rd + 1) * R}]")
        for q in ids:
            if start < reqs[q].arrival_us:
                errs.append(f"{where}: starts at {start} before {q}'s arrival {reqs[q].arrival_us}")
            # immediate starts may begin mid-round (after arrival, checked above); planned work
            # only in rounds that began after the request arrived
            if rd * R < reqs[q].arrival_us and not a.get("immediate"):
                errs.append(f"{where}: planned in round {rd}, which began before {q} arrived")
            per_req[q].append((start, end, steps))
        for g in gpus:
            per_gpu[g].append((start, end, rid))
        gpu_us += (end - start) * k
    for g, ivs in per_gpu.items():
        ivs.sort()
        for (s1, e1, r1), (s2, e2, r2) in zip(ivs, ivs[1:]):
            if s2 < e1:
                errs.append(f"GPU {g} double-booked: {r1} [{s1}, {e1}] and {r2} [{s2}, {e2}]")
    finish: dict[str, int] = {}
    for rid, r in reqs.items():
        ivs = sorted(per_req.get(rid, []))
        for (s1, e1, _), (s2, _, _) in zip(ivs, ivs[1:]):
            if s2 < e1:
                errs.append(f"request {rid} runs twice at once at {s2}")
        done = sum(n for _, _, n in ivs)
        if done != r.steps:
            errs.append(f"request {rid}: {done} of {r.steps} steps done")
        elif ivs:
            finish[rid] = max(e for _, e, _ in ivs) + inst.profile.vae_decode_us(r.width, r.height)
    seen = set()
    for o in out["requests"]:
        rid = o["id"]
        seen.add(rid)
        if rid not in finish:
            continue
        if round(o["finish_ms"] * 1000) != finish[rid]:
            errs.append(f"request {rid}: finish {o['finish_ms']} ms, plan says {finish[rid] / 1e3} ms")
        if o["met"] != (finish[rid] <= reqs[rid].deadline_us):
            errs.append(f"request {rid}: met={o['met']} but finish {finish[rid]} vs deadline {reqs[rid].deadline_us}")
    if seen != set(reqs):
        errs.append(f"requests listed {len(seen)} != instance {len(reqs)}")
    s = out["summary"]
    met = sum(1 for o in out["requests"] if o["met"])
    if s["requests"] != len(reqs) or s["met"] != met:
        errs.append(f"summary requests/met {s['requests']}/{s['met']} != lists {len(reqs)}/{met}")
    if reqs and abs(s["slo_attainment"] - met / len(reqs)) > 1e-6:
        errs.append(f"summary slo_attainment {s['slo_attainment']} != {met / len(reqs)}")
    if abs(s["gpu_hours"] - gpu_us / 3.6e9) > 1e-5:
        errs.append(f"summary gpu_hours {s['gpu_hours']} != {gpu_us / 3.6e9}")
    return errs
