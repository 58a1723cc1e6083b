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


def test_cpu_executor_whole_pipeline_from_a_local_folder(make_server, tmp_path, monkeypatch):
    """Prompt -> PNG through the server with a whole diffusers pipeline (tokenizers, text
    encoders, transformer, VAE) loaded offline from a local folder, as real weights would be."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tetriopt_runtime.tiny_pipeline import write_tiny_pipeline

    monkeypatch.setenv("TETRIOPT_MODEL_PATH", str(write_tiny_pipeline("flux", tmp_path / "flux")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = make_server(executor="cpu", model="flux.1-dev", gpus=2, round_ms=200, policy="greedy")
    with httpx.Client(base_url=s.url, timeout=180) as c:
        r = c.post("/v1/images/generations", json={"prompt": "a red fox", "size": "256x256", "n": 2, "steps": 4,
                                                   "slo_ms": 120000})
        assert r.status_code == 200, r.text
        imgs = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
        assert [png_size(i) for i in imgs] == [(256, 256)] * 2 and imgs[0] != imgs[1]
        assert c.get("/v1/stats").json()["executor_failures"] == 0
