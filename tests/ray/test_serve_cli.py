"""`tetriopt serve --ray` as a user starts it: Ray started in the process, node actors, SIGTERM.

Three node actors of one CPU each also start on a 2-core machine (the new Ray instance counts
at least one logical CPU per node actor)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tetriopt.server.probe import wait_ready

from .conftest import FAST_PROFILE

pytestmark = pytest.mark.ray


def test_serve_ray_command_serves_and_drains(tmp_path):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "tetriopt.cli", "serve", "--ray", "--nodes", "3", "--gpus", "2",
           "--profile", FAST_PROFILE, "--policy", "greedy", "--port", str(port), "--router", "round-robin"]
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err.log", "w"), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 120, output=lambda: (tmp_path / "err.log").read_text())
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(6):
                r = c.post("/v1/images/generations", json={"prompt": "x", "size": "256x256", "slo_ms": 5000})
                assert r.status_code == 200, r.text
            view = c.get("/v1/cluster").json()
            assert view["router"] == "round-robin" and len(view["nodes"]) == 3
            assert [n["routed"] for n in view["nodes"]] == [2, 2, 2]
            bad = c.post("/v1/images/generations", json={"prompt": "x", "size": "12x12"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_ray_rejects_an_unknown_router():
    r = subprocess.run([sys.executable, "-m", "tetriopt.cli", "serve", "--ray", "--router", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "router" in r.stderr and "nope" in r.stderr
