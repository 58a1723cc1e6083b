"""Helpers for server tests: a real server on loopback, on a thread or as a `tetriopt serve` child."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tetriopt.server.config import ServerConfig
from tetriopt.server.probe import free_port, wait_ready
from tetriopt.server.run import build_server

FAST_PROFILE = str(Path(__file__).with_name("fast-profile.json"))
BASE = ServerConfig(gpus=4, profile=FAST_PROFILE, port=0, policy="cpsat", default_steps=4,
                    default_size="512x512", job_ttl_s=60, drain_timeout_s=30)


class ServerThread:
    """uvicorn running the app on a background thread; `url` once it listens."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.server = build_server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > 20:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def service(self):
        return self.server.config.app.state.service

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


STARTED: list[subprocess.Popen] = []  # children of start_subprocess; conftest kills leftovers after each test


def start_subprocess(*args: str, port: int | None = None, ready_s: float = 30) -> tuple[subprocess.Popen, str]:
    """`tetriopt serve ARGS` in a child process; returns it and its base URL once /readyz says ready.

    Without `--store` in ARGS the job store is in memory (the default file would land in the cwd).
    """
    port = port or free_port()
    store = () if "--store" in args else ("--store", "")
    cmd = [sys.executable, "-c", "from tetriopt.cli import main; main()", "serve", "--port", str(port),
           "--profile", FAST_PROFILE, *store, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    STARTED.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, ready_s, lambda: proc.stderr.read() if proc.poll() is not None else "")
    return proc, url


def poll(check, timeout: float = 30, every: float = 0.02):
    """Call check() until it returns something truthy (returned), or fail after `timeout` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"condition not met after {timeout}s: {check}")


def wait_job(c: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        body = c.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.03)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {body}")
