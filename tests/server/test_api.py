"""The API over real HTTP: OpenAI-compatible success paths, async jobs, SSE, auth, metrics."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tetriopt.server.executors.png import png_size

from serverkit import wait_job

pytestmark = pytest.mark.server


def test_generation_returns_pngs_of_the_requested_size(client):
    r = client.post("/v1/images/generations",
                    json={"prompt": "a red fox", "size": "256x256", "n": 2, "steps": 5, "slo_ms": 3000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2
    for d in body["data"]:
        assert png_size(base64.b64decode(d["b64_json"])) == (256, 256)
    t = body["tetriopt"]
    assert t["steps"] == 5 and t["deadline_met"] is True
    assert 0 < t["latency_ms"] <= 3000
    # the sim sleeps the profile's time: at least 5 steps at the fastest degree (4 ms) plus decode
    assert t["latency_ms"] >= 5 * 4.0 + 1.0


def test_openai_client_unmodified(server):
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    res = c.images.generate(model="fast-dit", prompt="a lighthouse", n=2, size="512x512",
                            response_format="b64_json", extra_body={"steps": 3, "slo_ms": 4000})
    assert len(res.data) == 2
    assert all(png_size(base64.b64decode(d.b64_json)) == (512, 512) for d in res.data)
    with pytest.raises(openai.BadRequestError) as e:
        c.images.generate(prompt="x", size="1000x1000")  # not a multiple of 16
    assert e.value.status_code == 400
    assert "size" in e.value.message and "1000x1000" in e.value.message
    with pytest.raises(openai.NotFoundError):
        c.images.generate(model="dall-e-3", prompt="x")


def test_url_response_format_serves_the_png(client):
    r = client.post("/v1/images/generations", json={"prompt": "p", "size": "256x256", "response_format": "url"})
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    img = httpx.get(url)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert png_size(img.content) == (256, 256)


def test_async_job_with_sse_progress(client):
    r = client.post("/v1/jobs", json={"prompt": "a castle", "size": "1024x1024", "steps": 12, "slo_ms": 5000})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and r.headers["location"] == f"/v1/jobs/{job['id']}"
    events = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "done":
                    break
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    progress = [d["steps_done"] for n, d in events if n == "progress"]
    assert progress == sorted(progress) and len(set(progress)) >= 2  # advanced over several rounds
    final = wait_job(client, job["id"])
    assert final["steps_done"] == final["steps_total"] == 12
    assert png_size(base64.b64decode(final["result"]["data"][0]["b64_json"])) == (1024, 1024)


def test_cancel_a_queued_job(client):
    r = client.post("/v1/jobs", json={"prompt": "slow", "size": "1024x1024", "steps": 200, "slo_ms": 60000})
    assert r.status_code == 202
    jid = r.json()["id"]
    d = client.delete(f"/v1/jobs/{jid}")
    assert d.status_code == 200 and d.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{jid}").json()["status"] == "cancelled"
    assert client.get("/v1/jobs/img-nope").status_code == 404


def test_default_deadline_and_best_effort_admission(make_server):
    s = make_server(admission="best-effort")
    with httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/images/generations", json={"prompt": "p", "size": "512x512", "steps": 4, "slo_ms": 1})
        assert r.status_code == 200, r.text
        t = r.json()["tetriopt"]
        assert t["best_effort"] is True and t["deadline_met"] is False
        r = c.post("/v1/images/generations", json={"prompt": "p", "size": "512x512", "steps": 4})
        assert r.json()["tetriopt"]["best_effort"] is False


def test_api_key(make_server):
    s = make_server(api_key="s3cret")
    with httpx.Client(base_url=s.url, timeout=30) as c:
        body = {"prompt": "p", "size": "256x256", "steps": 2}
        r = c.post("/v1/images/generations", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.post("/v1/images/generations", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = c.post("/v1/images/generations", json=body, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_health_ready_metrics_stats(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/v1/images/generations", json={"prompt": "p", "size": "256x256", "steps": 3, "slo_ms": 2000})
    text = client.get("/metrics").text
    for name in ("tetriopt_requests_total{outcome=\"met\"} 1.0", "tetriopt_slo_attainment{window=\"1m\"} 1.0",
                 "tetriopt_slo_attainment{window=\"all\"} 1.0", "tetriopt_image_slack_seconds_bucket",
                 "tetriopt_goodput_images_per_second{window=\"5m\"}",
                 "tetriopt_queue_length", "tetriopt_round_solve_seconds_count", "tetriopt_gpu_busy_fraction",
                 "tetriopt_fallback_rounds_total", "tetriopt_rollout_rounds_total",
                 "tetriopt_round_overhead_seconds_bucket"):
        assert name in text, name
    st = client.get("/v1/stats").json()
    assert st["images_finished"] == 1 and st["rounds"] >= 1 and st["overhead_ms_p50"] > 0
    assert client.get("/v1/models").json()["data"][0]["id"] == "fast-dit"


def test_grafana_dashboard_queries_existing_metrics(client):
    """docs/grafana-tetriopt.json only queries metrics the server exports (names drift otherwise)."""
    import re
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "docs" / "grafana-tetriopt.json").read_text())
    names = {m for p in doc["panels"] for t in p["targets"] for m in re.findall(r"tetriopt_\w+", t["expr"])}
    client.post("/v1/images/generations", json={"prompt": "p", "size": "256x256", "steps": 2})
    exported = set(re.findall(r"^(tetriopt_\w+)", client.get("/metrics").text, re.M))
    assert len(names) >= 10 and names <= exported, names - exported
