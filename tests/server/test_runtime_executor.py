"""`--executor cpu`: the real model runtime (runtime/, tiny random-weight FLUX) behind the server."""

from __future__ import annotations

import base64

import httpx
import pytest

from tetriopt.server.executors.png import png_size

pytestmark = pytest.mark.server


def test_cpu_executor_runs_a_request_over_several_rounds(make_server):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    s = make_server(executor="cpu", model="tiny-flux", gpus=2, round_ms=40, policy="greedy")
    with httpx.Client(base_url=s.url, timeout=120) as c:
        r = c.post("/v1/images/generations", json={"prompt": "a cat", "size": "256x256", "n": 2, "steps": 25,
                                                   "slo_ms": 60000})
        assert r.status_code == 200, r.text
        imgs = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
        assert [png_size(i) for i in imgs] == [(256, 256)] * 2
        assert imgs[0] != imgs[1]  # different seeds, real denoising: not a placeholder
        st = c.get("/v1/stats").json()
        assert st["rounds"] >= 2 and st["executor_failures"] == 0
