"""Fixtures: a real server per test (uvicorn on a loopback thread), stopped afterwards."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import serverkit  # noqa: E402
from serverkit import BASE, ServerThread  # noqa: E402


@pytest.fixture(autouse=True)
def _no_leftover_servers():
    """A test that fails half-way must not leave its `tetriopt serve` children running."""
    yield
    while serverkit.STARTED:
        proc = serverkit.STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def make_server():
    """A factory: make_server(**overrides) -> running ServerThread (stopped after the test)."""
    started: list[ServerThread] = []

    def make(**overrides) -> ServerThread:
        s = ServerThread(replace(BASE, **overrides)).__enter__()
        started.append(s)
        return s

    yield make
    for s in started:
        s.__exit__(None, None, None)


@pytest.fixture
def server(make_server) -> ServerThread:
    return make_server()


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


