"""SIGTERM on a `tetriopt serve` process: 503 for new work, every accepted job finishes, clean exit."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest

from serverkit import poll, start_subprocess, wait_job

pytestmark = pytest.mark.server


def test_sigterm_drains_accepted_work(tmp_path):
    proc, url = start_subprocess("--gpus", "4", "--policy", "cpsat", "--default-steps", "4")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            body = {"prompt": "p", "size": "1024x1024", "steps": 40, "slo_ms": 30000}
            ids = [c.post("/v1/jobs", json=body).json()["id"] for _ in range(5)]
            sync: dict = {}
            t = threading.Thread(target=lambda: sync.update(r=c.post("/v1/images/generations", json=body)))
            t.start()
            # the sync request is accepted once 6 images are queued or done
            poll(lambda: sum(c.get("/v1/stats").json()[k] for k in ("queue_length", "images_finished")) == 6)
            proc.send_signal(signal.SIGTERM)
            poll(lambda: c.get("/readyz").status_code == 503)
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
            assert c.get("/readyz").status_code == 503
            results = [wait_job(c, j) for j in ids]
            assert [x["status"] for x in results] == ["succeeded"] * 5
            t.join(30)
            assert sync["r"].status_code == 200
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    msgs = [x["msg"] for x in logs]
    assert "draining" in msgs and "drained" in msgs
    assert next(x for x in logs if x["msg"] == "drained")["unfinished_jobs"] == 0
