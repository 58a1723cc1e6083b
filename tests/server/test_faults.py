"""Executor failures: a round that crashes half-way gives its unfinished steps back; all finish."""

from __future__ import annotations

import httpx
import pytest

from serverkit import wait_job

pytestmark = pytest.mark.server


def test_crashed_rounds_are_requeued_and_finish(make_server):
    s = make_server(sim_fail_rounds=frozenset({2, 3, 6}))
    with httpx.Client(base_url=s.url, timeout=30) as c:
        ids = [c.post("/v1/jobs", json={"prompt": f"p{i}", "size": "1024x1024", "steps": 16, "n": 2,
                                        "slo_ms": 20000}).json()["id"] for i in range(3)]
        done = [wait_job(c, j) for j in ids]
        assert [d["status"] for d in done] == ["succeeded"] * 3
        assert all(d["steps_done"] == d["steps_total"] == 32 for d in done)
        st = c.get("/v1/stats").json()
        assert st["executor_failures"] == 3
        assert st["requeued_steps"] > 0
        assert st["images_finished"] == 6 and st["queue_length"] == 0
        assert "tetriopt_executor_failures_total 3.0" in c.get("/metrics").text


def test_crash_under_the_sync_api(make_server):
    s = make_server(sim_fail_rounds=frozenset({1}))
    with httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/images/generations", json={"prompt": "p", "size": "512x512", "steps": 20, "slo_ms": 20000})
        assert r.status_code == 200, r.text
        assert c.get("/v1/stats").json()["executor_failures"] == 1
