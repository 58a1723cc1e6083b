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
    ({**GOOD, "output_format": "webp"}, 400, "output_format", "'webp'"),
    ({**GOOD, "stream": True}, 400, "stream", "/v1/jobs"),
    ({**GOOD, "colour": "red"}, 400, "colour", "Unrecognized"),
    ({**GOOD, "model": "dall-e-3"}, 404, "model", "does not exist"),
]


@pytest.mark.parametrize("body,status,param,text", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_is_named(client, body, status, param, text):
    r = client.post("/v1/images/generations", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert text in err["message"] and err["message"].startswith(param) or param == "model" or "Unrecognized" in text


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


def test_bad_requests_do_not_disturb_accepted_ones(client):
    ids = [client.post("/v1/jobs", json={**GOOD, "size": "1024x1024", "steps": 10, "slo_ms": 10000}).json()["id"]
           for _ in range(4)]
    for body, status, _, _ in BAD:
        assert client.post("/v1/images/generations", json=body).status_code == status
    assert [wait_job(client, j)["status"] for j in ids] == ["succeeded"] * 4
    st = client.get("/v1/stats").json()
    assert st["queue_length"] == 0 and st["images_finished"] == 4


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
