"""Measure a cost profile (per-step latency per resolution x degree) in tetriopt's models/ format.

Each (resolution, degree) is one request run on ranks 0..k-1 through the same runtime path the
scheduler's plans use; the first `warmup` steps are dropped and the median of the rest is kept.
Text encoding and VAE decoding are timed where they run: on the leader of the request's first /
last GPU set (default), or in the driver when an aux device is given. With `batches`, each
(resolution, degree, batch size B) is also B same-size requests run as one batched assignment
(latents stacked, per-sample timesteps: what the scheduler's batches run), giving the profile's
`batches` entries (issue 13).
"""

from __future__ import annotations

import platform
import statistics
from typing import Any, Optional, Sequence

import torch

from .driver import GenRequest, Runtime
from .models import ModelSpec

CPU_RESOLUTIONS = (64, 128, 192, 256)
GPU_RESOLUTIONS = (256, 512, 768, 1024, 1536, 2048)


def degrees_for(gpus: int) -> list[int]:
    out, k = [], 1
    while k <= gpus:
        out.append(k)
        k *= 2
    return out


def _hardware(device: str, gpus: int) -> str:
    if device == "cuda":
        return f"{gpus}x {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu}, {gpus} gloo worker processes"


def _software() -> str:
    import diffusers

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"diffusers {diffusers.__version__}"]
    if torch.cuda.is_available():
        parts.append(f"cuda {torch.version.cuda}, nccl {'.'.join(map(str, torch.cuda.nccl.version()))}")
    return ", ".join(parts)


def measure_profile(spec: ModelSpec, device: str, gpus: int, resolutions: Sequence[int], warmup: int = 2,
                    timed: int = 3, name: Optional[str] = None, round_ms: Optional[float] = None,
                    sp_backend: str = "auto", timeout_s: float = 300.0, aux_device: Optional[str] = None,
                    compile: bool = False, batches: Sequence[int] = ()) -> dict[str, Any]:
    """Run the measurements and return the profile as a JSON-ready dict."""
    degrees = degrees_for(gpus)
    steps = warmup + timed
    reqs, rounds = [], []
    for px in resolutions:
        for k in degrees:
            for b in (1, *batches):
                ids = tuple(f"{px}-{k}" + (f"-b{b}-{j}" if b > 1 else "") for j in range(b))
                reqs.extend(GenRequest(rid, f"profile {px}px", px, px, steps, seed=px + j) for j, rid in enumerate(ids))
                rounds.append([(ids if b > 1 else ids[0], tuple(range(k)), steps)])
    where = f"driver ({aux_device})" if aux_device else "the request's GPU-set leader"
    with Runtime(spec, gpus, device=device, sp_backend=sp_backend, timeout_s=timeout_s, aux_device=aux_device,
                 compile=compile) as rt:
        rt.generate(reqs[:1], rounds[:1])  # warm the processes (allocator, kernels) once
        res = rt.generate(reqs, rounds)
        backend = rt.sp_backend
        mem = [w["gpu_mem_gib"] for w in rt.worker_info if "gpu_mem_gib" in w]
        startup = (f"{rt.startup_s:.1f} s for {gpus} workers (communicators warmed in "
                   f"{max(w['comm_warm_s'] for w in rt.worker_info):.2f} s)"
                   + (f"; GPU memory per rank after start-up {max(mem):.2f} GiB" if mem else ""))
    by_req = {t["request"]: t for t in res.timings}
    what = f"median of {timed} steps after {warmup} warm-up steps"
    points = []
    for px in resolutions:
        step_ms, src = {}, {}
        for k in degrees:
            ms = statistics.median(by_req[f"{px}-{k}"]["step_ms"][warmup:])
            step_ms[str(k)] = round(ms, 3)
            src[str(k)] = f"measured: tetriopt profile ({device}, {what})"
        point = dict(width=px, height=px, step_ms=step_ms,
                     vae_decode_ms=round(statistics.median(res.decode_ms[f"{px}-{k}"] for k in degrees), 3),
                     source={**src, "vae_decode_ms": f"measured: decode on {where} ({device})"})
        if batches:  # every member's task reports the batch's shared steps: read the first's
            point["batches"] = {str(b): dict(
                step_ms={str(k): round(statistics.median(by_req[f"{px}-{k}-b{b}-0"]["step_ms"][warmup:]), 3)
                         for k in degrees},
                source={str(k): f"measured: tetriopt profile --batches ({device}, {b} stacked same-size latents, "
                                f"{what})" for k in degrees}) for b in batches}
        points.append(point)
    slowest = max(p["step_ms"]["1"] for p in points)
    model = spec.kind
    return dict(
        name=name or f"{model}-{device}{gpus}",
        model=model,
        gpu=_hardware(device, gpus),
        degrees=degrees,
        default_round_ms=round(round_ms if round_ms else 5 * slowest, 3),
        text_encode_ms=round(statistics.median(res.encode_ms.values()), 3),
        points=points,
        sources=dict(
            hardware=_hardware(device, gpus),
            software=_software(),
            model=spec.name(),
            dtype=spec.dtype,
            sp_attention=backend,
            runtime_startup=startup,
            method=f"tetriopt profile: one request per (resolution, degree) on ranks 0..k-1"
                   + (f", and batches of {', '.join(map(str, batches))} same-size requests" if batches else "")
                   + f", {what}"
                   f"{', torch.compile' if compile else ', eager'}; text encode and decode timed on {where}",
            default_round_ms=("given by --round-ms" if round_ms else
                              "5 x the slowest degree-1 step measured"),
        ),
    )
