"""Refusals: bad input (400 naming the field), overload (429), and that neither loses accepted work."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from serverkit import wait_job

pytestmark = pytest.mark.server

GOOD = {"prompt": "a boat", "size": "512x512", "steps": 4}

BAD = [
    ({"size": "512x512"}, 400, "prompt", "missing"),
    ({**GOOD, "prompt": ""}, 400, "prompt", "non-empty"),
    ({**GOOD, "prompt": 7}, 400, "prompt", "7"),
    ({**GOOD, "n": 0}, 400, "n", "between 1 and 10"),
    ({**GOOD, "n": 11}, 400, "n", "11"),
    ({**GOOD, "n": "two"}, 400, "n", "'two'"),
    ({**GOOD, "size": "big"}, 400, "size", "'big'"),
    ({**GOOD, "size": "1000x1000"}, 400, "size", "multiples of 16"),
    ({**GOOD, "size": "4096x4096"}, 400, "size", "outside the resolutions"),
    ({**GOOD, "steps": 0}, 400, "steps", "between 1 and 1000"),
    ({**GOOD, "steps": 2.5}, 400, "steps", "integer"),
    ({**GOOD, "slo_ms": -5}, 400, "slo_ms", "positive"),
    ({**GOOD, "slo_ms": "soon"}, 400, "slo_ms", "'soon'"),
    ({**GOOD, "slo_ms": 100, "deadline_ms": 1e13}, 400, "deadline_ms", "not both"),
    ({**GOOD, "slo_ms": 5}, 400, "slo_ms", "cannot be met"),
    ({**GOOD, "deadline_ms": 1000}, 400, "deadline_ms", "cannot be met"),  # 1970
    ({**GOOD, "response_format": "jpeg"}, 400, "response_format", "'jpeg'"),
    ({**GOOD, "output_format": "gif"}, 400, "output_format", "'gif'"),
    ({**GOOD, "output_compression": 50}, 400, "output_compression", "jpeg"),
    # strict types: no coercion, and only null means "default"
    ({**GOOD, "n": 2.0}, 400, "n", "integer"),
    ({**GOOD, "n": True}, 400, "n", "integer"),
    ({**GOOD, "size": 0}, 400, "size", "string"),
    ({**GOOD, "response_format": 0}, 400, "response_format", "string"),
    ({**GOOD, "quality": "ultra"}, 400, "quality", "'ultra'"),
    ({**GOOD, "user": 5}, 400, "user", "string"),
    ({**GOOD, "steps": 3, "num_inference_steps": 5}, 400, "num_inference_steps", "differs"),
    ({**GOOD, "guidance_scale": "high"}, 400, "guidance_scale", "finite"),
    # finite numbers within range: 1e308 used to overflow into a 500
    ({**GOOD, "slo_ms": 1e308}, 400, "slo_ms", "between"),
    ({**GOOD, "deadline_ms": 1e308}, 400, "deadline_ms", "between"),
    ({**GOOD, "deadline_ms": 9e13}, 400, "deadline_ms", "days ahead"),
    # sizes the runtime cannot split: 272x272 is 17 x 17 = 289 tokens, odd, over degrees 1, 2, 4
    ({**GOOD, "size": "272x272"}, 400, "size", "289 image tokens do not split over 2 ranks"),
    # work per request: 10 x 1000 steps of 1024x1024 at 24 GPU-ms = 240 GPU-s, over the 20 GPU-s limit below
    ({**GOOD, "size": "1024x1024", "n": 10, "steps": 1000}, 400, "steps", "GPU-s of work"),
    ({**GOOD, "stream": True}, 400, "stream", "/v1/jobs"),
    ({**GOOD, "colour": "red"}, 400, "colour", "Unrecognized"),
    ({**GOOD, "model": "dall-e-3"}, 404, "model", "does not exist"),
]


@pytest.fixture(scope="module")
def shared():
    """One server for the table (a server per row would cost a start-up each)."""
    from dataclasses import replace

    from serverkit import BASE, ServerThread

    with ServerThread(replace(BASE, max_request_gpu_s=20)) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("body,status,param,text", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_is_named(shared, body, status, param, text):
    client = shared
    r = client.post("/v1/images/generations", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert text in err["message"], err["message"]
    assert err["message"].startswith(param + ":"), err["message"]


def test_malformed_and_oversized_bodies(make_server):
    s = make_server(max_body_bytes=2048)
    with httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/images/generations", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = c.post("/v1/images/generations", json=[1, 2])
        assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
        r = c.post("/v1/images/generations", json={**GOOD, "prompt": "x" * 5000})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = c.get("/v1/nothing")
        assert r.status_code == 404 and "error" in r.json()


def test_bad_requests_do_not_disturb_accepted_ones(shared):
    client = shared
    ids = [client.post("/v1/jobs", json={**GOOD, "size": "1024x1024", "steps": 10, "slo_ms": 10000}).json()["id"]
           for _ in range(4)]
    for body, status, _, _ in BAD:
        assert client.post("/v1/images/generations", json=body).status_code == status
    assert [wait_job(client, j)["status"] for j in ids] == ["succeeded"] * 4
    st = client.get("/v1/stats").json()
    assert st["queue_length"] == 0


def test_overload_gets_429_and_loses_nothing(make_server):
    s = make_server(max_queue=3)
    body = {"prompt": "p", "size": "1024x1024", "steps": 60, "slo_ms": 20000}
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
    with httpx.Client(base_url=s.url, timeout=30) as c:
        with cf.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: c.post("/v1/jobs", json=body), range(12)))
        with pytest.raises(openai.RateLimitError):
            oc.images.generate(prompt="p", size="256x256", extra_body={"steps": 2})
        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        refused = [r for r in answers if r.status_code == 429]
        assert len(accepted) == 3 and len(refused) == 9, [r.status_code for r in answers]
        for r in refused:
            assert r.json()["error"]["code"] == "queue_full" and int(r.headers["retry-after"]) >= 1
        assert [wait_job(c, j)["status"] for j in accepted] == ["succeeded"] * 3
        # room again once they are done
        assert c.post("/v1/images/generations", json={**body, "steps": 2}).status_code == 200
        assert c.get("/v1/stats").json()["requests"]["rejected_overload"] == 10


def test_hostile_bodies_and_headers(shared):
    """Deep nesting, wrong media type and a forged Host header: 4xx in the error shape, or ignored."""
    c = shared
    deep = b"[" * 100_000 + b"]" * 100_000
    r = c.post("/v1/images/generations", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nests" in r.json()["error"]["message"]
    deep_obj = b'{"prompt": "p", "x": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"
    r = c.post("/v1/images/generations", content=deep_obj, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    # brackets inside strings do not count
    r = c.post("/v1/images/generations", json={**GOOD, "prompt": "[" * 100})
    assert r.status_code == 200, r.text
    r = c.post("/v1/images/generations", content=b'{"prompt": "p"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = c.post("/v1/images/generations", json={**GOOD, "response_format": "url"},
               headers={"host": "evil.example.com"})
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    assert url.startswith(str(c.base_url).rstrip("/") + "/v1/jobs/") and "evil" not in url
    assert httpx.get(url).status_code == 200
    # the connection stays usable after each refusal (keep-alive not dropped by a 500)
    assert c.get("/healthz").status_code == 200


def test_public_url_for_url_results(make_server):
    s = make_server(public_url="https://images.example.com/base/")
    with httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/images/generations", json={**GOOD, "response_format": "url", "output_format": "jpeg"},
                   headers={"host": "evil.example.com"})
        assert r.status_code == 200, r.text
        url = r.json()["data"][0]["url"]
        assert url.startswith("https://images.example.com/base/v1/jobs/") and url.endswith("/images/0.jpeg")
        img = c.get(url.removeprefix("https://images.example.com/base"))
        assert img.headers["content-type"] == "image/jpeg" and img.content[:3] == b"\xff\xd8\xff"
