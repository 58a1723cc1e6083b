"""Cost of moving a request to another GPU set between steps, relative to one step (CPU, gloo).

For each resolution and degree k, the same request runs S steps twice through the runtime:
  stay:   all S steps on ranks 0..k-1 (one task);
  switch: the set alternates between ranks 0..k-1 and k..2k-1 every step (S-1 hand-offs: gather
          on the old set's leader, send latent + conditioning, re-shard on the new set).
switch cost = (wall(switch) - wall(stay)) / (S-1), medians over repeats, next to the median
step time of the stay runs. (Worker-side hand-off waits are not used: the receiver's wait
includes the old set's last step.) Both plans must end with the same latent; it is checked.

    python benchmarks/handoff.py [--world 4] [--sizes 128,256,512] [--steps 9] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics

from tetriopt_runtime import GenRequest, ModelSpec, Runtime
from tetriopt_runtime.models import tokens_of


def measure(rt: Runtime, px: int, k: int, steps: int, repeats: int) -> dict[str, float]:
    a, b = tuple(range(k)), tuple(range(k, 2 * k))
    req = [GenRequest("r", "handoff", px, px, steps, seed=1)]
    stay_plan = [[("r", a, steps)]]
    switch_plan = [[("r", a if s % 2 == 0 else b, 1)] for s in range(steps)]
    rt.generate(req, switch_plan, decode=False)  # warm both sets and the send paths
    stay, switch, step = [], [], []
    for _ in range(repeats):
        r0 = rt.generate(req, stay_plan, decode=False)
        r1 = rt.generate(req, switch_plan, decode=False)
        stay.append(r0.wall_ms)
        switch.append(r1.wall_ms)
        step.extend(r0.timings[0]["step_ms"][1:])
        err = (r0.latents["r"] - r1.latents["r"]).abs().max().item()
        assert err <= 1e-5, f"hand-offs changed the result by {err}"
    per_switch = (statistics.median(switch) - statistics.median(stay)) / (steps - 1)
    step_ms = statistics.median(step)
    return dict(px=px, tokens=tokens_of(px, px), k=k, step_ms=step_ms, switch_ms=per_switch,
                stay_ms=statistics.median(stay), switch_wall_ms=statistics.median(switch), ratio=per_switch / step_ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--sizes", default="128,256,512")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    degrees = [k for k in (1, 2, 4, 8) if 2 * k <= args.world]
    rows = []
    with Runtime(ModelSpec("tiny-flux"), world_size=args.world, timeout_s=300) as rt:
        for px in sizes:
            for k in degrees:
                rows.append(measure(rt, px, k, args.steps, args.repeats))
    print(f"tiny-flux on CPU, {args.world} gloo workers, {args.steps} steps, median of {args.repeats} repeats")
    print(f"{'px':>5} {'tokens':>6} {'deg':>3} {'stay wall':>10} {'switch wall':>12} {'step ms':>9} "
          f"{'switch ms':>10} {'switch/step':>12}")
    for r in rows:
        print(f"{r['px']:>5} {r['tokens']:>6} {r['k']:>3} {r['stay_ms']:>10.1f} {r['switch_wall_ms']:>12.1f} "
              f"{r['step_ms']:>9.2f} {r['switch_ms']:>10.2f} {r['ratio']:>12.2f}")


if __name__ == "__main__":
    main()
