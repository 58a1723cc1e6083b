"""`tetriopt profile`: measure per-step latency by resolution x SP degree (x batch size, with
--batches) into a profile JSON.

torch and the runtime are imported inside the command, so `tetriopt` works without them.
"""

from __future__ import annotations

import json
import os

import click

from ..errors import InputError


def _int_list(text: str | None, field: str, what: str, ok, rule: str) -> list[int]:
    """Comma-separated integers, sorted and distinct, each passing `ok` ([] when not given)."""
    if not text:
        return []
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise InputError(field, text, f"expected comma-separated {what}") from None
    if not out or not all(ok(v) for v in out):
        raise InputError(field, text, rule)
    return out


def _resolutions(text: str | None, device: str) -> list[int]:
    return _int_list(text, "resolutions", "pixel sizes, e.g. 64,128", lambda r: r > 0 and r % 16 == 0,
                     "sizes must be positive multiples of 16 px")


def _batches(text: str | None) -> list[int]:
    return _int_list(text, "batches", "batch sizes, e.g. 2,4", lambda b: b >= 2,
                     "batch sizes must be at least 2 (batch 1 is always measured)")


@click.command("profile")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--gpus", type=int, default=None, help="workers (GPUs, or CPU processes); power of two. "
              "Default: 2 on cpu, all visible GPUs on cuda.")
@click.option("--model", "kind", type=click.Choice(["tiny-flux", "tiny-sd3", "flux", "sd3"]), default=None,
              help="default: tiny-flux on cpu, flux on cuda")
@click.option("--path", "--model-path", "path", default=None,
              help="diffusers model folder (flux / sd3); default $TETRIOPT_MODEL_PATH")
@click.option("--aux-device", default=None, help="run text encoders and VAE in the calling process on this "
              "device (cpu, cuda:0); default: on the leader GPU of each request's first / last set")
@click.option("--sp-backend", type=click.Choice(["auto", "own", "torch", "yunchang", "xfuser"]), default="auto",
              show_default=True, help="SP attention: own (torch all-to-all; CPU/gloo), yunchang, xfuser (CUDA)")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the transformer blocks")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="default: float32 on cpu, bfloat16 on cuda")
@click.option("--resolutions", default=None, help="square sizes in px, e.g. 64,128,256")
@click.option("--batches", default=None,
              help="also measure batches of these sizes (e.g. 2,4): B same-size requests sharing every step "
                   "(the profile's `batches` entries, which --batching schedules with)")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--steps", "timed", type=int, default=3, show_default=True, help="timed steps per point")
@click.option("--name", default=None, help="profile name (default: MODEL-DEVICEgpus)")
@click.option("--round-ms", type=float, default=None, help="default_round_ms (default: 5x slowest 1-GPU step)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="profile JSON to write")
def profile(device, gpus, kind, path, aux_device, sp_backend, compile_, dtype, resolutions, batches, warmup, timed,
            name, round_ms, out) -> None:
    """Measure a cost profile for the scheduler (loadable by tetriopt.profile.load_profile)."""
    sizes = _batches(batches)  # before torch loads: a bad value costs no start-up
    try:
        import torch
        from tetriopt_runtime import ModelSpec
        from tetriopt_runtime.profiler import CPU_RESOLUTIONS, GPU_RESOLUTIONS, measure_profile
    except ImportError as e:
        raise InputError("runtime", str(e), "install the runtime extra: pip install -e '.[runtime]'") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", device, "CUDA is not available on this machine")
    if gpus is None:
        gpus = 2 if device == "cpu" else torch.cuda.device_count()
    if gpus < 1 or gpus & (gpus - 1):
        raise InputError("gpus", gpus, "must be a power of two >= 1")
    if device == "cuda" and gpus > torch.cuda.device_count():
        raise InputError("gpus", gpus, f"only {torch.cuda.device_count()} GPUs visible")
    if warmup < 0 or timed < 1:
        raise InputError("steps", (warmup, timed), "need warmup >= 0 and at least one timed step")
    kind = kind or ("tiny-flux" if device == "cpu" else "flux")
    path = path or os.environ.get("TETRIOPT_MODEL_PATH")
    if not kind.startswith("tiny-") and not path:
        raise InputError("model-path", path, f"--model {kind} needs --model-path or $TETRIOPT_MODEL_PATH "
                         "(a local diffusers folder)")
    dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
    res = _resolutions(resolutions, device) or list(CPU_RESOLUTIONS if kind.startswith("tiny-") else GPU_RESOLUTIONS)
    bad = [r for r in res if ((r // 16) ** 2) % gpus]
    if bad:
        raise InputError("resolutions", bad, f"token counts must split evenly over {gpus} workers")
    spec = ModelSpec(kind=kind, path=path, dtype=dtype)
    data = measure_profile(spec, device, gpus, res, warmup=warmup, timed=timed, name=name, round_ms=round_ms,
                           sp_backend=sp_backend, aux_device=aux_device, compile=compile_, batches=sizes)
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    click.echo(f"wrote {out}: {len(data['points'])} resolutions x degrees {data['degrees']}"
               + (f" x batches {[1, *sizes]}" if sizes else ""))
