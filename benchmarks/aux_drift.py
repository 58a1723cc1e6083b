"""How far text encoding and VAE decode on the set leaders push a round's later tasks back.

The plan lays a GPU's assignments out back to back from step times alone (`tetriopt.plan.
make_plan`); the runtime encodes a new request's prompt on the leader of its first set inside
its first task (the set waits for the broadcast) and decodes a finished one on the leader of its
last set inside its last task. Each later task on those GPUs then starts that much later than
planned. This runs one round twice on the same tiny whole pipeline (CLIP + T5 + VAE + FLUX
transformer from `tiny_pipeline`, CPU, 2 workers): with the aux models on the leaders (the
default) and in the driver (`aux_device=cpu`: encoded before dispatch, decoded after, so the
workers only denoise). The second run's task start times are the plan's start times with
exactly profiled steps; the difference is the drift that encode/decode cause, printed beside
the encode + decode time that ran earlier on the task's GPUs.

    python benchmarks/aux_drift.py [--size 256] [--steps 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tetriopt_runtime import GenRequest, ModelSpec, Runtime
from tetriopt_runtime.tiny_pipeline import write_tiny_pipeline

# per GPU three requests that start and finish in this round, then one across both GPUs
ROUND = [("a0", (0,)), ("a1", (1,)), ("b0", (0,)), ("b1", (1,)), ("c0", (0,)), ("c1", (1,)), ("w", (0, 1))]


def run(folder: Path, aux_device: str | None, size: int, steps: int, repeats: int) -> list[list[dict]]:
    spec = ModelSpec(kind="flux", path=str(folder), dtype="float32")
    out = []
    with Runtime(spec, 2, device="cpu", sp_backend="own", aux_device=aux_device) as rt:
        reqs = [GenRequest(rid, f"a photo of {rid}", size, size, steps, seed=i) for i, (rid, _) in enumerate(ROUND)]
        rt.generate(reqs[:2], [[(r.id, g, steps) for r, (_, g) in zip(reqs[:2], ROUND[:2])]])  # warm-up
        for rep in range(repeats):
            reqs = [GenRequest(f"{rid}-{rep}", f"a photo of {rid}", size, size, steps, seed=i)
                    for i, (rid, _) in enumerate(ROUND)]
            res = rt.generate(reqs, [[(r.id, g, steps) for r, (_, g) in zip(reqs, ROUND)]])
            t0 = min(t["began_s"] for t in res.timings)
            out.append([dict(task=t["task"], gpus=tuple(t["gpus"]), start_ms=(t["began_s"] - t0) * 1e3,
                             aux_ms=t["encode_ms"] + t["decode_ms"], step_ms=sum(t["step_ms"]))
                        for t in sorted(res.timings, key=lambda t: t["task"])])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        folder = write_tiny_pipeline("flux", Path(d) / "flux")
        leaders = run(folder, None, a.size, a.steps, a.repeats)
        driver = run(folder, "cpu", a.size, a.steps, a.repeats)
    med = lambda runs, i, k: statistics.median(r[i][k] for r in runs)  # noqa: E731
    ahead = {g: 0.0 for g in (0, 1)}  # encode + decode already run on each GPU's leader role
    rows = []
    for i, (rid, gpus) in enumerate(ROUND):
        before = max(ahead[g] for g in gpus)
        row = dict(task=rid, gpus=list(gpus), planned_start_ms=round(med(driver, i, "start_ms"), 2),
                   start_ms=round(med(leaders, i, "start_ms"), 2),
                   drift_ms=round(med(leaders, i, "start_ms") - med(driver, i, "start_ms"), 2),
                   aux_ahead_ms=round(before, 2), task_aux_ms=round(med(leaders, i, "aux_ms"), 2),
                   task_steps_ms=round(med(driver, i, "step_ms"), 2))
        rows.append(row)
        for g in gpus:  # the set waits for its leader's encode; the leader alone decodes
            ahead[g] = before + row["task_aux_ms"]
        print(json.dumps(row))


if __name__ == "__main__":
    main()
