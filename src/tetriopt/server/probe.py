"""Starting a `tetriopt serve` child from tests, benchmarks and tools: a free port, and the one
readiness loop."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Callable

import httpx


def free_port() -> int:
    """A loopback port free now (the child binds it a moment later; fine on a test machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, output: Callable[[], str] = lambda: "",
               every_s: float = 0.05) -> float:
    """Poll GET {url}/readyz until it answers 200; returns the seconds waited.

    Raises RuntimeError with the tail of `output()` (the child's log) if the child exits first,
    and kills it and raises if it is not ready within timeout_s.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {output()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        time.sleep(every_s)
    proc.kill()
    raise RuntimeError(f"server not ready after {timeout_s:g} s: {output()[-3000:]}")
