"""The TetriServe paper's experiments in simulation (docs/evaluation.md).

  .venv/bin/python benchmarks/paper_eval.py [--jobs 2] [--seeds 0,1,2] [--deterministic] [--out out/paper_eval]

A: FLUX.1-dev on 8x H100, uniform and skewed mixes, SLO scale 1.0/1.1/1.2/1.5 at 12 req/min.
B: the same, arrival rate 6-18 req/min at SLO scale 1.0.
C: SD3-Medium on 4x A40 (NVLink pairs: islands of 2), uniform and skewed, SLO scales as in A.
D: round length 600/900/1800 ms (FLUX, uniform, SLO 1.0, 12 req/min).
300 requests of 20 steps per workload, cpsat at 200 ms per round. Every policy runs on the same
instances; the bound too. Writes <out>/rows.json, tables (.txt) and PNGs (<out>/img).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tetriopt import bench as B
from tetriopt import plots
from tetriopt.policies import bench_policies

FLUX_POL = bench_policies(8)  # the registry's defaults: 8x H100
SD3_POL = bench_policies(4)   # 4x A40
AXIS = {"A": "slo_scale", "B": "rate", "C": "slo_scale", "D": "round_ms"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--time-limit-ms", type=float, default=200.0)
    ap.add_argument("--out", default="out/paper_eval")
    ap.add_argument("--only", default="ABCD")
    ap.add_argument("--markdown", action="store_true", help="Print markdown tables from <out>/exp*-agg.json and stop.")
    ap.add_argument("--deterministic", action="store_true",
                    help="cpsat stops on CP-SAT's deterministic clock: met counts independent of the machine's load")
    a = ap.parse_args()
    if a.markdown:
        for name in a.only:
            f = Path(a.out) / f"exp{name}-agg.json"
            if f.exists():
                print(f"### Experiment {name}\n")
                print(B.markdown_table(json.loads(f.read_text()), AXIS[name], mean_col=True, bold=("cpsat", "bound")))
        return
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    exps = {
        "A": (B.points(mixes=("uniform", "skewed"), slo_scales=(1.0, 1.1, 1.2, 1.5), rates=(12,), seeds=seeds, n=a.n),
              FLUX_POL),
        "B": (B.points(mixes=("uniform", "skewed"), slo_scales=(1.0,), rates=(6, 9, 12, 15, 18), seeds=seeds, n=a.n),
              FLUX_POL),
        "C": (B.points(models=("sd3-medium-a40",), gpus=4, islands=2, mixes=("uniform", "skewed"),
                       slo_scales=(1.0, 1.1, 1.2, 1.5), rates=(12,), seeds=seeds, n=a.n), SD3_POL),
        "D": (B.points(mixes=("uniform",), slo_scales=(1.0,), rates=(12,), round_ms=(600.0, 900.0, 1800.0),
                       seeds=seeds, n=a.n), FLUX_POL),
    }
    done: dict[tuple, dict] = {}
    rows_path = out / "rows.json"
    if rows_path.exists():  # resume: keep finished (instance, policy) rows
        for r in json.loads(rows_path.read_text()):
            done[(r["instance"], r["policy"])] = r
    for name in a.only:
        pts, pols = exps[name]
        todo = [p for p in pts if any((p.label(), q) not in done for q in pols + ["bound"])]
        t0 = time.time()
        if todo:
            with tqdm(total=len(todo) * (len(pols) + 1), desc=f"exp {name}", file=sys.stderr) as bar:
                for r in B.run(todo, pols, bound=True, time_limit_ms=a.time_limit_ms, jobs=a.jobs,
                               progress=bar.update, deterministic=a.deterministic):
                    done[(r["instance"], r["policy"])] = r
            rows_path.write_text(json.dumps(list(done.values())))
        rows = [done[(p.label(), q)] for p in pts for q in pols + ["bound"] if (p.label(), q) in done]
        agg = B.aggregate(rows)
        axis = AXIS[name]
        text = B.report(agg, rows, B.table(agg, "slo_attainment", axis=axis) + "\n")
        (out / f"exp{name}.txt").write_text(text)
        (out / f"exp{name}-agg.json").write_text(json.dumps(agg, indent=1))
        plots.slo_vs_axis(agg, axis, out / "img")
        print(f"exp {name}: {len(rows)} rows in {time.time() - t0:.0f} s", file=sys.stderr)
        print(text)


if __name__ == "__main__":
    main()
