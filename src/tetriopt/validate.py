"""An independent check of a solve result (its JSON form) against the instance.

It recomputes everything from the instance and the profile, sharing nothing with the policies
or the simulator beyond the profile lookup (and unit conversions), so a bug there cannot hide
itself here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .instance import Instance
from .units import gpu_hours, ms_to_us, us_to_ms


@dataclass
class _Tally:
    """What the assignments add up to: intervals per GPU and per request, GPU-time."""

    per_gpu: dict[int, list[tuple[int, int, str]]] = field(default_factory=lambda: defaultdict(list))
    per_req: dict[str, list[tuple[int, int, int]]] = field(default_factory=lambda: defaultdict(list))
    gpu_us: int = 0


def validate_result(inst: Instance, out: dict[str, Any]) -> list[str]:
    """Every violation found (empty when the plan is valid)."""
    errs: list[str] = []
    tally = _Tally()
    aux = _aux(inst, out["assignments"])
    for i, a in enumerate(out["assignments"]):
        _check_assignment(inst, i, a, tally, errs, aux.get(i, 0))
    for g, ivs in tally.per_gpu.items():
        ivs.sort()
        for (s1, e1, r1), (s2, e2, r2) in zip(ivs, ivs[1:]):
            if s2 < e1:
                errs.append(f"GPU {g} double-booked: {r1} [{s1}, {e1}] and {r2} [{s2}, {e2}]")
    finish = _finishes(inst, tally, errs)
    _check_outcomes(inst, out, finish, errs)
    _check_summary(inst, out, tally.gpu_us, errs)
    return errs


def _aux(inst: Instance, assignments: list[dict[str, Any]]) -> dict[int, int]:
    """Per assignment index, the encode / decode it runs besides its steps: each member's text
    encode on its first assignment (by start), its VAE decode on the one reaching its step count."""
    per_req: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for i, a in enumerate(assignments):
        for q in [a["request"], *a.get("batch", [])]:
            per_req[q].append((ms_to_us(a["start_ms"]), i, a["steps"]))
    out: dict[int, int] = defaultdict(int)
    for q, runs in per_req.items():
        r = inst.by_id.get(q)
        if r is None:
            continue
        runs.sort()
        out[runs[0][1]] += inst.profile.text_encode_us
        done = 0
        for _, i, n in runs:
            done += n
            if done == r.steps:
                out[i] += inst.profile.vae_decode_us(r.width, r.height)
    return out


def _check_assignment(inst: Instance, i: int, a: dict[str, Any], tally: _Tally, errs: list[str],
                      aux: int) -> None:
    reqs, R = inst.by_id, inst.round_us
    ids = [a["request"], *a.get("batch", [])]  # a batch: every member shares every step
    rid, gpus, steps = ids[0], tuple(a["gpus"]), a["steps"]
    start, end = ms_to_us(a["start_ms"]), ms_to_us(a["end_ms"])
    where = f"assignment {i} ({rid}{' batch ' + ','.join(ids[1:]) if len(ids) > 1 else ''})"
    unknown = [q for q in ids if q not in reqs]
    if unknown:
        errs.append(f"{where}: unknown request {unknown[0]}")
        return
    r = reqs[rid]
    k = len(gpus)
    if len(set(gpus)) != k or k not in inst.degrees:
        errs.append(f"{where}: degree {k} / GPUs {gpus} not allowed (degrees {inst.degrees})")
        return
    if len(set(ids)) != len(ids):
        errs.append(f"{where}: a request twice in one batch")
    if any((reqs[q].width, reqs[q].height) != (r.width, r.height) for q in ids):
        errs.append(f"{where}: a batch mixes resolutions")
        return
    if len(ids) not in inst.profile.batch_sizes:
        errs.append(f"{where}: batch of {len(ids)} not priced by the profile {list(inst.profile.batch_sizes)}")
        return
    if gpus not in inst.cluster.sets(k):
        errs.append(f"{where}: GPUs {gpus} are not an aligned set of the cluster")
    if steps < 1:
        errs.append(f"{where}: {steps} steps")
    step = inst.profile.step_us(r.width, r.height, k, len(ids))
    if end - start != steps * step + aux:
        errs.append(f"{where}: lasts {end - start} us, profile says {steps} x {step} us + {aux} us encode/decode")
    rd = a["round"]
    if not (rd * R <= start and end <= (rd + 1) * R):
        errs.append(f"{where}: [{start}, {end}] outside round {rd} [{rd * R}, {(rd + 1) * R}]")
    for q in ids:
        if start < reqs[q].arrival_us:
            errs.append(f"{where}: starts at {start} before {q}'s arrival {reqs[q].arrival_us}")
        # an immediate start may begin mid-round after its arrival (checked above); planned work
        # only in rounds that began after the request arrived
        if rd * R < reqs[q].arrival_us and not a.get("immediate"):
            errs.append(f"{where}: planned in round {rd}, which began before {q} arrived")
        tally.per_req[q].append((start, end, steps))
    for g in gpus:
        tally.per_gpu[g].append((start, end, rid))
    tally.gpu_us += (end - start) * k


def _finishes(inst: Instance, tally: _Tally, errs: list[str]) -> dict[str, int]:
    """Each fully run request's finish (its last assignment's end, which holds its decode); flags
    overlaps and step counts."""
    finish: dict[str, int] = {}
    for rid, r in inst.by_id.items():
        ivs = sorted(tally.per_req.get(rid, []))
        for (s1, e1, _), (s2, _, _) in zip(ivs, ivs[1:]):
            if s2 < e1:
                errs.append(f"request {rid} runs twice at once at {s2}")
        done = sum(n for _, _, n in ivs)
        if done != r.steps:
            errs.append(f"request {rid}: {done} of {r.steps} steps done")
        elif ivs:
            finish[rid] = max(e for _, e, _ in ivs)
    return finish


def _check_outcomes(inst: Instance, out: dict[str, Any], finish: dict[str, int], errs: list[str]) -> None:
    reqs = inst.by_id
    seen = set()
    for o in out["requests"]:
        rid = o["id"]
        seen.add(rid)
        if rid not in finish:
            continue
        if ms_to_us(o["finish_ms"]) != finish[rid]:
            errs.append(f"request {rid}: finish {o['finish_ms']} ms, plan says {us_to_ms(finish[rid])} ms")
        if o["met"] != (finish[rid] <= reqs[rid].deadline_us):
            errs.append(f"request {rid}: met={o['met']} but finish {finish[rid]} vs deadline {reqs[rid].deadline_us}")
    if seen != set(reqs):
        errs.append(f"requests listed {len(seen)} != instance {len(reqs)}")


def _check_summary(inst: Instance, out: dict[str, Any], gpu_us: int, errs: list[str]) -> None:
    n = len(inst.by_id)
    s = out["summary"]
    met = sum(1 for o in out["requests"] if o["met"])
    if s["requests"] != n or s["met"] != met:
        errs.append(f"summary requests/met {s['requests']}/{s['met']} != lists {n}/{met}")
    if n and abs(s["slo_attainment"] - met / n) > 1e-6:
        errs.append(f"summary slo_attainment {s['slo_attainment']} != {met / n}")
    if abs(s["gpu_hours"] - gpu_hours(gpu_us)) > 1e-5:
        errs.append(f"summary gpu_hours {s['gpu_hours']} != {gpu_hours(gpu_us)}")
