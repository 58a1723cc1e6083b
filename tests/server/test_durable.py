"""Durable async jobs: kill -9 and restart (each job finishes exactly once); SIGTERM with unfetched
results exits at once and the next start serves them."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from serverkit import free_port, poll, start_subprocess, wait_job

pytestmark = pytest.mark.server


def _finished_logs(proc) -> list[str]:
    out = proc.stderr.read()
    return [x["job"] for x in (json.loads(line) for line in out.splitlines() if line.startswith("{"))
            if x.get("msg") == "finished"]


def test_kill9_then_restart_finishes_every_job_exactly_once(tmp_path):
    store = str(tmp_path / "jobs.sqlite3")
    port = free_port()
    args = ("--gpus", "4", "--store", store, "--default-steps", "4")
    proc, url = start_subprocess(*args, port=port)
    body = {"prompt": "p", "size": "1024x1024", "steps": 30, "slo_ms": 60000}
    with httpx.Client(base_url=url, timeout=30) as c:
        ids = [c.post("/v1/jobs", json={**body, "prompt": f"p{i}"}).json()["id"] for i in range(24)]
        poll(lambda: c.get("/v1/stats").json()["images_finished"] >= 4)
        before = {j: c.get(f"/v1/jobs/{j}").json() for j in ids}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    first_run = _finished_logs(proc)
    done_before = {j for j, b in before.items() if b["status"] == "succeeded"}
    assert done_before and len(done_before) < len(ids)
    proc, url = start_subprocess(*args, port=port)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            after = {j: wait_job(c, j, timeout=60) for j in ids}
            assert {a["status"] for a in after.values()} == {"succeeded"}
            for j in done_before:  # served from the store, the same image, not re-run
                assert after[j]["result"]["data"] == before[j]["result"]["data"]
                assert after[j]["result"]["tetriopt"]["latency_ms"] == before[j]["result"]["tetriopt"]["latency_ms"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    second_run = _finished_logs(proc)
    # exactly once: every job finished in one of the two runs, none in both, none twice
    assert sorted(first_run + second_run) == sorted(ids)
    assert set(first_run) >= done_before


def test_sigterm_with_unfetched_results_exits_and_keeps_them(tmp_path):
    store = str(tmp_path / "jobs.sqlite3")
    port = free_port()
    args = ("--gpus", "4", "--store", store, "--drain-timeout-s", "120")
    proc, url = start_subprocess(*args, port=port)
    with httpx.Client(base_url=url, timeout=30) as c:
        ids = [c.post("/v1/jobs", json={"prompt": "p", "size": "256x256", "steps": 2, "slo_ms": 30000}).json()["id"]
               for _ in range(20)]
        poll(lambda: c.get("/v1/stats").json()["images_finished"] == 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0  # did not wait (up to 120 s) for the 20 results to be fetched
    logs = [json.loads(x) for x in proc.stderr.read().splitlines() if x.startswith("{")]
    drained = next(x for x in logs if x["msg"] == "drained")
    assert drained["unfinished_jobs"] == 0 and drained["undelivered_jobs"] == 20
    proc, url = start_subprocess(*args, port=port)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert all(c.get(f"/v1/jobs/{j}").json()["status"] == "succeeded" for j in ids)
    finally:
        proc.kill()
