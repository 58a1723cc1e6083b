"""Derive the shipped cost profiles in this folder from their sources.

Run `python models/derive.py` to rewrite the JSON files, here (what people read and review) and
in the package (src/tetriopt/profiles/, what an installed tetriopt loads; tests/test_profile.py
checks that the two copies agree). Every number in the output carries a
`source` saying whether it was measured (and where) or modelled (and how). The model is:

    T(k) = max(L, C / k) + comm(k)

L is the launch floor (eager PyTorch on one GPU cannot go below it; measured on an H200:
small FLUX/SD3 steps cost about the same whatever the token count), C the compute time on one
GPU (a FLOP model of the DiT, fitted to the largest measured point), and comm(k) Ulysses
all-to-all traffic for q, k, v and the output of every attention layer over the link bandwidth,
plus a fixed latency per collective. At small sizes this gives T(k) > T(1): more GPUs buy
nothing, as measured and as the TetriServe paper reports (sec. 3).

A batch of B same-size requests in one step (`batches` in every point, B = 2..4):

    T(k, B) = max(L, B C / k) + B comm(k),   kept within [T(k, B-1), B T(k, 1)]

with C the FLOP model's compute alone (launch excluded); the clamp keeps a batch no cheaper than a
smaller one and no dearer than running its members one after another. Measured batch points
replace the model where they exist (H200 1024 px batch 2 at degree 1: FLUX 354.6 ms, SD3 52.8 ms;
the model says 305 and 45 ms there, 14% low in both cases).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "src" / "tetriopt" / "profiles"
SHARED = "../shared/measured/h200-eager-step-latency.jsonl (one H200, torch 2.11 cu130, diffusers 0.42.1, bf16 eager, median of 5)"

ARCH = {  # layers with joint attention, hidden size, text tokens
    "flux": dict(layers=57, hidden=3072, text=512),
    "sd3": dict(layers=24, hidden=1536, text=333),
}


def flops(arch: dict, image_tokens: int) -> float:
    """Forward FLOPs of one step: linear layers ~24*S*h^2, attention ~4*S^2*h per layer."""
    s = image_tokens + arch["text"]
    h = arch["hidden"]
    return arch["layers"] * (24.0 * s * h * h + 4.0 * s * s * h)


def comm_ms(arch: dict, image_tokens: int, k: int, gbps: float, lat_us: float) -> float:
    """Ulysses all-to-all: 4 tensors of S x h bf16 per layer; a latency per collective growing with log2 k."""
    if k == 1:
        return 0.0
    s = image_tokens + arch["text"]
    volume = 4 * s * arch["hidden"] * 2 * (k - 1) / (k * k)
    hops = (k - 1).bit_length()  # log2(k) rounds of a tree/pairwise all-to-all
    return arch["layers"] * 4 * (volume / 4 / (gbps * 1e9) * 1e3 + hops * lat_us / 1e3)


def modelled(arch, tokens, k, c1_ms, floor_ms, gbps, lat_us):
    return max(floor_ms, c1_ms / k) + comm_ms(arch, tokens, k, gbps, lat_us)


BATCHES = (2, 3, 4)


def batch_entries(arch, tokens, compute_ms, floor_ms, gbps, lat_us, steps: dict, measured: dict | None = None,
                  how: str = "") -> dict:
    """The point's `batches` entry: modelled T(k, B) (module docstring) unless measured."""
    measured = measured or {}
    out: dict = {}
    prev = {k: float(v) for k, v in steps.items()}
    for b in BATCHES:
        st, src = {}, {}
        for ks, t1 in steps.items():
            k = int(ks)
            if (b, k) in measured:
                v, src[ks] = measured[(b, k)], f"measured: {SHARED}"
            else:
                raw = max(floor_ms, b * compute_ms / k) + b * comm_ms(arch, tokens, k, gbps, lat_us)
                v = min(max(raw, prev[ks]), b * t1)
                src[ks] = (f"modelled: max(L, B C/k) + B comm(k), within [T(k,B-1), B T(k,1)]; "
                           f"L={floor_ms:g} ms, C={compute_ms:.1f} ms (FLOP model){how}")
            st[ks] = round(v, 1)
            prev[ks] = v
        out[str(b)] = {"step_ms": st, "source": src}
    return out


def write(name: str, data: dict) -> None:
    for folder in (HERE, PACKAGE):
        (folder / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


ROUND_NOTES = {"sd3-medium": "about 5 steps of a 1024 px request at degree 1 (250 ms), raised so that the last "
                              "step of a 2048 px request at degree 4, its VAE decode and a text encode fit in one round "
                              "(50.8 + 354.2 + 20 ms: the plan charges encode and decode inside the round)"}


def h200_profile(model: str, arch_key: str, measured: dict, floor: float, vae: dict, round_ms: float,
                 batch_measured: dict, degrees=(1, 2, 4, 8)) -> dict:
    arch = ARCH[arch_key]
    big = max(measured)
    scale = measured[big] / flops(arch, big * big // 256)  # fit C to the largest measured point
    points = []
    for res, t1 in sorted(measured.items()):
        tok = res * res // 256
        c1 = max(t1, flops(arch, tok) * scale)
        steps, src = {}, {}
        for k in degrees:
            if k == 1:
                steps["1"], src["1"] = round(t1, 1), f"measured: {SHARED}"
            else:
                steps[str(k)] = round(modelled(arch, tok, k, c1, floor, 400.0, 40.0), 1)
                src[str(k)] = "modelled (not yet measured on several GPUs): max(L, C/k) + Ulysses all-to-all over NVLink 400 GB/s effective, 40 us x log2(k) per collective"
        points.append(dict(width=res, height=res, step_ms=steps, vae_decode_ms=vae[res][0],
                           source={**src, "vae_decode_ms": vae[res][1]},
                           batches=batch_entries(arch, tok, flops(arch, tok) * scale, floor, 400.0, 40.0, steps,
                                                 batch_measured.get(res), ", NVLink 400 GB/s")))
    return dict(name=f"{model}-h200", model=model, gpu="NVIDIA H200 141GB (8x, NVLink)", degrees=list(degrees),
                default_round_ms=round_ms, text_encode_ms=20.0, points=points,
                sources={"text_encode_ms": "modelled: T5-XXL encoder of 512 tokens on one GPU, about 20 ms",
                         **({"default_round_ms": ROUND_NOTES[model]} if model in ROUND_NOTES else {}),
                         "launch_floor_ms": f"{floor} (smallest measured eager step of this model)",
                         "generator": "models/derive.py"})


def main() -> None:
    flux_vae = {256: (5.3, "modelled: 1024 px measured value scaled by pixels"),
                512: (21.3, "modelled: 1024 px measured value scaled by pixels"),
                768: (47.9, "modelled: 1024 px measured value scaled by pixels"),
                1024: (85.2, f"measured: {SHARED}"),
                1536: (221.0, "modelled: interpolated between 1024 and 2048 measured by pixels"),
                2048: (393.6, f"measured: {SHARED}")}
    write("flux.1-dev-h200", h200_profile(
        "flux.1-dev", "flux", {256: 72.2, 512: 64.3, 768: 104.6, 1024: 178.5, 1536: 424.0, 2048: 858.3},
        floor=64.3, vae=flux_vae, round_ms=900.0, batch_measured={1024: {(2, 1): 354.6}}))
    sd3_vae = {r: (round(v * 0.9, 1), "modelled: FLUX VAE decode x 0.9 (same 16-channel VAE family, similar size)")
               for r, (v, _) in flux_vae.items()}
    write("sd3-medium-h200", h200_profile(
        "sd3-medium", "sd3", {256: 40.9, 512: 39.6, 768: 40.6, 1024: 38.8, 1536: 72.6, 2048: 163.2},
        floor=38.8, vae=sd3_vae, round_ms=450.0, batch_measured={1024: {(2, 1): 52.8}}))

    # FLUX.1-dev on 8x H100: anchored on xDiT's published 1024 px figures (docs/performance/flux.md,
    # 28 steps, torch.compile): 1 GPU 4.30 s, Ring-2 2.60 s, Ulysses-4 1.63 s.
    arch = ARCH["flux"]
    x1024 = {1: 4.30 / 28 * 1e3, 2: 2.60 / 28 * 1e3, 4: 1.63 / 28 * 1e3}
    xsrc = "xDiT docs/performance/flux.md, FLUX.1-dev 1024px 28 steps on H100 with torch.compile, whole request / 28"
    c1024 = x1024[1]
    scale = c1024 / flops(arch, 4096)
    floor = 40.0  # below xDiT's compiled 4-GPU 1024 px step (58 ms), so compiled launch cost is under it
    pts = []
    for res in (256, 512, 1024, 2048):
        tok = res * res // 256
        c1 = max(floor, flops(arch, tok) * scale)
        steps, src = {}, {}
        for k in (1, 2, 4, 8):
            if res == 1024 and k in x1024:
                steps[str(k)], src[str(k)] = round(x1024[k], 1), f"published: {xsrc}"
            else:
                steps[str(k)] = round(modelled(arch, tok, k, c1, floor, 300.0, 40.0), 1)
                src[str(k)] = ("modelled: max(L=40 ms launch floor, C/k) + Ulysses all-to-all at 300 GB/s, 40 us x log2(k) per "
                               "collective; C from a FLOP model fitted to xDiT's 1-GPU 1024 px figure")
        pts.append(dict(width=res, height=res, step_ms=steps, vae_decode_ms=flux_vae[res][0],
                        source={**src, "vae_decode_ms": flux_vae[res][1] + " (H200; H100 assumed equal)"},
                        batches=batch_entries(arch, tok, flops(arch, tok) * scale, floor, 300.0, 40.0, steps,
                                              how=", all-to-all 300 GB/s")))
    write("flux.1-dev-h100", dict(
        name="flux.1-dev-h100", model="flux.1-dev", gpu="NVIDIA H100 80GB (8x, NVLink 900 GB/s)",
        degrees=[1, 2, 4, 8], default_round_ms=900.0, text_encode_ms=20.0, points=pts,
        sources={"setup": "TetriServe's FLUX testbed (paper sec. 6.1): 8x H100-80GB, NVLink",
                 "default_round_ms": "about 5 steps of a 1024 px request at degree 1 (paper: ~5 steps per round most robust), raised so that the slowest step (2048 px, 1 GPU) fits in a round",
                 "text_encode_ms": "modelled", "generator": "models/derive.py"}))

    # SD3-Medium on 4x A40 (NVLink bridges in pairs, PCIe between pairs): compute part of the
    # H200 measurement scaled by the bf16 peak ratio (989 / 150 TFLOP/s), same launch floor.
    arch = ARCH["sd3"]
    sd3_h200 = {256: 40.9, 512: 39.6, 1024: 38.8, 2048: 163.2}
    scale = sd3_h200[2048] / flops(arch, 16384) * (989.0 / 150.0)
    pts = []
    for res in (256, 512, 1024, 2048):
        tok = res * res // 256
        c1 = flops(arch, tok) * scale
        steps = {}
        for k in (1, 2, 4):
            gbps, lat = (50.0, 40.0) if k <= 2 else (12.0, 80.0)
            steps[str(k)] = round(modelled(arch, tok, k, c1, 39.0, gbps, lat), 1)
        # batches: degree 4 crosses PCIe (12 GB/s); degrees 1-2 stay inside a pair (50 GB/s)
        bat = batch_entries(arch, tok, c1, 39.0, 50.0, 40.0, {k: v for k, v in steps.items() if k != "4"},
                            how=", NVLink bridge 50 GB/s")
        b4 = batch_entries(arch, tok, c1, 39.0, 12.0, 80.0, {"4": steps["4"]}, how=", PCIe 12 GB/s")
        for b in bat:
            bat[b]["step_ms"].update(b4[b]["step_ms"])
            bat[b]["source"].update(b4[b]["source"])
        pts.append(dict(width=res, height=res, step_ms=steps, vae_decode_ms=round(sd3_vae[res][0] * 4, 1), batches=bat,
                        source={"all": "modelled: H200-measured SD3-Medium compute x 6.6 (bf16 peak ratio H200/A40), "
                                       "39 ms launch floor, all-to-all over NVLink bridge 50 GB/s (degree 2, inside a pair) "
                                       "or PCIe 12 GB/s (degree 4, across pairs)",
                                "vae_decode_ms": "modelled: H200 value x 4"}))
    write("sd3-medium-a40", dict(
        name="sd3-medium-a40", model="sd3-medium", gpu="NVIDIA A40 48GB (4x, NVLink in pairs)",
        degrees=[1, 2, 4], default_round_ms=1850.0, text_encode_ms=30.0, points=pts,
        sources={"setup": "TetriServe's SD3 testbed (paper sec. 6.1): 4x A40-48GB, NVLink in pairs, PCIe between",
                 "default_round_ms": "about 5 steps of a 1024 px request at degree 1 (1100 ms), raised so that the last step of a 2048 px request at degree 4, its VAE decode and a text encode fit in one round (361.4 + 1416.8 + 30 ms: the plan charges encode and decode inside the round)",
                 "text_encode_ms": "modelled", "generator": "models/derive.py"}))


if __name__ == "__main__":
    main()
