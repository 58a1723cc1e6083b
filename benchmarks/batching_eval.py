"""Batching and immediate starts against TetriServe's model (issue 13; docs/evaluation.md, section E).

  .venv/bin/python benchmarks/batching_eval.py [--jobs 2] [--seeds 0,1,2] [-n 150] [--deterministic] [--out out/batching_eval]
  .venv/bin/python benchmarks/batching_eval.py --markdown        # tables from a finished run

E1: FLUX.1-dev with its default 28 steps on 8x H100 and 8x H200 profiles, uniform and skewed,
    SLO scale 1.0/1.2/1.5 at 12 req/min.
E2: SD3-Medium (28 steps) on 4x A40 (islands of 2) at 12 req/min, and on one 8x H200 node at 36.
E3: saturation: FLUX H100 (SLO 1.0 and 1.5) and SD3 H200 (SLO 1.0), rate sweep; the rate at which
    attainment falls below 90%, with and without the features.
Policies side by side on the same instances: cpsat without and with both features, tetriserve
without and with selective batching + immediate starts, the bound of TetriServe's model (`bound`)
and of the extended one (`bound+batching+immediate`). Writes <out>/rows.json and E*.txt tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tetriopt import bench as B

FEAT = "+batching+immediate"
POL = ["cpsat", "cpsat" + FEAT, "tetriserve", "tetriserve" + FEAT, "bound", "bound" + FEAT]
SAT_POL = ["cpsat", "cpsat" + FEAT, "tetriserve" + FEAT]


FLUX_RATES = (6, 9, 12, 18, 24)
SD3_RATES = (36, 72, 108, 144, 216, 324, 432, 648)


def experiments(seeds, n, flux_rates=FLUX_RATES, sd3_rates=SD3_RATES):
    flux = [p for m in ("flux.1-dev-h100", "flux.1-dev-h200")
            for p in B.points(models=(m,), mixes=("uniform", "skewed"), slo_scales=(1.0, 1.2, 1.5), rates=(12,),
                              seeds=seeds, n=n, steps=28)]
    sd3 = (B.points(models=("sd3-medium-a40",), gpus=4, islands=2, mixes=("uniform", "skewed"),
                    slo_scales=(1.0, 1.2, 1.5), rates=(12,), seeds=seeds, n=n, steps=28)
           + B.points(models=("sd3-medium-h200",), mixes=("uniform", "skewed"), slo_scales=(1.0, 1.2, 1.5),
                      rates=(36,), seeds=seeds, n=n, steps=28))
    sat = (B.points(models=("flux.1-dev-h100",), mixes=("uniform",), slo_scales=(1.0, 1.5),
                    rates=flux_rates, seeds=seeds, n=n, steps=28)
           + B.points(models=("sd3-medium-h200",), mixes=("uniform",), slo_scales=(1.0,),
                      rates=sd3_rates, seeds=seeds, n=n, steps=28))
    return {"E1": (flux, POL, "slo_scale"), "E2": (sd3, POL, "slo_scale"), "E3": (sat, SAT_POL, "rate")}


def saturation(agg: list[dict], level: float = 0.9) -> list[str]:
    """Per (model, SLO scale, policy): the rate at which mean attainment first falls below `level`
    (linear interpolation between swept rates; '>' the largest rate when it never does)."""
    out = []
    for model, slo in dict.fromkeys((r["model"], r["slo_scale"]) for r in agg):
        for pol in dict.fromkeys(r["policy"] for r in agg if r["model"] == model):
            pts = sorted((r["rate"], r["slo_attainment"]["mean"]) for r in agg if r["model"] == model
                         and r["slo_scale"] == slo and r["policy"] == pol and "slo_attainment" in r)
            rate = f"> {pts[-1][0]:g}"
            if pts[0][1] < level:
                rate = f"< {pts[0][0]:g}"
            else:
                for (r0, a0), (r1, a1) in zip(pts, pts[1:]):
                    if a1 < level <= a0:
                        rate = f"{r0 + (a0 - level) / (a0 - a1) * (r1 - r0):.1f}"
                        break
            out.append(f"| {model} | {slo:g} | {pol} | {rate} | " + ", ".join(f"{r:g}: {100 * a:.1f}" for r, a in pts) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("-n", type=int, default=150)
    ap.add_argument("--time-limit-ms", type=float, default=100.0)
    ap.add_argument("--bound-time-s", type=float, default=30.0)
    ap.add_argument("--out", default="out/batching_eval")
    ap.add_argument("--only", default="E1,E2,E3")
    ap.add_argument("--flux-rates", default=",".join(map(str, FLUX_RATES)), help="E3's FLUX rates (req/min)")
    ap.add_argument("--sd3-rates", default=",".join(map(str, SD3_RATES)), help="E3's SD3 H200 rates (req/min)")
    ap.add_argument("--models", default=None, help="only these profiles (comma-separated; default: all)")
    ap.add_argument("--policies", default=None, help="run only these of the experiment's policies (comma-separated; "
                    "the tables show every row in <out>/rows.json)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--deterministic", action="store_true",
                    help="cpsat stops on CP-SAT's deterministic clock: met counts independent of the machine's load")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    exps = experiments([int(s) for s in a.seeds.split(",")], a.n, B.parse_floats(a.flux_rates, "flux-rates"),
                       B.parse_floats(a.sd3_rates, "sd3-rates"))
    rows_path = out / "rows.json"
    done = {(r["instance"], r["policy"]): r for r in json.loads(rows_path.read_text())} if rows_path.exists() else {}
    for name in a.only.split(","):
        pts, pols, axis = exps[name]
        if a.models:
            pts = [p for p in pts if p.model in a.models.split(",")]
        if not a.markdown:
            run = [q for q in pols if a.policies is None or q in a.policies.split(",")]
            todo = {q: [p for p in pts if (p.label(), q) not in done] for q in run}  # resume: missing rows only
            t0 = time.time()
            with tqdm(total=sum(map(len, todo.values())), desc=name, file=sys.stderr) as bar:
                for q, qpts in todo.items():
                    if not qpts:
                        continue
                    for r in B.run(qpts, [q], bound=False, time_limit_ms=a.time_limit_ms,
                                   bound_time_s=a.bound_time_s, jobs=a.jobs, progress=bar.update,
                                   deterministic=a.deterministic):
                        done[(r["instance"], r["policy"])] = r
                    rows_path.write_text(json.dumps(list(done.values())))
            print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr)
        rows = [done[(p.label(), q)] for p in pts for q in pols if (p.label(), q) in done]
        agg = B.aggregate(rows)
        text = B.markdown_table(agg, axis, by=("model", "gpus", "mix", "slo_scale" if axis == "rate" else "rate"))
        if name == "E3":
            text += "\n| model | SLO scale | policy | req/min at 90% | attainment % by rate |\n|---|---:|---|---:|---|\n"
            text += "\n".join(saturation(agg)) + "\n"
        text = B.report(agg, rows, text)
        (out / f"{name}.txt").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
