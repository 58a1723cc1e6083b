"""The runtime on one lent GPU, in one prepared command (issue 14 item 9); `--dry-run` runs the same
code paths on CPU with tiny models (CI runs it: tests/runtime/test_gpu_check.py).

Parts (each prints one JSON line; `--out FILE` keeps them):
  a  one rank, FLUX.1-dev's full transformer config with random weights, bf16, 1024 px, 28 steps:
     median step time of the runtime / bare diffusers' transformer forward measured in this run,
     eager and compiled; GPU memory and start-up time of the worker.
  b  degree switching 1 -> 2 -> 4 with 4 ranks on the one GPU (gloo; NCCL refuses two ranks on a
     GPU; hand-offs staged through host memory): final latent vs degree 1 throughout, per SP
     backend (own, yunchang, xfuser), and the hand-off time per switch for a 1024 px latent as a
     share of a 1024 px step (an upper bound: host-staged gloo, not NVLink).
  c  the server's cuda executor end to end on a tiny model: two distinct PNGs, no executor failure.
  d  text encoding (CLIP-L + T5-XXL, 512 tokens) and VAE decode (1024 px) with FLUX.1-dev's
     configs and random weights on the GPU, against the profile's text_encode_ms / vae_decode_ms.

On a lent GPU machine (torch with CUDA, nothing else; no network), from the repository root:
    pip download ... -d .whl (see docs/runtime.md for the list)       # here, once
    pip install --no-index --no-deps --target /tmp/site .whl/*.whl    # there
    ln -sfn "$PWD/runtime" /tmp/site/tetriopt_runtime
    HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/site:src python benchmarks/gpu_check.py --out gpu-check.jsonl
The whole check is sized for under 8 minutes on one H200 (`--budget-s` skips what would not fit).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT):  # run from a checkout without installing
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
if "tetriopt_runtime" not in sys.modules:
    try:
        import tetriopt_runtime  # noqa: F401
    except ImportError:  # not installed: the checkout's runtime/ folder is the package
        import importlib.util

        spec = importlib.util.spec_from_file_location("tetriopt_runtime", ROOT / "runtime" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "runtime")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["tetriopt_runtime"] = mod
        spec.loader.exec_module(mod)

import torch  # noqa: E402

from tetriopt_runtime import GenRequest, ModelSpec, Runtime  # noqa: E402
from tetriopt_runtime.models import TINY_FLUX_CONFIG, Aux, tokens_of  # noqa: E402
from tetriopt_runtime.sp_attention import xfuser_available, yunchang_available  # noqa: E402
from tetriopt_runtime.tiny_pipeline import FLUX_DEV_TRANSFORMER, build_flux, build_flux_dev_aux  # noqa: E402
from tetriopt_runtime.worker import compile_blocks  # noqa: E402

PROFILE = "flux.1-dev-h200"  # the profile whose measured figures part a and d are set against


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = args.dry_run
        self.device = "cpu" if self.dry else "cuda"
        self.t0 = time.monotonic()
        self.out = open(args.out, "a") if args.out else None
        self.lines: list[dict[str, Any]] = []

    def emit(self, **row: Any) -> None:
        row = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": self.dry,
               "elapsed_s": round(time.monotonic() - self.t0, 1), **row}
        line = json.dumps(row)
        print(line, flush=True)
        self.lines.append(row)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def _median_ms(fn: Callable[[], Any], warmup: int, timed: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        fn()
    sync()
    ms = []
    for _ in range(timed):
        t0 = time.perf_counter()
        fn()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


# -- a: step time of the runtime against bare diffusers ------------------------------------------
def part_a(c: Check) -> None:
    from diffusers import FluxTransformer2DModel

    px, steps, text = (64, 3, 8) if c.dry else (1024, 28, 512)
    cfg = TINY_FLUX_CONFIG if c.dry else FLUX_DEV_TRANSFORMER
    dtype = torch.float32 if c.dry else torch.bfloat16
    spec = ModelSpec("tiny-flux", dtype=str(dtype).split(".")[1], config={} if c.dry else dict(cfg), text_tokens=text)
    warm = 2
    res: dict[str, Any] = dict(part="a", px=px, steps=steps, dtype=spec.dtype, text_tokens=text)

    # bare diffusers: the stock model and processors, in this process
    dev = torch.device(c.device)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)
    with torch.device(dev):
        model = FluxTransformer2DModel(**cfg).eval().requires_grad_(False)
    torch.set_default_dtype(old)
    n = tokens_of(px, px)
    x = torch.randn(1, n, cfg["in_channels"], device=dev, dtype=dtype)
    enc = torch.randn(1, text, cfg["joint_attention_dim"], device=dev, dtype=dtype)
    pooled = torch.randn(1, cfg["pooled_projection_dim"], device=dev, dtype=dtype)
    pos = torch.arange(n, device=dev)
    img_ids = torch.stack((torch.zeros_like(pos), pos // (px // 16), pos % (px // 16)), 1).to(dtype)
    txt_ids = torch.zeros(text, 3, device=dev, dtype=dtype)
    t = torch.full((1,), 0.5, device=dev, dtype=dtype)
    g = torch.full((1,), 3.5, device=dev, dtype=torch.float32) if cfg.get("guidance_embeds") else None

    @torch.no_grad()
    def fwd(m=model):
        return m(hidden_states=x, encoder_hidden_states=enc, pooled_projections=pooled, timestep=t, img_ids=img_ids,
                 txt_ids=txt_ids, guidance=g, return_dict=False)[0]

    res["bare_eager_ms"] = round(_median_ms(fwd, warm, steps, c.sync), 3)
    if c.device == "cuda":
        res["bare_model_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    compiled = c.left_s() > (60 if c.dry else 330)
    if compiled:
        t0 = time.perf_counter()
        compile_blocks(model)
        fwd()
        c.sync()
        res["bare_compile_s"] = round(time.perf_counter() - t0, 1)
        res["bare_compiled_ms"] = round(_median_ms(fwd, warm, steps, c.sync), 3)
    del model, fwd
    torch._dynamo.reset()  # compiled graphs hold the model's weights
    if c.device == "cuda":
        torch.cuda.empty_cache()

    req = [GenRequest("a", "a photo of a cat", px, px, warm + steps, seed=1)]
    for mode in ("eager", "compiled") if compiled else ("eager",):
        with Runtime(spec, 1, device=c.device, compile=mode == "compiled", warm_sizes=[(px, px)],
                     timeout_s=600) as rt:
            run = rt.generate(req, [[("a", (0,), warm + steps)]], decode=False)
            info = rt.worker_info[0]
        ms = statistics.median(run.timings[0]["step_ms"][warm:])
        res[f"runtime_{mode}_ms"] = round(ms, 3)
        res[f"ratio_{mode}"] = round(ms / res[f"bare_{mode}_ms"], 4)
        res[f"startup_{mode}_s"] = round(info["startup_s"], 1)
        res[f"shape_warm_{mode}_s"] = info["shape_warm_s"]
        if "gpu_mem_gib" in info:
            res[f"worker_gpu_mem_{mode}_gib"] = info["gpu_mem_gib"]
    res["target"] = "runtime / bare <= 1.05"
    if c.dry:  # CPU timings of a tiny model on shared cores say nothing about GPUs: ran = ok
        res["ok"] = all(res[k] > 0 for k in res if k.startswith("ratio_"))
    else:
        res["ok"] = all(res[f"ratio_{m}"] <= 1.05 for m in ("eager", "compiled") if f"ratio_{m}" in res)
    c.emit(**res)


# -- b: degree switching on one device, per SP backend -------------------------------------------
def part_b(c: Check, step_1024_ms: float | None) -> None:
    px = 64 if c.dry else 1024
    dtype = "float32" if c.dry else "bfloat16"
    spec = ModelSpec("tiny-flux", dtype=dtype, config=dict(in_channels=64))  # FLUX's latent: 64 per token
    backends = ["own"] + (["yunchang"] if yunchang_available() else [])
    backends += ["xfuser"] if c.device == "cuda" and xfuser_available() else []
    skipped = {"xfuser": "needs CUDA"} if c.device == "cpu" else {}
    req = [GenRequest("b", "a lighthouse", px, px, 8, seed=2)]
    for b in backends:
        if c.left_s() < 60:
            skipped[b] = "time budget"
            continue
        with Runtime(spec, 4, device=c.device, sp_backend=b, share_gpu=c.device == "cuda", timeout_s=300) as rt:
            ref = rt.generate(req, [[("b", (0,), 8)]], decode=False)
            got = rt.generate(req, [[("b", (1,), 3)], [("b", (2, 3), 3)], [("b", (0, 1, 2, 3), 2)]], decode=False)
            moves = rt.generate(req, [[("b", (0,), 2)], [("b", (1,), 2)], [("b", (2,), 2)], [("b", (3,), 2)]],
                                decode=False)
            startup_s, comm_s = rt.startup_s, max(w["comm_warm_s"] for w in rt.worker_info)
        diff = (ref.latents["b"] - got.latents["b"]).abs().max().item()
        scale = ref.latents["b"].abs().max().item()
        tol = 1e-5 if dtype == "float32" else 0.05 * scale  # bf16: ~3 significant digits per layer
        handoff = statistics.median(t["handoff_in_ms"] for t in moves.timings[1:])
        row = dict(part="b", backend=b, px=px, dtype=dtype, degrees=[1, 2, 4], max_abs_diff=diff, max_abs_latent=scale,
                   tolerance=tol, ok=diff <= tol, handoff_ms_per_switch=round(handoff, 3),
                   startup_s=round(startup_s, 1), comm_warm_s=comm_s,
                   handoff_path="gloo, staged through host memory" if c.device == "cuda" else "gloo (CPU)")
        if step_1024_ms and not c.dry:
            row["handoff_share_of_1024px_step"] = round(handoff / step_1024_ms, 5)
        c.emit(**row)
    for b, why in skipped.items():
        c.emit(part="b", backend=b, skipped=why)


# -- c: the server's executor end to end ------------------------------------------------------------
def part_c(c: Check) -> None:
    import httpx

    from tetriopt.server.probe import free_port, wait_ready

    port = free_port()
    gpus = 2 if c.dry else 1
    cmd = [sys.executable, "-c", "from tetriopt.cli import main; main()", "serve", "--port", str(port),
           "--executor", c.device, "--gpus", str(gpus), "--model", "tiny-flux", "--profile", PROFILE,
           "--policy", "greedy", "--round-ms", "500", "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    row: dict[str, Any] = dict(part="c", executor=c.device, gpus=gpus)
    try:
        row["ready_s"] = round(wait_ready(url, proc, 180, output=lambda: proc.stdout.read(), every_s=0.2), 1)
        with httpx.Client(base_url=url, timeout=300) as h:
            t1 = time.monotonic()
            r = h.post("/v1/images/generations", json={"prompt": "a red fox", "size": "256x256", "n": 2,
                                                        "steps": 6, "slo_ms": 120000})
            row["request_s"] = round(time.monotonic() - t1, 2)
            row["status"] = r.status_code
            imgs = [base64.b64decode(d["b64_json"]) for d in r.json().get("data", [])] if r.status_code == 200 else []
            failures = h.get("/v1/stats").json().get("executor_failures")
        row.update(pngs=len(imgs), distinct=len(set(imgs)), executor_failures=failures,
                   ok=len(imgs) == 2 and len(set(imgs)) == 2 and all(i.startswith(b"\x89PNG") for i in imgs)
                   and failures == 0)
    except Exception as e:  # noqa: BLE001 - reported as a failed part, the check goes on
        row.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    c.emit(**row)


# -- d: text encoding and decoding against the profile --------------------------------------------
def part_d(c: Check) -> None:
    from tetriopt.profile import load_profile

    dev = torch.device(c.device)
    t0 = time.perf_counter()
    pipe = build_flux().to(dev) if c.dry else build_flux_dev_aux(dev, torch.bfloat16)
    spec = ModelSpec("flux", dtype="float32" if c.dry else "bfloat16")
    aux = Aux(spec, dev, pipe=pipe)
    build_s = time.perf_counter() - t0
    px = 64 if c.dry else 1024
    lat = torch.randn(1, tokens_of(px, px), aux.channels)
    enc = _median_ms(lambda: aux.encode("a photo of a red fox on a hill at night"), 1, 5, c.sync)
    dec = _median_ms(lambda: aux.decode(lat, px, px), 1, 3, c.sync)
    prof = load_profile(PROFILE)
    row = dict(part="d", px=px, build_s=round(build_s, 1), text_encode_ms=round(enc, 3),
               vae_decode_ms=round(dec, 3), profile=PROFILE, profile_text_encode_ms=prof.text_encode_us / 1e3
               if hasattr(prof, "text_encode_us") else None,
               profile_vae_decode_ms=prof.vae_decode_us(1024, 1024) / 1e3)
    if c.device == "cuda":
        row["aux_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    row["ok"] = True  # a measurement: compare with the profile's figures by eye / in docs
    c.emit(**row)
    del aux, pipe
    if c.device == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on CPU with tiny models")
    ap.add_argument("--parts", default="a,b,c,d", help="which parts, e.g. a,b")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file too")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip what would not fit in this many seconds")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in "abcd" or len(p) != 1]
    if bad:
        print(f"parts: {','.join(bad)} is not one of a,b,c,d", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("device: no CUDA device is visible; use --dry-run on a machine without GPUs", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dry_run:  # trace with dynamo but skip inductor's C++ builds: minutes on a CPU
        os.environ.setdefault("TETRIOPT_COMPILE_BACKEND", "eager")
    c = Check(args)
    env = dict(part="env", torch=torch.__version__, cuda=torch.version.cuda,
               device=torch.cuda.get_device_name(0) if c.device == "cuda" else "cpu",
               yunchang=yunchang_available(), xfuser=xfuser_available())
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    c.emit(**env)
    step_1024 = None
    failed = []
    for p in parts:
        try:
            if p == "a":
                part_a(c)
                step_1024 = c.lines[-1].get("runtime_eager_ms")
            elif p == "b":
                if step_1024 is None and not c.dry:  # the measured H200 figure when part a did not run
                    from tetriopt.profile import load_profile

                    step_1024 = load_profile(PROFILE).step_us(1024, 1024, 1) / 1e3
                part_b(c, step_1024)
            elif p == "c":
                part_c(c)
            else:
                part_d(c)
        except Exception as e:  # noqa: BLE001 - one part's failure is reported, the others still run
            c.emit(part=p, ok=False, error=f"{type(e).__name__}: {e}"[:2000])
    failed = [r.get("part") for r in c.lines if r.get("ok") is False]
    c.emit(part="summary", ok=not failed, failed=failed, wall_s=round(time.monotonic() - c.t0, 1))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
