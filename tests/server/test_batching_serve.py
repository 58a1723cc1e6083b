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
