"""Cancellation: a sync client that goes away frees its GPUs; DELETE; Idempotency-Key retries."""

from __future__ import annotations

import httpx
import pytest

from serverkit import poll, wait_job

pytestmark = pytest.mark.server

LONG = {"prompt": "p", "size": "1024x1024", "steps": 400, "slo_ms": 60000}  # >= 400 x 8 ms = 3.2 s


def test_sync_client_disconnect_cancels_the_job(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/images/generations", json=LONG, timeout=0.5)
        st = poll(lambda: (st := c.get("/v1/stats").json())["requests"]["cancelled"] == 1 and st)
        assert st["queue_length"] == 0
        (job,) = server.service.store.jobs.values()
        assert job.status == "cancelled" and job.error == "client disconnected"
        assert job.steps_done < 400
        # its GPUs are free from the next round on: later rounds plan other work, never its image
        seen = server.service.clock.now_us()
        other = c.post("/v1/jobs", json={**LONG, "steps": 60}).json()["id"]
        wait_job(c, other)
        rounds = c.get("/v1/schedule").json()["rounds"]
        later = [r for r in rounds if r["start_us"] > seen + server.service.timing.round_us]
        assert later and all(a["job"] == other for r in later for a in r["assignments"])


def test_delete_a_running_job_frees_the_queue(client):
    jid = client.post("/v1/jobs", json=LONG).json()["id"]
    poll(lambda: client.get(f"/v1/jobs/{jid}").json()["steps_done"] > 0)
    d = client.delete(f"/v1/jobs/{jid}")
    assert d.status_code == 200 and d.json()["status"] == "cancelled"
    assert client.get("/v1/stats").json()["queue_length"] == 0
    assert client.delete(f"/v1/jobs/{jid}").json()["status"] == "cancelled"  # idempotent
    assert client.delete("/v1/jobs/img-nope").status_code == 404


def test_idempotency_key_async(client):
    h = {"Idempotency-Key": "order-42"}
    body = {**LONG, "steps": 10}
    a = client.post("/v1/jobs", json=body, headers=h)
    b = client.post("/v1/jobs", json=body, headers=h)
    assert a.status_code == b.status_code == 202 and a.json()["id"] == b.json()["id"]
    other = client.post("/v1/jobs", json={**body, "steps": 11}, headers=h)   # same key, other body: a new job
    assert other.json()["id"] != a.json()["id"]
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "x" * 300}).status_code == 400
    assert wait_job(client, a.json()["id"])["status"] == "succeeded"


def test_openai_client_retries_do_not_duplicate_work(server):
    """The stock client times out and retries twice; with an Idempotency-Key each retry re-attaches."""
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=0.4, max_retries=2)
    try:
        oc.images.generate(prompt="p", size="1024x1024", extra_body={"steps": 150, "slo_ms": 60000},
                           extra_headers={"Idempotency-Key": "retry-me"})
    except openai.APITimeoutError:
        pass  # all three attempts timed out: the job still runs (the grace period covers the retries)
    (job,) = server.service.store.jobs.values()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert wait_job(c, job.id)["status"] == "succeeded"
