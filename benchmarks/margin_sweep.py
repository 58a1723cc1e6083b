"""Tune the per-resolution margins of `policies/margins.py` on workloads outside the grid.

Coordinate descent: for each resolution in turn, each margin of `--steps-ms` is tried with the
others at their best so far, over every workload (the grid's (GPUs, pending) points at the seeds
given, by default 3-5, which the grid of issue 12 does not use); a margin is taken when the sum of
met deadlines rises. Printed: each candidate's sum and per-workload counts against the policy
without margins.

    python benchmarks/margin_sweep.py --policy tetriserve [--seeds 3,4,5] [--gpus 8,16,32,64]
    python benchmarks/margin_sweep.py --policy cpsat --time-limit-ms 200 --deterministic --gpus 16,32 --pending 64,128
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bound_grid  # noqa: E402  (the grid's workloads by point)
import grid  # noqa: E402


def spec(policy: str, margins: dict[int, int] | str) -> str:
    """The policy name with these margins (a dict, or text such as `2048:450;burst=1`)."""
    text = margins if isinstance(margins, str) else "/".join(f"{w}:{ms}" for w, ms in sorted(margins.items()) if ms)
    items = ";".join(i if "=" in i.split("/")[0] else f"margin={i}" for i in filter(None, text.split(";")))
    if not items:
        return policy
    if policy.endswith("]"):
        return f"{policy[:-1]};{items}]"
    return f"{policy}[{items}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="tetriserve")
    ap.add_argument("--size", type=float, default=0.15)
    for flag, default in (("--gpus", "8,16,32,64"), ("--pending", "8,32,64,128")):  # as grid.py's
        ap.add_argument(flag, default=default)
    ap.add_argument("--seeds", default="3,4,5", help="at every GPU count (the grid uses 0-2)")
    ap.add_argument("--widths", default="2048,1024,512")
    ap.add_argument("--steps-ms", default="56,112,225,450")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--time-limit-ms", type=float, default=200.0)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--start", default="", help="starting margins, e.g. 1024:225/2048:112")
    ap.add_argument("--candidates", default="",
                    help="instead of the descent: these margin sets side by side, comma-separated (1024:225/2048:450,2048:450)")
    a = ap.parse_args()
    loads = [(k, inst) for k, inst, _ in bound_grid.points(argparse.Namespace(**vars(a), seed_gpus=a.gpus, instances=None))]
    cache: dict[str, list[int]] = {}

    def met(margins: dict[int, int] | str) -> list[int]:
        name = spec(a.policy, margins)
        if name not in cache:
            cache[name] = [grid.run_policy(inst, name, a.time_limit_ms, a.deterministic)["met"] for _, inst in loads]
            print(f"{name}: {sum(cache[name])}  " + " ".join(map(str, cache[name])), flush=True)
        return cache[name]

    print("workloads: " + " ".join(k for k, _ in loads))
    def margins(text: str) -> dict[int, int]:
        return {int(w): int(ms) for w, ms in (i.split(":") for i in filter(None, text.split("/")))}

    base = met({})
    if a.candidates:
        for c in a.candidates.split(","):
            m = met(c)
            print(f"  {spec(a.policy, c)}: {sum(m) - sum(base):+d} (up at {sum(x > y for x, y in zip(m, base))}, "
                  f"down at {sum(x < y for x, y in zip(m, base))})", flush=True)
        return
    best = margins(a.start)
    cur = met(best)
    for _ in range(a.passes):
        for w in map(int, a.widths.split(",")):
            for ms in map(int, a.steps_ms.split(",")):
                cand = {**best, w: ms}
                m = met(cand)
                if sum(m) > sum(cur):
                    best, cur = cand, m
    diff = [c - b for c, b in zip(cur, base)]
    print(f"best: {spec(a.policy, best)}: {sum(cur)} against {sum(base)} without "
          f"(up at {sum(d > 0 for d in diff)}, down at {sum(d < 0 for d in diff)} of {len(diff)})")


if __name__ == "__main__":
    main()
