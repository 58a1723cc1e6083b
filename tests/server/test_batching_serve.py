"""The server with batching and immediate starts (issue 13): the real HTTP server on loopback, the
sim executor, a profile whose small images batch for free. Every image comes back; the executed
plans show batches and mid-round starts."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from serverkit import FAST_PROFILE  # noqa: E402


@pytest.fixture
def batch_profile(tmp_path) -> str:
    data = json.loads(Path(FAST_PROFILE).read_text())
    for p in data["points"]:  # launch-bound small sizes: a batch costs one step plus 10% per member
        p["batches"] = {str(b): {"step_ms": {k: round(v * (1 + 0.1 * (b - 1)), 3) for k, v in p["step_ms"].items()}}
                        for b in (2, 3, 4)}
    f = tmp_path / "batch-profile.json"
    f.write_text(json.dumps(data))
    return str(f)


def test_batched_and_immediate_assignments_serve_every_image(make_server, batch_profile):
    # greedy's batching rule decides without a wall-clock limit (cpsat's batches: tests/test_batching.py)
    s = make_server(profile=batch_profile, gpus=1, batching=True, immediate_start=True, round_ms=200,
                    policy="greedy")
    executed = []
    ex = s.service.scheduler.executor
    run = ex.execute

    def spy(plan, work, k, on_complete):  # observe what the real sim executor runs
        executed.extend(plan.assignments)
        return run(plan, work, k, on_complete)

    ex.execute = spy
    with httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/images/generations",
                   json={"prompt": "four foxes", "size": "256x256", "n": 4, "steps": 40, "slo_ms": 20000})
        assert r.status_code == 200, r.text
        body = r.json()
    assert len(body["data"]) == 4 and all(base64.b64decode(d["b64_json"])[:8] == b"\x89PNG\r\n\x1a\n"
                                          for d in body["data"])
    assert body["tetriopt"]["deadline_met"] is True
    assert any(a.batch for a in executed), executed
    assert any(a.immediate for a in executed), executed
    # every request got exactly its steps, counting batch members
    done: dict[str, int] = {}
    for a in executed:
        for i in a.requests:
            done[i] = done.get(i, 0) + a.steps
    assert sorted(done.values()) == [40, 40, 40, 40]


def test_cpu_executor_runs_two_same_size_requests_as_one_batch(make_server, batch_profile):
    """`--executor cpu --batching`: the real runtime (tiny FLUX, gloo worker processes) runs the
    two images of one request as one batch (the runtime's own task reports say so), and each
    served image's final latent equals an unbatched run of it within 1e-5 (fp32)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from tetriopt_runtime import GenRequest

    s = make_server(executor="cpu", model="tiny-flux", profile=batch_profile, gpus=2, round_ms=200,
                    policy="greedy", batching=True)
    with httpx.Client(base_url=s.url, timeout=120) as c:
        r = c.post("/v1/images/generations", json={"prompt": "two foxes", "size": "256x256", "n": 2, "steps": 6,
                                                   "seed": 11, "slo_ms": 60000})
        assert r.status_code == 200, r.text
        assert c.get("/v1/stats").json()["executor_failures"] == 0
    ex = s.service.scheduler.executor
    batched = [rep for rep in ex.reports if len(rep["batch"]) == 2]
    assert batched and {rep["seed"] for rep in batched} == {11, 12}, ex.reports
    assert sum(rep["steps"] for rep in ex.reports) == 12  # every step of both, each counted once per member
    rt = ex._impl  # the runtime behind the executor: an unbatched run of the same two images on it
    rid = {rep["seed"]: rep["request"] for rep in ex.reports}
    ref = rt.runtime.generate([GenRequest(f"ref{seed}", "two foxes", 256, 256, 6, seed) for seed in (11, 12)],
                              [[("ref11", (0,), 6), ("ref12", (1,), 6)]], decode=False)
    for seed in (11, 12):
        assert (ref.latents[f"ref{seed}"] - rt.last_latents[rid[seed]]).abs().max().item() <= 1e-5
