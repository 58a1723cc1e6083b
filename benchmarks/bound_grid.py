"""The bound alone on issue 12's grid workloads (benchmarks/grid.py's generator), per component.

Runs `upper_bound(workload, time_limit_s=--bound-s)` (TetriServe's model, as grid.py's `--bound-s`
does) on every grid point and prints the bound, its methods, the relaxation's incumbent and the
time taken. `--ref-src DIR` also runs the bound of another source tree (e.g. a `git archive` of an
earlier commit, extracted) on the same workloads, one point after the other, so the two are side
by side under the same load.

    python benchmarks/bound_grid.py --size 0.15 --bound-s 20 [--gpus 16,32,64] [--ref-src /tmp/old/src]
    python benchmarks/bound_grid.py --instances instances/*.json --bound-s 30
    python benchmarks/bound_grid.py --gpus 16 --pending 64 --seeds 0 --witness
    python benchmarks/bound_grid.py --size 0.15 --bound-s 30 --mip-s 240   (the seventh round's column)
    python benchmarks/bound_grid.py --gpus 8 --pending 64 --seeds 0 --bound-s 30 --mip-nodes 3000   (eighth round)

`--witness` also runs cpsat (deterministic, 200 ms) and tetriserve on the workload cut down to the
requests the relaxation's best solution (a second search, 2 workers) meets, and on the workload cut
down to the requests its LP relaxation meets whole (y >= 0.99 in GLOP's optimum of each component's
model: at 32-64 GPUs the search finds poor solutions in the time, the LP's are near-integral):
every plan of such a workload is a plan of the whole one (the others never run), so the most met
is a lower bound on the best plan, and the best plan lies between it and the bound (how much of a
policy's gap to the bound is the bound's looseness).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import grid  # noqa: E402  (the grid's generator and rates)

import tetriopt  # noqa: E402
from tetriopt.bound import upper_bound  # noqa: E402

_REF = """
import json, sys
sys.path.insert(0, sys.argv[2])
import grid, tetriopt
from tetriopt.bound import upper_bound
spec = json.loads(sys.argv[3])
inst = tetriopt.load_instance(spec) if isinstance(spec, str) else grid.workload(*spec)
b = upper_bound(inst, time_limit_s=float(sys.argv[1]))
print(json.dumps({"met": b.met_bound, "methods": getattr(b, "methods", {}), "incumbent": b.incumbent,
                  "solve_s": round(b.solve_s, 2)}))
"""


def lp_met(inst, limit_s: float) -> set[str]:
    """Requests met whole (y >= 0.99) in the LP optimum of each component's model (TetriServe's)."""
    import hindsight

    return {r for r, v in hindsight.lp_values(inst, limit_s).items() if v >= 0.99}


def served(inst, keep: set[str]) -> int:
    """The most met by cpsat (deterministic, 200 ms) or tetriserve on the workload cut down to `keep`."""
    import hindsight

    return max(len(hindsight.met_of(hindsight.serve(inst, frozenset(keep), p))) for p in ("cpsat", "tetriserve"))


def points(a) -> list[tuple[str, object, object]]:
    """(name, instance, how to rebuild it in another tree: a path or grid.workload's arguments)."""
    out = []
    if a.instances:
        for p in a.instances:
            out.append((os.path.basename(p), tetriopt.load_instance(p), os.path.abspath(p)))
        return out
    seeds = [int(s) for s in a.seeds.split(",")]
    for g in map(int, a.gpus.split(",")):
        for p in map(int, a.pending.split(",")):
            near = grid.nearest(g, p)
            for s in seeds:
                if s != seeds[0] and g not in map(int, a.seed_gpus.split(",")):
                    continue
                spec = [g, grid.RATES[near], s, a.size]
                out.append((f"{g}/{near[1]}/s{s}", grid.workload(*spec), spec))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", default="8,16,32,64")
    ap.add_argument("--pending", default="8,32,64,128")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--seed-gpus", default="8,64")
    ap.add_argument("--size", type=float, default=0.15)
    ap.add_argument("--bound-s", type=float, default=20.0)
    ap.add_argument("--instances", nargs="*", default=None)
    ap.add_argument("--mip-s", type=float, default=0.0,
                    help="then up to this long of HiGHS on each component left unproven (upper_bound's mip_s)")
    ap.add_argument("--mip-nodes", type=int, default=0,
                    help="HiGHS also stops after this many nodes per component; alone (no --mip-s): no time limit, "
                         "the same figure on any CPU (upper_bound's mip_nodes)")
    ap.add_argument("--ref-src", default=None, help="another tree's src/ to run the same bound from")
    ap.add_argument("--witness", action="store_true", help="cpsat on the relaxation's met set (a lower bound)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = []
    print("| point | n | bound | methods | incumbent | s |" + (" ref bound | ref methods | ref s |" if a.ref_src else "")
          + (" witness: search set | LP set |" if a.witness else ""))
    print("|---|---|---|---|---|---|" + ("---|---|---|" if a.ref_src else "") + ("---|---|" if a.witness else ""))
    for name, inst, spec in points(a):
        b = upper_bound(inst, time_limit_s=a.bound_s, mip_s=a.mip_s, mip_nodes=a.mip_nodes)
        row = {"point": name, "n": len(inst.requests), "met": b.met_bound, "methods": b.methods,
               "incumbent": b.incumbent, "solve_s": round(b.solve_s, 2),
               "components": [c for c in b.per_component if not c["optimal"]]}
        if a.ref_src:
            env = dict(os.environ, PYTHONPATH=a.ref_src)
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _REF, str(a.bound_s), os.path.dirname(os.path.abspath(__file__)),
                                  json.dumps(spec)], capture_output=True, text=True, env=env, check=True).stdout
            row["ref"] = json.loads(out)
            row["ref"]["wall_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        meth = ",".join(f"{k}:{v}" for k, v in b.methods.items() if v and k != "optimal")
        cells = [name, row["n"], b.met_bound, meth or "all optimal", b.incumbent, row["solve_s"]]
        if a.ref_src:
            r = row["ref"]
            cells += [r["met"], ",".join(f"{k}:{v}" for k, v in r["methods"].items() if v and k != "optimal")
                      or "all optimal", r["solve_s"]]
        if a.witness:
            # a 2-worker search finds far better relaxation solutions than the bound's 1 worker
            keep = set(upper_bound(inst, time_limit_s=a.bound_s, workers=2).incumbent_met)
            row["witness_search"] = served(inst, keep)
            row["witness_lp"] = served(inst, lp_met(inst, a.bound_s))
            row["witness"] = max(row["witness_search"], row["witness_lp"])
            cells += [row["witness_search"], row["witness_lp"]]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
