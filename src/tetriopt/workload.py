"""Seeded workload generation in the TetriServe paper's set-up (sec. 6.1).

Arrivals: Poisson at a rate (requests per minute) or bursty (gamma inter-arrival times with a
given coefficient of variation; CV 1 is Poisson). Sizes: the paper's four square resolutions,
"uniform" (equal shares) or "skewed" (p proportional to exp(L / Lmax), L = H*W/256), or a
user-given mix. Deadline = arrival + SLO scale x per-resolution target.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .errors import InputError

SIZES = (256, 512, 1024, 2048)
MAX_STEPS = 1000  # the instance schema's limits
MAX_ROUND_MS = 3_600_000
MAX_TIME_MS = 1e12

# Per-resolution SLO targets in ms. FLUX: the paper's (sec. 6.1). SD3: the paper gives none; ours
# keep FLUX's ratio of target to the fastest isolated latency (about 1.5-2.4x) on the A40 profile.
TARGETS_MS = {
    "flux.1-dev": {256: 1500, 512: 2000, 1024: 3000, 2048: 5000},
    "sd3-medium": {256: 1500, 512: 2000, 1024: 4000, 2048: 13000},
}


def size_mix(name_or_mix: str | Mapping[int, float]) -> dict[int, float]:
    if isinstance(name_or_mix, Mapping):
        mix = {int(k): float(v) for k, v in name_or_mix.items()}
    elif name_or_mix == "uniform":
        mix = {s: 1.0 for s in SIZES}
    elif name_or_mix == "skewed":
        lmax = max(SIZES) ** 2 / 256
        mix = {s: math.exp((s * s / 256) / lmax) for s in SIZES}
    else:
        try:  # "256:0.5,1024:0.5"
            mix = {int(a): float(b) for a, b in (p.split(":") for p in name_or_mix.split(","))}
        except ValueError:
            raise InputError("mix", name_or_mix, "use uniform, skewed or SIZE:WEIGHT,...") from None
    if not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise InputError("mix", name_or_mix, "weights must be non-negative with a positive sum")
    total = sum(mix.values())
    return {k: v / total for k, v in sorted(mix.items())}


def generate(model: str, gpus: int, n: int, rate_per_min: float, mix: Any = "uniform", slo_scale: float = 1.0,
             steps: int = 20, seed: int = 0, cv: float = 1.0, islands: list[list[int]] | None = None,
             targets_ms: Mapping[int, float] | None = None, round_ms: float | None = None,
             target_key: str | None = None) -> dict[str, Any]:
    """An instance as its JSON dict (write it with json.dump, load it with parse_instance)."""
    if n < 1:
        raise InputError("n", n, "need at least one request")
    for field, v in (("rate", rate_per_min), ("cv", cv), ("slo_scale", slo_scale)):
        if not (math.isfinite(v) and v > 0):  # NaN fails every comparison: test it by name
            raise InputError(field, v, "must be a positive finite number")
    if round_ms is not None and not (math.isfinite(round_ms) and 0 < round_ms <= MAX_ROUND_MS):
        raise InputError("round_ms", round_ms, f"must be a positive finite number of ms up to {MAX_ROUND_MS:g}")
    if not 1 <= steps <= MAX_STEPS:
        raise InputError("steps", steps, f"must be 1..{MAX_STEPS} (the instance schema's range)")
    if islands:
        sizes = {len(i) for i in islands}
        size = sizes.pop() if len(sizes) == 1 else 0
        if size & (size - 1) or size == 0:
            raise InputError("islands", [len(i) for i in islands],
                             "islands must have one power-of-two size dividing the GPU count "
                             "(otherwise some SP degrees have no aligned GPU set)")
    from .profile import load_profile

    prof = load_profile(model)
    if targets_ms is None:
        key = target_key or prof.model
        if key not in TARGETS_MS:
            raise InputError("targets", key, f"no built-in SLO targets for this model; give a table ({list(TARGETS_MS)})")
        targets_ms = TARGETS_MS[key]
    mixp = size_mix(mix)
    for s in mixp:
        if s not in targets_ms:
            raise InputError("mix", s, f"no SLO target for size {s}")
    rng = np.random.default_rng(seed)
    mean = 60_000.0 / rate_per_min
    if n * mean > MAX_TIME_MS / 2:
        raise InputError("rate", rate_per_min, f"{n} arrivals at this rate span beyond the schema's "
                         f"{MAX_TIME_MS:g} ms clock")
    shape = 1.0 / (cv * cv)
    gaps = rng.gamma(shape, mean / shape, size=n)
    sizes = rng.choice(list(mixp), p=list(mixp.values()), size=n)
    t = 0.0
    reqs = []
    for i in range(n):
        t += float(gaps[i])
        arr = round(t, 1)
        s = int(sizes[i])
        reqs.append({"id": f"r{i:04d}", "arrival_ms": arr, "deadline_ms": round(arr + slo_scale * targets_ms[s], 1),
                     "width": s, "height": s, "steps": steps})
    out: dict[str, Any] = {
        "description": (f"{n} requests, {prof.model} on {gpus} GPUs, rate {rate_per_min}/min (CV {cv}), "
                        f"mix {mix}, SLO scale {slo_scale}, {steps} steps, seed {seed}"),
        "model": model, "cluster": {"gpus": gpus}, "requests": reqs}
    if islands:
        out["cluster"]["islands"] = islands
    if round_ms:
        out["round_ms"] = round_ms
    return out
