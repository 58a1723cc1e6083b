"""`--executor cpu`: the real model runtime (runtime/, tiny random-weight FLUX) behind the server."""

from __future__ import annotations

import base64

import httpx
import pytest

from tetriopt.cli import main
from tetriopt.server.executors.png import png_size

from serverkit import start_subprocess, wait_job

pytestmark = pytest.mark.server


def test_cpu_executor_runs_a_request_over_several_rounds(make_server):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    s = make_server(executor="cpu", model="tiny-flux", gpus=2, round_ms=40, policy="greedy")
    with httpx.Client(base_url=s.url, timeout=120) as c:
        r = c.post("/v1/images/generations", json={"prompt": "a cat", "size": "256x256", "n": 2, "steps": 25,
                                                   "slo_ms": 60000, "guidance_scale": 4.0,
                                                   "negative_prompt": "blurry"})
        assert r.status_code == 200, r.text
        imgs = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
        assert [png_size(i) for i in imgs] == [(256, 256)] * 2
        assert imgs[0] != imgs[1]  # different seeds, real denoising: not a placeholder
        st = c.get("/v1/stats").json()
        assert st["rounds"] >= 2 and st["executor_failures"] == 0


def test_cpu_executor_whole_pipeline_from_a_local_folder(tmp_path, monkeypatch):
    """Prompt -> PNG through `tetriopt serve --model-path DIR --sp-backend own` with a whole
    diffusers pipeline (tokenizers, text encoders, transformer, VAE) loaded offline from a local
    folder, as real weights would be."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tetriopt_runtime.tiny_pipeline import write_tiny_pipeline

    folder = write_tiny_pipeline("flux", tmp_path / "flux")
    monkeypatch.delenv("TETRIOPT_MODEL_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, url = start_subprocess("--executor", "cpu", "--model", "flux.1-dev", "--model-path", str(folder),
                              "--sp-backend", "own", "--gpus", "2", "--round-ms", "200", "--policy", "greedy",
                              ready_s=180)
    with httpx.Client(base_url=url, timeout=180) as c:
        r = c.post("/v1/images/generations", json={"prompt": "a red fox", "size": "256x256", "n": 2, "steps": 4,
                                                   "slo_ms": 120000})
        assert r.status_code == 200, r.text
        imgs = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
        assert [png_size(i) for i in imgs] == [(256, 256)] * 2 and imgs[0] != imgs[1]
        assert c.get("/v1/stats").json()["executor_failures"] == 0


@pytest.mark.parametrize("args, field", [
    (["--executor", "cpu", "--sp-backend", "nccl"], "--sp-backend"),
    (["--executor", "cpu", "--aux-device", "gpu0"], "aux_device: must be cpu, cuda or cuda:N (got 'gpu0')"),
    (["--executor", "cpu", "--aux-device", "cuda:0"], "aux_device: the cpu executor has no CUDA device"),
    (["--compile"], "compile: applies to --executor cpu or cuda only, not sim"),
    (["--sp-backend", "own"], "sp_backend: applies to --executor cpu or cuda only, not sim"),
])
def test_runtime_flags_bad_values_exit_2(args, field):
    """A bad runtime flag stops `tetriopt serve` before anything loads: one line naming it, exit 2."""
    from click.testing import CliRunner

    r = CliRunner().invoke(main, ["serve", "--store", "", "--port", "0", *args])
    assert r.exit_code == 2 and field in r.output, r.output


def test_admission_takes_the_head_count_from_the_loaded_weights(make_server, tmp_path, monkeypatch):
    """The served name says FLUX (24 heads: every power-of-two degree would split) while the weights
    at --model-path have 1 head. Admission asks the executor (the runtime's loaded transformer),
    not the name: a request the runtime could not split over one of the server's degrees is refused
    up front (400 naming the reason), nothing reaches the runtime to fail there. (A refused
    assignment failing its request alone at the runtime: tests/runtime/test_runtime_faults.py.)"""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tetriopt_runtime.tiny_pipeline import write_tiny_pipeline

    folder = write_tiny_pipeline("flux", tmp_path / "flux1", heads=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = make_server(executor="cpu", model="flux.1-dev", model_path=str(folder), sp_backend="own", gpus=2,
                    round_ms=200, policy="greedy")
    with httpx.Client(base_url=s.url, timeout=180) as c:
        bad = c.post("/v1/images/generations", json={"prompt": "a red fox", "steps": 3, "slo_ms": 120000,
                                                     "size": "512x512"})
        assert bad.status_code == 400, bad.text
        err = bad.json()["error"]
        assert err["param"] == "size" and "1 attention heads do not split over 2 ranks" in err["message"], err
        st = c.get("/v1/stats").json()
        assert st["executor_failures"] == 0, st
